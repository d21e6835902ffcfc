"""The TLC's own Parquet at real scale: load-postgres against its COPY floor and its peers, every step's memory (issues 11, 20).

    .venv/bin/python benchmarks/tlc.py                    # fhvhv 2024-01 at 20 M rows; writes benchmarks/RESULTS-tlc.txt
    .venv/bin/python benchmarks/tlc.py --rows 3000000 --skip-cloud --write   # issue 20's scale: RESULTS-tlc-3m.txt

Targets: a Parquet month loads into Postgres at <= 1.3 x the COPY floor of the same rows as CSV,
streaming by row group; every step's peak RSS <= 400 MB for an fhvhv month at real scale
(~20 M rows, 25 columns; the real fhvhv 2024-01 holds 19,663,930 rows).

A generated fhvhv 2024-01 (`samples.tlc.write_tlc_month`, the seed `TlcServer` uses; cached under
benchmarks/.cache/tlc/<rows>/) is served by a local `TlcServer` (TAXI_TLC_URL) and goes through
the steps, each a CLI process (`python -m taxi_assets <step> --source tlc ...`) started by a lean
launcher (chain.py's `run_step`: the step's own wall time and peak RSS, not this process's):

- extract, first run (download from the local server, verification, row ids), then a re-run
  (the cached month: sha256 of the file, row-id file check, HEAD to the server);
- (f) the floor: the very lines load-postgres sends to COPY (`unique_row_id,<canonical line>`,
  built once with `MonthFile.text_blocks` + `rows.copy_rows` + extract's row ids, gzipped into
  the cache), `zcat file | psql -c "\\copy ..."` into a plain unpartitioned table of the same
  columns (`filename` a default), as benchmarks/run.py's (f);
- (t) `load-postgres` on the extracted download, into the real (partitioned, swapped) table;
  (f) and (t) alternate `--repeat` times, each after the same clean slate (the floor table
  truncated, the month's table dropped, CHECKPOINT); medians are compared. (t) is reported as
  the command's wall time (interpreter start, imports, extract's check of the cached month,
  the load) and as the load's own time (its `seconds` output);
- the peers, alternating with (f) and (t), each loading the same Parquet into the same Postgres
  in a process of its own: (d) DuckDB 1.5.5's postgres extension (`CREATE TABLE pg.t AS SELECT *
  FROM read_parquet(file)`) and (a) ADBC's PostgreSQL driver (`adbc_ingest` of the file's
  batches), installed by this script into benchmarks/.cache/peers (`PEERS`); targets: (t) <=
  1.0 x (d) at peak RSS <= 400 MB, and (e) extract's verification and ids (its row-id file removed,
  no download; run after each (t), medians compared) <= 0.5 x (t);
- where the time goes: the producer side of the load (Parquet decode, cast to the canonical
  schema, binary COPY rows, row ids and halves) timed pass by pass in one process of its own, and
  `zcat` of the floor file alone;
- load-postgres once more, the month loaded (a re-run replacing it), with the memory sampler on;
- upload-gcs (conversion to typed Parquet while uploading to fake-gcs-server), the conversion
  alone (write_parquet, its own process), load-bigquery (bqemulator; given up after
  `--bigquery-timeout` seconds).

The embedded Postgres is started and held by this script (a running server, as a DSN would
point to); `gcp-setup` starts the emulators after the Postgres part (untimed). A private state
folder under /tmp holds everything and is removed at the end (emulators stopped with
`python -m taxi_assets emulators stop`). While the untimed-ratio steps run, a thread samples the
machine's used memory and the summed PSS of this benchmark's processes (step, Postgres,
emulators), as chain.py does; it is off during the (f)/(t) alternation.

EMULATOR FIGURES: fake-gcs-server and bqemulator (DuckDB) on this machine, not Google Cloud.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from chain import MemorySampler, Report, command_env, hold_postgres, machine_used_mb, run_step, tear_down  # noqa: E402
from run import CACHE, zcat_into_psql  # noqa: E402

from taxi_assets.config import Settings  # noqa: E402
from taxi_assets.datasets import TLC_FHVHV  # noqa: E402
from taxi_assets.files import local_path, row_ids_path  # noqa: E402
from taxi_assets.months import Month  # noqa: E402

DATASET = TLC_FHVHV
MONTH = Month(2024, 1)
SEED = MONTH.year * 100 + MONTH.month  # what TlcServer generates a month with
REAL_ROWS = 20_000_000  # the real fhvhv 2024-01 holds 19,663,930
RESULTS = ROOT / "benchmarks" / "RESULTS-tlc.txt"
LIMIT_MB = 400
TARGET_RATIO = 1.3  # (t) against the one-session text COPY floor (f)
PEER_RATIO = 1.0  # (t) against DuckDB's postgres extension (d), the fastest tool a user would pick
EXTRACT_RATIO = 0.5  # extract's verification and ids (no download) against (t)
FLOOR_TABLE = "tlc_floor"
PEER_TABLES = {"duckdb": "tlc_peer_duckdb", "adbc": "tlc_peer_adbc"}
# The peers, pinned, installed by this script into a folder of its own (never the project's environment).
PEERS = ("duckdb-extension-postgres-scanner==1.5.5", "adbc-driver-postgresql==1.13.0", "adbc-driver-manager==1.13.0")
STEP_ARGS = ["--source", "tlc", "--taxi", DATASET.taxi, "--month", str(MONTH)]

# --- scripts run in processes of their own (this one stays lean) ---------------------------

_GENERATE = r"""
import sys
from pathlib import Path
from taxi_assets.months import Month
from taxi_assets.samples.tlc import write_tlc_month
write_tlc_month(Path(sys.argv[1]), "fhvhv", Month(2024, 1), int(sys.argv[2]), seed=int(sys.argv[3]))
"""

# The exact lines load-postgres sends to COPY, with the row ids extract computed.
_FLOOR = r"""
import gzip, json, sys
from pathlib import Path
from taxi_assets.datasets import TLC_FHVHV as dataset
from taxi_assets.monthfile import open_month_file
from taxi_assets.rows import payload
from taxi_assets.rows import copy_rows
download, dest = Path(sys.argv[1]), Path(sys.argv[2])
month_file = open_month_file(download, dataset)
ids = month_file.recorded_row_ids()
assert ids is not None, "no row ids beside the download: run extract first"
rows = 0
with gzip.open(dest, "wb", compresslevel=6) as out:
    normalize = bool(dataset.integer_float_columns)
    for block, _ in copy_rows(month_file.text_blocks(), normalize_integer_floats=normalize, row_ids=ids):
        out.write(payload(block))
        rows += len(block)
