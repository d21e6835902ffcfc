"""What the load ledger adds to load-postgres at real scale (a yellow month, 7.7 M rows).

    .venv/bin/python benchmarks/ledger.py                 # 3 alternating runs of each
    .venv/bin/python benchmarks/ledger.py --rows 1000000 --repeat 1

(b)  `load_postgres` as it is: rows, row ids and the ledger record (the row ids' sha256 computed
     beside the duplicate count, the record inserted in the swap's transaction);
(b-) the same with the record left out (`ledger.row_ids_digest` and `ledger.write_postgres`
     replaced by no-ops in that process): what a load cost without the ledger;
(h)  `ledger.row_ids_digest` alone, the record's one cost that grows with the month.
Each runs in a fresh process after a CHECKPOINT on an empty database (benchmarks/run.py's
`_clean_slate`), from the download extract leaves (file, record, row ids); medians compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import run  # noqa: E402  (benchmarks/run.py: the sample month, its download, the database)

from taxi_assets.datasets import YELLOW  # noqa: E402


def worker(which: str, dsn: str, path: Path) -> None:
    from taxi_assets import ledger
    from taxi_assets.files import recorded_download
    from taxi_assets.steps.postgres import load_postgres

    info, _ = recorded_download(path)
    if which == "h":
        started = time.monotonic()
        ledger.row_ids_digest(path, YELLOW, info.data_lines)
        print(json.dumps({"seconds": time.monotonic() - started}))
        return
    if which == "b-":
        ledger.row_ids_digest = lambda *a: ""
        ledger.write_postgres = lambda *a: None
    with psycopg.connect(dsn) as conn:
        started = time.monotonic()
        load_postgres(conn, YELLOW, run.MONTH, path, expected_rows=info.data_lines)
        print(json.dumps({"seconds": time.monotonic() - started}))


def measure(which: str, dsn: str, path: Path) -> float:
    run._clean_slate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS taxi_loads")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", which, "--dsn", dsn, "--file", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{which} failed:\n{out.stderr[-3000:]}")
    seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    print(f"  {which:<3} {seconds:8.2f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=run.REAL_ROWS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", choices=("b", "b-", "h"), help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.dsn, args.file)
    download, _ = run._download(run._sample(args.rows))
    admin = run._admin_dsn()
    db = f"taxi_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    dsn = psycopg.conninfo.make_conninfo(admin, dbname=db)
    times: dict[str, list[float]] = {"b": [], "b-": [], "h": []}
    try:
        print(f"load-postgres of {args.rows:,} yellow rows, with and without the ledger record:")
        for _ in range(args.repeat):
            for which in times:
                times[which].append(measure(which, dsn, download))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    with_ledger, without = statistics.median(times["b"]), statistics.median(times["b-"])
    print(
        f"median: with the ledger {with_ledger:.2f} s, without {without:.2f} s:"
        f" +{with_ledger - without:.2f} s ({with_ledger / without:.3f}x);"
        f" the row ids' sha256 alone {statistics.median(times['h']):.2f} s (beside the duplicate count)"
    )


if __name__ == "__main__":
    main()
