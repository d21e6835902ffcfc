"""load-postgres at real scale, against the floor and the alternatives, measured in one run.

    python3 dev.py bench                       # a yellow month at real scale (7.7 M rows)
    python3 dev.py bench --rows 1000000 --repeat 1 --skip-pandas   # a quick look

(f) `zcat file | psql -c "\\copy ..."` into a plain logged typed table with no extra columns:
    the floor a shell sets (inflating in a process of its own);
(f2) two such sessions at once, one per half of the month (two .csv.gz files cut from it), each
    into a logged table of its own: the floor on two cores, which the load (two COPY sessions,
    one per half of the month's ids) is measured against;
(a) bare COPY of the same CSV (decompressed beforehand) into that table: the floor Postgres
    itself sets;
(b) `load_postgres` end to end from a verified download (as extract leaves it: the .csv.gz, its
    record and its row ids, computed once by extract), row ids included, into the real table;
(b0) the same from a bare .csv.gz, hashing every line itself (what every load did before);
(c) the reference Kestra flow's SQL: gunzip, COPY into staging, ALTER + UPDATE md5, MERGE;
(d) the course's ingest script: pandas read_csv(chunksize=100000) + to_sql.
Each runs in a fresh process (so its peak RSS is its own) after a CHECKPOINT on an empty
database (so none pays for another's dirty pages). (f), (a) and (b) alternate `--repeat` times;
medians are compared. The download is made by extract from a local release server, untimed,
once; its verification (gzip check, header, row ids) is timed beside, since a load relies on it. Postgres: TAXI_BENCH_POSTGRES_DSN (an admin DSN), else the embedded one
(no server is assumed to run on the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from taxi_assets.datasets import YELLOW  # noqa: E402
from taxi_assets.months import Month  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
MONTH = Month(2019, 1)
REAL_ROWS = 7_700_000  # yellow 2019-01 has 7,667,792


def _sample(rows: int) -> Path:
    """The generated month, cached: generating 7.7 M rows takes a few minutes."""
    from taxi_assets.samples.mirror_data import write_month

    path = CACHE / str(rows) / YELLOW.file_name(MONTH)
    if not path.exists():
        print(f"generating {rows:,} yellow rows into {path} (once) ...", flush=True)
        tmp = path.with_suffix(".tmp")
        write_month(tmp, YELLOW, MONTH, rows, crlf=True)
        tmp.rename(path)
    return path


def _plain_csv(gz: Path) -> Path:
    csv = gz.with_suffix("")  # .csv
    if not csv.exists():
        with gzip.open(gz, "rb") as src, open(csv.with_suffix(".tmp"), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        csv.with_suffix(".tmp").rename(csv)
    return csv


def _typed_columns() -> str:
    return ", ".join(f"{c.sql_name} {c.pg_type}" for c in YELLOW.columns)


# --- the four contenders; each runs in its own process (see `worker`) ---------------------


def run_a(dsn: str, gz: Path) -> int:
    csv = _plain_csv(gz)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE bare_copy ({_typed_columns()})")
        conn.commit()
        started = time.monotonic()
        with conn.cursor().copy("COPY bare_copy FROM STDIN (FORMAT csv, HEADER true)") as copy, open(csv, "rb") as f:
            while chunk := f.read(1 << 20):
                copy.write(chunk)
        conn.commit()
        _report(started)
        return conn.execute("SELECT count(*) FROM bare_copy").fetchone()[0]


def run_f(dsn: str, gz: Path) -> int:
    """The floor as a shell would set it: `zcat file | psql -c "\\copy ..."` (inflate in its own process)."""

    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE bare_copy ({_typed_columns()})")
        conn.commit()
    started = time.monotonic()
    zcat_into_psql(dsn, gz, "\\copy bare_copy FROM STDIN (FORMAT csv, HEADER true)")
    _report(started)
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM bare_copy").fetchone()[0]


def _halves_of(gz: Path) -> list[Path]:
    """The month's data lines in two .csv.gz files (first half, second half; each with the
    header), cached beside it: what (f2)'s two sessions read."""
    halves = [gz.with_name(f"half-{i}.csv.gz") for i in (0, 1)]
    if all(h.exists() and h.stat().st_mtime >= gz.stat().st_mtime for h in halves):
        return halves
    rows = _rows_in(gz)
    print(f"splitting {gz.name} into two halves for (f2) (once) ...", flush=True)
    with gzip.open(gz, "rb") as src:
        header = src.readline()
        for i, half in enumerate(halves):
            tmp = half.with_suffix(".tmp")
            with gzip.open(tmp, "wb", compresslevel=6) as dst:
                dst.write(header)
                for _ in range(rows // 2 if i == 0 else rows):
                    if not (line := src.readline()):
                        break
                    dst.write(line)
            tmp.rename(half)
    return halves


def run_f2(dsn: str, gz: Path) -> int:
    """The two-core floor: two concurrent `zcat half | psql \\copy` sessions, one per half of the
    month, each into a logged table of its own (what a load splitting the month in two can reach)."""
    from taxi_assets.psql import psql_invocation

    halves = _halves_of(gz)
    with psycopg.connect(dsn) as conn:
        for i in range(len(halves)):
            conn.execute(f"CREATE TABLE bare_copy_{i} ({_typed_columns()})")
        conn.commit()
    started = time.monotonic()
    pipelines = []
    for i, half in enumerate(halves):
        copy = f"\\copy bare_copy_{i} FROM STDIN (FORMAT csv, HEADER true)"
        command, env = psql_invocation(dsn, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", copy])
        zcat = subprocess.Popen(["zcat", str(half)], stdout=subprocess.PIPE)
        pipelines.append((zcat, subprocess.Popen(command, env=env, stdin=zcat.stdout)))
        zcat.stdout.close()
    if any(psql.wait() or zcat.wait() for zcat, psql in pipelines):
        raise SystemExit("a (f2) session failed")
    _report(started)
    with psycopg.connect(dsn) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM bare_copy_{i}").fetchone()[0] for i in range(len(halves)))


def zcat_into_psql(dsn: str, gz: Path, copy: str) -> None:
    """`zcat gz | psql -c copy`: the floor every load is measured against (no Python in the path)."""
    from taxi_assets.psql import psql_invocation

    command, env = psql_invocation(dsn, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", copy])
    zcat = subprocess.Popen(["zcat", str(gz)], stdout=subprocess.PIPE)
    subprocess.run(command, env=env, stdin=zcat.stdout, check=True)
    zcat.stdout.close()
    if zcat.wait():
        raise SystemExit("zcat failed")


def run_b(dsn: str, gz: Path) -> int:
    from taxi_assets.steps.postgres import load_postgres

    with psycopg.connect(dsn) as conn:
        started = time.monotonic()
        report = load_postgres(conn, YELLOW, MONTH, gz)
        _report(started)
        return report.rows_loaded


def _reference_md5() -> str:
    parts = [
        "CAST(vendorid AS text)",
        "CAST(tpep_pickup_datetime AS text)",
        "CAST(tpep_dropoff_datetime AS text)",
        "pulocationid",
        "dolocationid",
        "CAST(fare_amount AS text)",
        "CAST(trip_distance AS text)",
    ]
    return "md5(" + " || ".join(f"COALESCE({p}, '')" for p in parts) + ")"


def run_c(dsn: str, gz: Path) -> int:
    """The reference flow's steps, as its YAML runs them (../shared/reference/kestra.md)."""
    names = ", ".join(YELLOW.sql_names)
    started = time.monotonic()
    csv = gz.with_name("reference.csv")
    with open(csv, "wb") as out:
        subprocess.run(["gzip", "-dc", str(gz)], stdout=out, check=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS ref_final (unique_row_id text, filename text, {_typed_columns()})")
        conn.execute(f"CREATE TABLE IF NOT EXISTS ref_staging ({_typed_columns()})")
        conn.execute("TRUNCATE ref_staging")
        with (
            conn.cursor().copy(f"COPY ref_staging ({names}) FROM STDIN (FORMAT csv, HEADER true)") as copy,
            open(csv, "rb") as f,
        ):
            while chunk := f.read(1 << 20):
                copy.write(chunk)
        conn.execute(
            "ALTER TABLE ref_staging ADD COLUMN IF NOT EXISTS unique_row_id text, ADD COLUMN IF NOT EXISTS filename text"
        )
        conn.execute(
            f"UPDATE ref_staging SET unique_row_id = {_reference_md5()}, filename = %s", (YELLOW.file_name(MONTH),)
        )
        conn.execute(
            f"MERGE INTO ref_final AS t USING ref_staging AS s ON t.unique_row_id = s.unique_row_id"
            f" WHEN NOT MATCHED THEN INSERT (unique_row_id, filename, {names})"
            f" VALUES (s.unique_row_id, s.filename, {', '.join('s.' + n for n in YELLOW.sql_names)})"
        )
        rows = conn.execute("SELECT count(*) FROM ref_final").fetchone()[0]
    csv.unlink()
    _report(started)
    return rows


def run_d(dsn: str, gz: Path) -> int:
    """The course's ingest_data.py: pandas chunks into to_sql (SQLAlchemy + psycopg2)."""
    import pandas as pd
    from sqlalchemy import create_engine

    info = psycopg.conninfo.conninfo_to_dict(dsn)
    url = f"postgresql+psycopg2://{info.get('user', 'postgres')}:{info.get('password', '')}@/{info['dbname']}"
    engine = create_engine(url, connect_args={"host": info.get("host", "127.0.0.1"), "port": info.get("port", 5432)})
    started = time.monotonic()
    rows = 0
    for chunk in pd.read_csv(gz, chunksize=100_000):
        chunk.tpep_pickup_datetime = pd.to_datetime(chunk.tpep_pickup_datetime)
        chunk.tpep_dropoff_datetime = pd.to_datetime(chunk.tpep_dropoff_datetime)
        chunk.to_sql(name="pandas_ingest", con=engine, if_exists="append")
        rows += len(chunk)
    _report(started)
    return rows


RUNNERS = {"f": run_f, "f2": run_f2, "a": run_a, "b": run_b, "b0": run_b, "c": run_c, "d": run_d}
LABELS = {
    "f": "(f) zcat file | psql \\copy (floor)",
    "f2": "(f2) two sessions, zcat half | psql \\copy (floor)",
    "a": "(a) bare COPY of the CSV (floor)",
    "b": "(b) taxi_assets load-postgres",
    "b0": "(b0) load-postgres hashing every line itself",
    "c": "(c) reference flow SQL (staging, UPDATE md5, MERGE)",
    "d": "(d) pandas read_csv + to_sql",
}
_RESULT: dict = {}


def _report(started: float) -> None:
    _RESULT["seconds"] = time.monotonic() - started


def worker(which: str, dsn: str, gz: Path) -> None:
    rows = RUNNERS[which](dsn, gz)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"which": which, "rows": rows, "seconds": _RESULT["seconds"], "peak_rss_mb": peak_mb}))


def _clean_slate(dsn: str) -> None:
    """Same start for every contender: no table from an earlier run, no dirty pages to flush."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in (
            "bare_copy",
            "bare_copy_0",
            "bare_copy_1",
            YELLOW.table,
            "ref_final",
            "ref_staging",
            "pandas_ingest",
        ):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


def measure(which: str, dsn: str, gz: Path) -> dict:
    _clean_slate(dsn)
    out = subprocess.run(
        [sys.executable, __file__, "--worker", which, "--dsn", dsn, "--file", str(gz)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{LABELS[which]} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"  {LABELS[which]:<55} {result['seconds']:8.2f} s  {result['rows']:>10,} rows  peak RSS {result['peak_rss_mb']:6.0f} MB",
        flush=True,
    )
    return result


def _download(gz: Path) -> tuple[Path, float]:
    """The month as extract leaves it (file, record, row ids), made by extract from a local
    release server, once; and how long extract's verification of it takes (timed again)."""
    from taxi_assets.config import Settings
    from taxi_assets.monthfile import open_month_file
    from taxi_assets.samples.mirror_server import SampleServer
    from taxi_assets.steps.extract import extract

    release = CACHE / "release" / str(_rows_in(gz))
    (release / YELLOW.taxi).mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        (release / YELLOW.taxi / gz.name).symlink_to(gz)
    server = SampleServer(release, rows=0).start()
    try:
        settings = Settings(state_dir=CACHE / "state" / str(_rows_in(gz)), source_url=server.url)
        info = extract(settings, YELLOW, MONTH)
    finally:
        server.shutdown()
    started = time.monotonic()
    open_month_file(Path(info.path), YELLOW).verify(sha256=info.sha256)
    return Path(info.path), time.monotonic() - started


def _rows_in(gz: Path) -> int:
    return int(gz.parent.name)  # _sample's folder is named after the row count


def _admin_dsn() -> str:
    if dsn := os.environ.get("TAXI_BENCH_POSTGRES_DSN"):
        return dsn
    from taxi_assets.config import Settings
    from taxi_assets.database import embedded_dsn

    return embedded_dsn(Settings(state_dir=CACHE / "state"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of (f), (f2), (a) and (b)")
    parser.add_argument("--skip-pandas", action="store_true", help="skip (d), which takes minutes at real scale")
    parser.add_argument(
        "--rss-rows", type=int, default=1_000_000, help="a smaller month, to show (b)'s RSS does not grow"
    )
    parser.add_argument("--worker", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.dsn, args.file)

    gz = _sample(args.rows)
    _plain_csv(gz)
    download, verify_s = _download(gz)
    admin = _admin_dsn()
    db = f"taxi_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
        version = conn.execute("SHOW server_version").fetchone()[0]
    dsn = psycopg.conninfo.make_conninfo(admin, dbname=db)
    print(
        f"{args.rows:,} yellow rows, {gz.stat().st_size / 1e6:.0f} MB gzipped; Postgres {version}; {os.cpu_count()} cores"
    )
    print(f"  extract's verification of the download (gzip, header, row ids; once per download): {verify_s:.2f} s")
    try:
        _halves_of(gz)  # made once, untimed
        runs: dict[str, list[dict]] = {"f": [], "f2": [], "a": [], "b": []}
        for _ in range(args.repeat):
            for which in ("f", "f2", "a", "b"):
                runs[which].append(measure(which, dsn, download if which == "b" else gz))
        b0 = measure("b0", dsn, gz)  # the bare file: no record, so no row ids
        c = measure("c", dsn, gz)
        d = None if args.skip_pandas else measure("d", dsn, gz)
        small = measure("b", dsn, _download(_sample(args.rss_rows))[0]) if args.rss_rows < args.rows else None
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    f_s, f2_s, a_s, b_s = (statistics.median(r["seconds"] for r in runs[k]) for k in ("f", "f2", "a", "b"))
    b_rss = max(r["peak_rss_mb"] for r in runs["b"])
    print(f"\nresults (medians of {args.repeat}):")
    lines = [
        ("(b) / (f), target <= 1.2", b_s / f_s, b_s / f_s <= 1.2),
        ("(b) / (f2), target <= 1.15", b_s / f2_s, b_s / f2_s <= 1.15),
        ("(b) / (a), target <= 1.3", b_s / a_s, b_s / a_s <= 1.3),
        ("(b0) / (b), row ids from extract", b0["seconds"] / b_s, True),
        ("(c) / (b), target >= 2.5", c["seconds"] / b_s, c["seconds"] / b_s >= 2.5),
    ]
    if d:
        lines.append(("(d) / (b), target >= 10", d["seconds"] / b_s, d["seconds"] / b_s >= 10))
    for label, ratio, ok in lines:
        print(f"  {label:<34} {ratio:6.2f}  {'ok' if ok else 'MISSED'}")
    print(f"  (b) peak RSS, target <= 300 MB: {b_rss:.0f} MB  {'ok' if b_rss <= 300 else 'MISSED'}")
    if small:
        print(
            f"  (b) peak RSS at {args.rss_rows:,} rows: {small['peak_rss_mb']:.0f} MB (flat: memory does not grow with the month)"
        )


if __name__ == "__main__":
    main()