ids.close()
print(json.dumps({"rows": rows}))
"""

# The load's producer, pass by pass, single-threaded (what one core does for (t) besides COPY).
_BREAKDOWN = r"""
import json, sys, time
import numpy as np
from pathlib import Path
import pyarrow.parquet as pq
from taxi_assets import pgbinary
from taxi_assets.datasets import ROW_ID_COLUMN, TLC_FHVHV as dataset
from taxi_assets.monthfile import open_month_file
from taxi_assets.monthfile import tlcparquet as tlc
from taxi_assets.rows import DuplicateCounter, hex_ids
from taxi_assets.steps.postgres import _payloads
path = Path(sys.argv[1])
out = {}
started = time.monotonic()
with pq.ParquetFile(path, memory_map=False, buffer_size=1 << 20, pre_buffer=False) as f:
    n = sum(b.num_rows for b in f.iter_batches(batch_size=tlc.BATCH_ROWS, use_threads=False))
out["decode"] = time.monotonic() - started
started = time.monotonic()
n = sum(b.num_rows for b in tlc.canonical_batches(path, dataset))
out["decode + cast"] = time.monotonic() - started
started = time.monotonic()
types = [ROW_ID_COLUMN.pg_type, *(c.pg_type for c in dataset.columns)]
zeros = bytes(16 * tlc.BATCH_ROWS)
for b in tlc.canonical_batches(path, dataset):
    pgbinary.encode([hex_ids(zeros[: 16 * b.num_rows]), *b.columns], types, np.zeros(b.num_rows, np.uint8), 2)
