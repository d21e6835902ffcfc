"""Peak RSS of every step at the scale of the largest month, fhv 2019-01 (issue 10: each step <= 300 MB).

    .venv/bin/python benchmarks/memory.py [--rows 23000000]
    .venv/bin/python benchmarks/memory.py --rows 300000      # a quick look

fhv 2019-01 holds 23.1 M rows, three times yellow's largest month. A generated fhv month of
`--rows` (cached under benchmarks/.cache/<rows>/; generating 23 M rows takes about 4-5 minutes,
once) is served by a local release server and goes through every step Kestra runs, each a
process of its own (`python -m taxi_assets <step>`): extract, load-postgres, upload-gcs,
load-bigquery, purge-download. Each step's wall time and peak RSS (os.wait4 in a lean launcher,
see chain.py's `run_step`: the step's process and what it waited for) are checked against
300 MB. The embedded Postgres and the emulators are started beforehand (untimed; the embedded
Postgres is held by this script, as a server runs) and are not the step's own memory: their
peak (summed PSS of every process of this benchmark, sampled every 0.2 s) is shown beside each
step for information.

EMULATOR FIGURES: fake-gcs-server and bqemulator (DuckDB) on this machine, not Google Cloud;
upload-gcs and load-bigquery's times are local, and BigQuery's load runs in the emulator.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from chain import MemorySampler, command_env, hold_postgres, release_folder, run_step, tear_down  # noqa: E402
from run import CACHE  # noqa: E402

from taxi_assets.datasets import FHV  # noqa: E402
from taxi_assets.months import Month  # noqa: E402
from taxi_assets.samples.mirror_server import SampleServer  # noqa: E402

MONTH = Month(2019, 1)
FHV_ROWS = 23_000_000  # fhv 2019-01 has 23,143,222
LIMIT_MB = 300
STEPS = ("extract", "load-postgres", "upload-gcs", "load-bigquery", "purge-download")


def fhv_sample(rows: int) -> tuple[Path, float | None]:
    """The generated month, cached (as benchmarks/run.py caches its yellow month); with the
    seconds generating it took, when it was generated now."""
    from taxi_assets.samples.mirror_data import write_month

    path = CACHE / str(rows) / FHV.file_name(MONTH)
    if path.exists():
        return path, None
    print(
        f"generating {rows:,} fhv rows into {path} (once; about {rows / 1e6 * 11:.0f} s at 11 s a million) ...",
        flush=True,
    )
    started = time.monotonic()
    tmp = path.with_suffix(".tmp")
    write_month(tmp, FHV, MONTH, rows, crlf=True)
    tmp.rename(path)
    seconds = time.monotonic() - started
    print(f"  generated in {seconds:.0f} s ({seconds / rows * 1e6:.1f} s a million rows)", flush=True)
    return path, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FHV_ROWS)
    args = parser.parse_args()
    gz, _ = fhv_sample(args.rows)
    state = Path(tempfile.mkdtemp(prefix="taxi-memory-bench-"))
    server = SampleServer(release_folder(state / "release", [gz]), rows=0).start()
    env = command_env(state, server.url)
    month = ["--taxi", FHV.taxi, "--month", str(MONTH)]
    postgres = None
    results = []
    try:
        postgres, _ = hold_postgres(state)
        run_step(env, "gcp-setup")  # starts both emulators, makes the bucket and the dataset
        with MemorySampler(state) as sampler:
            for step in STEPS:
                with sampler.window() as peak:
                    results.append((step, run_step(env, step, *month), peak))
    finally:
        server.shutdown()
        tear_down(state, env, postgres)

    outputs = {step: result["outputs"] for step, result, _ in results}
    assert outputs["load-postgres"]["rows_loaded"] == args.rows, outputs["load-postgres"]
    assert outputs["upload-gcs"]["rows"] == args.rows and outputs["load-bigquery"]["rows"] == args.rows, outputs
    assert outputs["purge-download"]["removed"], outputs["purge-download"]
    print(
        f"EMULATOR FIGURES ({args.rows:,} fhv rows of {MONTH}, {gz.stat().st_size / 1e6:,.0f} MB .csv.gz;"
        f" {os.cpu_count()} cores; each step a CLI process):"
    )
    for step, result, peak in results:
        verdict = "ok" if result["rss_mb"] <= LIMIT_MB else "MISSED"
        print(
            f"  {step:<15} {result['seconds']:8.2f} s   peak RSS {result['rss_mb']:5.0f} MB  <= {LIMIT_MB} MB: {verdict:<6}"
            f"   (Postgres + emulators + step, summed PSS at peak: {peak.pss_mb:,.0f} MB)"
        )
    worst = max(results, key=lambda r: r[1]["rss_mb"])
    print(f"  largest: {worst[0]} at {worst[1]['rss_mb']:.0f} MB; every step <= {LIMIT_MB} MB: "
          f"{'ok' if worst[1]['rss_mb'] <= LIMIT_MB else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
