"""A real-scale yellow month's marts rebuilt in Postgres, beside loading the same month (issue 19:
the rebuild <= 1.5x the load).

    .venv/bin/python benchmarks/marts.py                      # 7.7 M rows (yellow 2019-01's size)
    .venv/bin/python benchmarks/marts.py --rows 1000000 --repeat 1

The generated yellow month of benchmarks/run.py (cached under benchmarks/.cache/<rows>/) is served
by a local release server. Each command is a CLI process of its own, as Kestra runs it
(`python -m taxi_assets <step>`, chain.py's `run_step`: wall time and peak RSS of the process and
what it waited for), on the embedded Postgres held by this script as a server runs:
extract (untimed), then `--repeat` rounds of load-postgres and `marts --store postgres`
alternating (the first marts build of a fresh database also builds the dimensions: shown apart,
not in the ratio). The work of both is mostly inside Postgres: its memory is the summed PSS of
every process of this benchmark at the step's peak, shown beside the step's own RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import run  # noqa: E402  (benchmarks/run.py: the sample month)
from chain import MemorySampler, command_env, hold_postgres, release_folder, run_step, tear_down  # noqa: E402

from taxi_assets.datasets import YELLOW  # noqa: E402
from taxi_assets.samples.mirror_server import SampleServer  # noqa: E402

TARGET = 1.5  # the marts' rebuild against the load of the same month


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=run.REAL_ROWS)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    gz = run._sample(args.rows)
    state = Path(tempfile.mkdtemp(prefix="taxi-marts-bench-"))
    server = SampleServer(release_folder(state / "release", [gz]), rows=0).start()
    env = command_env(state, server.url)
    month = ["--month", str(run.MONTH)]
    postgres = None
    loads, builds = [], []
    try:
        postgres, _ = hold_postgres(state)
        run_step(env, "extract", "--taxi", YELLOW.taxi, *month)
        with MemorySampler(state) as sampler:
            for round_ in range(args.repeat + 1):
                with sampler.window() as peak:
                    load = run_step(env, "load-postgres", "--taxi", YELLOW.taxi, *month)
                with sampler.window() as marts_peak:
                    build = run_step(env, "marts", *month, "--store", "postgres", "--source", "mirror")
                assert load["outputs"]["rows_loaded"] == args.rows, load["outputs"]
                assert build["outputs"]["rows"], build["outputs"]  # rows per mart for the month
                first = round_ == 0
                print(
                    f"  round {round_}{' (first: marts builds the dimensions too)' if first else ''}:"
                    f" load-postgres {load['seconds']:6.2f} s, RSS {load['rss_mb']:4.0f} MB, all {peak.pss_mb:,.0f} MB;"
                    f" marts {build['seconds']:6.2f} s, RSS {build['rss_mb']:4.0f} MB, all {marts_peak.pss_mb:,.0f} MB",
                    flush=True,
                )
                if not first:
                    loads.append((load, peak.pss_mb))
                    builds.append((build, marts_peak.pss_mb))
    finally:
        server.shutdown()
        tear_down(state, env, postgres)

    load_s = statistics.median(r["seconds"] for r, _ in loads)
    marts_s = statistics.median(r["seconds"] for r, _ in builds)
    print(
        f"{args.rows:,} yellow rows of {run.MONTH} ({gz.stat().st_size / 1e6:,.0f} MB .csv.gz), embedded Postgres,"
        f" {os.cpu_count()} cores; medians of {len(loads)} rounds after the first:"
    )
    print(
        f"  load-postgres  {load_s:7.2f} s   peak RSS {max(r['rss_mb'] for r, _ in loads):5.0f} MB"
        f"   (with Postgres: {max(p for _, p in loads):,.0f} MB)"
    )
    print(
        f"  marts rebuilt  {marts_s:7.2f} s   peak RSS {max(r['rss_mb'] for r, _ in builds):5.0f} MB"
        f"   (with Postgres: {max(p for _, p in builds):,.0f} MB)"
    )
    ratio = marts_s / load_s
    print(f"  marts / load: {ratio:.2f}x  (target <= {TARGET}x: {'ok' if ratio <= TARGET else 'MISSED'})")


if __name__ == "__main__":
    main()