out["decode + cast + binary rows"] = time.monotonic() - started
started = time.monotonic()
month_file = open_month_file(path, dataset)
ids, duplicates = month_file.recorded_row_ids(), DuplicateCounter(spill_dir=path.parent)
n = sum(count for _, count in _payloads(month_file, ids, duplicates))
ids.close(), duplicates.close()
out["... + row ids + halves (all of it)"] = time.monotonic() - started
out["rows"] = n
print(json.dumps(out))
"""

# The Parquet conversion alone, as upload-gcs runs it (row ids from extract's row-id file).
_CONVERT = r"""
import json, sys, time
from pathlib import Path
from taxi_assets.datasets import TLC_FHVHV
from taxi_assets.months import Month
from taxi_assets.monthfile import open_month_file
from taxi_assets.parquet import write_parquet
source, dest = Path(sys.argv[1]), Path(sys.argv[2])
started = time.monotonic()
rows = write_parquet(source, dest, TLC_FHVHV, Month(2024, 1), open_month_file(source, TLC_FHVHV).recorded_row_ids())
print("::" + json.dumps({"outputs": {"seconds": time.monotonic() - started, "rows": rows}}) + "::")
"""


# The peers: each loads the same Parquet file into the same Postgres, as its docs show.
_DUCKDB = r"""
import sys, duckdb, duckdb_extensions
dsn, path, table = sys.argv[1:4]
con = duckdb.connect()
duckdb_extensions.import_extension("postgres_scanner", con=con)
con.load_extension("postgres_scanner")
con.execute(f"ATTACH '{dsn}' AS pg (TYPE postgres)")
con.execute(f"CREATE TABLE pg.{table} AS SELECT * FROM read_parquet('{path}')")
"""

_ADBC = r"""
import sys
import adbc_driver_postgresql.dbapi as pg
import pyarrow as pa
import pyarrow.parquet as pq
dsn, path, table = sys.argv[1:4]
file = pq.ParquetFile(path)
batches = pa.RecordBatchReader.from_batches(file.schema_arrow, file.iter_batches())
with pg.connect(dsn) as conn, conn.cursor() as cur:
    cur.adbc_ingest(table, batches, mode="create")
    conn.commit()
"""


def peers_path() -> Path:
    """The peers' packages (`PEERS`), installed once into the cache with pip (from PyPI)."""
    target = CACHE / "peers"
    stamp = target / "installed.txt"
    if not stamp.exists() or stamp.read_text() != "\n".join(PEERS):
        print(f"installing the peers into {target} (once): {', '.join(PEERS)}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", str(target), *PEERS],
            check=True,
        )
        stamp.write_text("\n".join(PEERS))
    return target


def run_peer(env: dict, script: str, dsn: str, parquet: Path, table: str) -> dict:
    """A peer's load in a process of its own (lean launcher: its wall time and peak RSS)."""
    peer_env = env | {"PYTHONPATH": str(peers_path())}
    result = run_step(peer_env, command=[sys.executable, "-c", script, dsn, str(parquet), table])
    with psycopg.connect(dsn) as conn:
        result["rows"] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return result


def _python(script: str, *args: str) -> dict:
    """A helper script in a process of its own; its last stdout line as JSON."""
    out = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"helper failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}


# --- the cached month and its floor file ---------------------------------------------------


def tlc_month(rows: int) -> tuple[Path, float | None]:
    """The generated month (cached), with the seconds generating it took when it was made now."""
    path = CACHE / "tlc" / str(rows) / DATASET.file_name(MONTH)
    if path.exists():
        return path, None
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating {rows:,} fhvhv rows into {path} (once; ~0.8 s a million) ...", flush=True)
    started = time.monotonic()
    tmp = path.with_name(path.name + ".tmp")
    _python(_GENERATE, str(tmp), str(rows), str(SEED))
    tmp.rename(path)
    seconds = time.monotonic() - started
    print(f"  generated in {seconds:.0f} s", flush=True)
    return path, seconds


def floor_file(parquet: Path, download: Path, rows: int) -> Path:
    """The lines COPY receives, gzipped, cached beside the month (rebuilt if the month is newer)."""
    dest = parquet.with_name("floor.csv.gz")
    if dest.exists() and dest.stat().st_mtime >= parquet.stat().st_mtime:
        return dest
    print(f"writing the floor's CSV ({rows:,} rows as COPY receives them) into {dest} (once) ...", flush=True)
    started = time.monotonic()
    tmp = dest.with_name(dest.name + ".tmp")
    written = _python(_FLOOR, str(download), str(tmp))["rows"]
    if written != rows:
        raise SystemExit(f"the floor file holds {written} rows, not {rows}")
    tmp.rename(dest)
    print(f"  written in {time.monotonic() - started:.0f} s", flush=True)
    return dest


# --- Postgres: the floor and the clean slate -----------------------------------------------


def create_floor_table(dsn: str) -> None:
    columns = ", ".join(f"{c.sql_name} {c.pg_type}" for c in DATASET.columns)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
        conn.execute(
            f"CREATE TABLE {FLOOR_TABLE} (unique_row_id text,"
            f" filename text NOT NULL DEFAULT '{DATASET.file_name(MONTH)}', {columns})"
        )


def stop_emulators(env: dict) -> None:
    """`python -m taxi_assets emulators stop` on this benchmark's state folder."""
    subprocess.run([sys.executable, "-m", "taxi_assets", "emulators", "stop"], env=env, cwd=ROOT, capture_output=True)


def clean_slate(dsn: str) -> None:
    """Same start for (f) and (t): no rows in either table, no dirty pages to flush."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {FLOOR_TABLE}")
        conn.execute(f"DROP TABLE IF EXISTS {DATASET.table}")
        for table in PEER_TABLES.values():
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


def run_floor(dsn: str, gz: Path) -> dict:
    columns = ", ".join(("unique_row_id", *DATASET.sql_names))
    started = time.monotonic()
    zcat_into_psql(dsn, gz, f"\\copy {FLOOR_TABLE} ({columns}) FROM STDIN (FORMAT csv)")
    seconds = time.monotonic() - started
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {FLOOR_TABLE}").fetchone()[0]
    return {"seconds": seconds, "rows": rows}


def download_alone(url: str) -> float:
    """The month fetched from the local server into /dev/null: extract's transfer, without its checks."""
    started = time.monotonic()
    subprocess.run(["curl", "-sSf", "-o", "/dev/null", url], check=True)
    return time.monotonic() - started


def zcat_alone(gz: Path) -> float:
    started = time.monotonic()
    subprocess.run(["zcat", str(gz)], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - started


# --- the run -------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n:,.0f} MB"


def _runs(seconds) -> str:
    return ", ".join(f"{s:.2f}" for s in seconds)


def main() -> None:  # noqa: PLR0915 (one run, read top to bottom)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of (f) and (t)")
    parser.add_argument("--bigquery-timeout", type=float, default=600, help="seconds before load-bigquery is given up")
    parser.add_argument(
        "--min-free-mb",
        type=float,
        default=3000,
        help="give up upload-gcs or load-bigquery when the machine's available memory falls under this (MB)",
    )
    parser.add_argument(
        "--skip-cloud", action="store_true", help="skip upload-gcs and load-bigquery (benchmarks/nocloud.py)"
    )
    parser.add_argument("--skip-breakdown", action="store_true", help="skip timing the load's producer pass by pass")
    parser.add_argument(
        "--write", action="store_true", help=f"write the results ({RESULTS.name} at --rows {REAL_ROWS:,}, the default)"
    )
    args = parser.parse_args()
    say = Report()
    rows = args.rows
    parquet, generated = tlc_month(rows)

    from taxi_assets.samples.tlc import TlcServer

    state = Path(tempfile.mkdtemp(prefix="taxi-tlc-bench-"))
    server = TlcServer(parquet.parent, rows=rows, latest=MONTH).start()
    server.served(f"/trip-data/{parquet.name}")  # its md5 (the ETag) now, not during extract
    env = command_env(state, server.url) | {"TAXI_TLC_URL": server.url}
    download = local_path(Settings(state_dir=state), DATASET, MONTH)
    postgres = None
    steps: dict[str, dict] = {}
    peaks: dict[str, object] = {}
    floor_runs: list[dict] = []
    peer_runs: dict[str, list[dict]] = {peer: [] for peer in PEER_TABLES}
    load_runs: list[dict] = []
    extract_runs: list[dict] = []  # (e): extract's verification and ids, alternating with (t)
    breakdown: dict = {}
    setup_mb = machine_used_mb()
    try:
        postgres, dsn = hold_postgres(state)
        with psycopg.connect(dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        with MemorySampler(state) as sampler:
            with sampler.window(setup_mb) as peak:
                steps["extract"] = run_step(env, "extract", *STEP_ARGS)
            peaks["extract"] = peak
            assert steps["extract"]["outputs"]["downloaded"], steps["extract"]["outputs"]
            assert steps["extract"]["outputs"]["data_lines"] == rows, steps["extract"]["outputs"]
            with sampler.window() as peak:
                steps["extract (re-run)"] = run_step(env, "extract", *STEP_ARGS)
            peaks["extract (re-run)"] = peak
            assert not steps["extract (re-run)"]["outputs"]["downloaded"]
            row_ids_path(download).unlink()  # extract verifies the downloaded month again, and makes its ids
            with sampler.window() as peak:
                steps["extract (verification and ids, no download)"] = run_step(env, "extract", *STEP_ARGS)
            peaks["extract (verification and ids, no download)"] = peak
            assert row_ids_path(download).exists()

        floor = floor_file(parquet, download, rows)
        create_floor_table(dsn)
        peers_path()
        for i in range(args.repeat):
            clean_slate(dsn)
            load_average = os.getloadavg()[0]
            f = run_floor(dsn, floor) | {"load_average": load_average}
            assert f["rows"] == rows, f
            floor_runs.append(f)
            print(f"  (f) run {i + 1}: {f['seconds']:8.2f} s (load average before: {load_average:.1f})", flush=True)
            for peer, script in (("duckdb", _DUCKDB), ("adbc", _ADBC)):
                clean_slate(dsn)
                load_average = os.getloadavg()[0]
                r = run_peer(env, script, dsn, parquet, PEER_TABLES[peer]) | {"load_average": load_average}
                assert r["rows"] == rows, r
                peer_runs[peer].append(r)
                print(f"  ({peer}) run {i + 1}: {r['seconds']:8.2f} s, peak RSS {r['rss_mb']:.0f} MB", flush=True)
            clean_slate(dsn)
            load_average = os.getloadavg()[0]
            t = run_step(env, "load-postgres", *STEP_ARGS) | {"load_average": load_average}
            assert t["outputs"]["rows_loaded"] == rows, t["outputs"]
            load_runs.append(t)
            print(
                f"  (t) run {i + 1}: {t['seconds']:8.2f} s (the load itself {t['outputs']['seconds']:.2f} s),"
                f" peak RSS {t['rss_mb']:.0f} MB (load average before: {load_average:.1f})",
                flush=True,
            )
            row_ids_path(download).unlink()  # extract's verification and ids again, alternating with (t)
            e = run_step(env, "extract", *STEP_ARGS)
            assert row_ids_path(download).exists() and not e["outputs"]["downloaded"], e["outputs"]
            extract_runs.append(e)
            print(f"  (e) run {i + 1}: {e['seconds']:8.2f} s, peak RSS {e['rss_mb']:.0f} MB", flush=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {FLOOR_TABLE}")  # its disk, before the cloud steps
        zcat_s = zcat_alone(floor)
        curl_s = download_alone(f"{server.url}/{parquet.name}")
        if not args.skip_breakdown:
            breakdown = _python(_BREAKDOWN, str(download))
            assert breakdown["rows"] == rows, breakdown

        with MemorySampler(state) as sampler:
            with sampler.window() as peak:
                steps["load-postgres (re-run, sampled)"] = run_step(env, "load-postgres", *STEP_ARGS)
            peaks["load-postgres (re-run, sampled)"] = peak
            assert steps["load-postgres (re-run, sampled)"]["outputs"]["replaced_previous"]
            if not args.skip_cloud:
                run_step(env, "gcp-setup")  # starts both emulators, makes the bucket and the dataset (untimed)
                with sampler.window() as peak:
                    upload = run_step(env, "upload-gcs", *STEP_ARGS, min_free_mb=args.min_free_mb)
                steps["upload-gcs"], peaks["upload-gcs"] = upload, peak
                if upload.get("aborted"):
                    stop_emulators(env)
                else:
                    assert upload["outputs"]["rows"] == rows, upload["outputs"]
                convert = run_step(
                    env, command=[sys.executable, "-c", _CONVERT, str(download), str(state / "alone.parquet")]
                )
                if upload.get("aborted"):
                    steps["load-bigquery"] = {"aborted": "upload-gcs did not complete", "seconds": 0.0}
                else:
                    with sampler.window() as peak:
                        load = run_step(
                            env,
                            "load-bigquery",
                            *STEP_ARGS,
                            timeout=args.bigquery_timeout,
                            min_free_mb=args.min_free_mb,
                        )
                    steps["load-bigquery"], peaks["load-bigquery"] = load, peak
                    if load.get("aborted"):
                        stop_emulators(env)  # bqemulator may still be loading: free the machine now
                    else:
                        assert load["outputs"]["rows"] == rows, load["outputs"]
    finally:
        server.shutdown()
        tear_down(state, env, postgres)

    # --- the report ---
    f_s = statistics.median(r["seconds"] for r in floor_runs)
    t_s = statistics.median(r["seconds"] for r in load_runs)
    t_own = statistics.median(r["outputs"]["seconds"] for r in load_runs)
    t_rss = max(r["rss_mb"] for r in load_runs)
    mem_total = int(Path("/proc/meminfo").read_text().split()[1]) / 1024
    say(f"TLC SOURCE, fhvhv {MONTH} ({len(DATASET.columns)} canonical columns), {datetime.date.today()}")
    say(
        f"  {rows:,} generated rows (samples.tlc.write_tlc_month, row groups of 1,048,576):"
        f" Parquet {parquet.stat().st_size / 1e6:,.0f} MB; the floor's CSV {floor.stat().st_size / 1e6:,.0f} MB gzipped"
        + (f"; generated in {generated:.0f} s" if generated else "")
    )
    say(
        f"  machine: {os.cpu_count()} cores, {mem_total / 1024:,.1f} GB RAM, shared with other work while this ran;"
        f" embedded Postgres {version} (default settings, fsync on), held running by the benchmark"
    )
    say("")
    say(
        f"load-postgres against its floor (medians of {args.repeat} alternating runs, each after TRUNCATE/DROP + CHECKPOINT)"
    )
    say(f"  {'':<62} {'median':>9} {'rows/s':>8}   runs (1-min load average before each)")
    for label, seconds, runs in (
        ("(f) zcat floor.csv.gz | psql \\copy, plain table, one session", f_s, [r["seconds"] for r in floor_runs]),
        ("(t) load-postgres --source tlc, the CLI process's wall time", t_s, [r["seconds"] for r in load_runs]),
        ("    of which the load itself (its `seconds` output)", t_own, [r["outputs"]["seconds"] for r in load_runs]),
    ):
        averages = floor_runs if label.startswith("(f)") else load_runs
        detail = ", ".join(f"{x:.2f} ({r['load_average']:.1f})" for x, r in zip(runs, averages, strict=True))
        say(f"  {label:<62} {seconds:7.2f} s {rows / seconds / 1e3:6.0f} k   {detail}")
    for label, ratio in (("(t) / (f), CLI wall", t_s / f_s), ("(t) / (f), the load itself", t_own / f_s)):
        verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
        say(f"  {label:<28} {ratio:5.2f}   target <= {TARGET_RATIO}: {verdict}")
    say("")
    say("the peers on the same file into the same Postgres (same alternation; each process's wall time and peak RSS)")
    peer_s = {peer: statistics.median(r["seconds"] for r in runs) for peer, runs in peer_runs.items()}
    for peer, label in (
        ("duckdb", "(d) DuckDB 1.5.5 + postgres extension: CREATE TABLE pg.t AS SELECT * FROM read_parquet(file)"),
        ("adbc", "(a) ADBC PostgreSQL driver 1.13.0: adbc_ingest of the file's batches"),
    ):
        runs = peer_runs[peer]
        say(f"  {label}")
        say(
            f"  {'':<4}{peer_s[peer]:7.2f} s median, peak RSS {max(r['rss_mb'] for r in runs):,.0f} MB;"
            f" runs {_runs(r['seconds'] for r in runs)}; (t) / this peer: CLI wall {t_s / peer_s[peer]:.2f},"
            f" the load itself {t_own / peer_s[peer]:.2f}"
        )
    ratio = t_s / peer_s["duckdb"]
    say(
        f"  (t) / (d), CLI wall {ratio:5.2f}   target <= {PEER_RATIO}: {'ok' if ratio <= PEER_RATIO else 'MISSED'};"
        f" (t) peak RSS {t_rss:.0f} MB, target <= {LIMIT_MB} MB: {'ok' if t_rss <= LIMIT_MB else 'MISSED'}"
    )
    e_s = statistics.median(e["seconds"] for e in extract_runs)
    ratio = e_s / t_s
    e_runs = ", ".join(f"{e['seconds']:.2f}" for e in extract_runs)
    say(
        f"  (e) extract's verification and ids (no download), median of {len(extract_runs)} alternating with (t):"
        f" {e_s:.2f} s (runs {e_runs}) / (t) {t_s:.2f} s = {ratio:.2f}"
        f"   target <= {EXTRACT_RATIO}: {'ok' if ratio <= EXTRACT_RATIO else 'MISSED'}"
    )
    say(
        f"  (t) peak RSS {t_rss:.0f} MB (max of the runs); the CLI wall adds to the load the interpreter's start, imports"
        f" and extract's check of the cached month (extract re-run alone: {steps['extract (re-run)']['seconds']:.2f} s)"
    )
    say("")
    say("where the time goes (each alone, in a process of its own, after the runs above)")
    say(f"  {'zcat of the floor file alone (what feeds (f))':<62} {zcat_s:7.2f} s")
    say(f"  {'curl of the month from the local server (extract: transfer)':<62} {curl_s:7.2f} s")
    for label, seconds in breakdown.items():
        if label != "rows":
            say(f"  {'producer of (t), one thread: ' + label:<62} {seconds:7.2f} s")
    say("")
    say(f"every step as a CLI process (lean launcher: the step's own wall time and peak RSS; target <= {LIMIT_MB} MB)")
    say(f"  {'step':<34} {'wall':>10} {'peak RSS':>9}        {'machine used':>12} {'PSS, all':>10}  (at peak)")
    rows_out = [*steps.items()][:3] + [("load-postgres (median run above)", {"seconds": t_s, "rss_mb": t_rss})]
    rows_out += [*steps.items()][3:]
    for name, result in rows_out:
        peak = peaks.get(name)
        memory = f"{_mb(peak.machine_mb):>12} {_mb(peak.pss_mb):>10}" if peak else f"{'(not sampled)':>23}"
        if result.get("aborted"):
            say(f"  {name:<34} not measured: {result['aborted']}; killed   {memory}")
            continue
        verdict = "ok" if result["rss_mb"] <= LIMIT_MB else "MISSED"
        say(f"  {name:<34} {result['seconds']:8.2f} s {result['rss_mb']:6.0f} MB {verdict:<6} {memory}")
    if not args.skip_cloud:
        say(
            f"  the Parquet conversion alone (write_parquet, own process): {convert['outputs']['seconds']:.2f} s,"
            f" peak RSS {convert['rss_mb']:.0f} MB; upload-gcs converts while it uploads"
        )
    say(
        "  PSS, all: summed PSS of the step, Postgres and the emulators (sampled every 0.2 s); machine used:"
        " MemTotal - MemAvailable, other people's work included"
    )
    measured = [(r["rss_mb"], n) for n, r in rows_out if not r.get("aborted")]
    worst = max(measured)
    say(
        f"  largest: {worst[1]} at {worst[0]:.0f} MB; every measured step <= {LIMIT_MB} MB:"
        f" {'ok' if worst[0] <= LIMIT_MB else 'MISSED'}"
    )
    say(f"  machine's used memory before set-up: {_mb(setup_mb)}")
    say("EMULATOR FIGURES for upload-gcs and load-bigquery (fake-gcs-server and bqemulator here, not Google Cloud)")
    if args.write or rows == REAL_ROWS:
        results = RESULTS if rows == REAL_ROWS else RESULTS.with_name(f"RESULTS-tlc-{rows // 1_000_000}m.txt")
        results.write_text("\n".join(say.lines) + "\n")
        print(f"(written to {results.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
