"""upload-gcs + load-bigquery for a yellow month at real scale, on the emulators.

    .venv/bin/python benchmarks/cloud.py [--rows 7700000]

EMULATOR FIGURES: fake-gcs-server and bqemulator (DuckDB) on this machine, not Google Cloud;
they show what the steps cost locally (conversion, bytes, upload, load), not BigQuery speed.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=7_700_000)
    args = parser.parse_args()
    os.environ["TAXI_EMULATED_GCS_PORT"] = str(_free_port())
    os.environ["TAXI_EMULATED_BIGQUERY_PORT"] = str(_free_port())
    from run import MONTH, _sample  # the same cached month as the Postgres benchmark

    from taxi_assets.config import Settings
    from taxi_assets.datasets import YELLOW
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.steps.bigquery import load_bigquery
    from taxi_assets.steps.gcp_setup import ensure_dataset
    from taxi_assets.steps.gcs import ensure_bucket, upload_gcs

    gz = _sample(args.rows)
    state = Path(tempfile.mkdtemp(prefix="taxi-cloud-bench-"))
    settings = with_local_cloud(Settings(state_dir=state))
    try:
        ensure_bucket(settings)
        ensure_dataset(settings)
        local = state / gz.name
        local.symlink_to(gz)
        started = time.monotonic()
        upload = upload_gcs(settings, YELLOW, MONTH, local)
        upload_s = time.monotonic() - started
        started = time.monotonic()
        load = load_bigquery(settings, YELLOW, MONTH, expected_rows=args.rows)
        load_s = time.monotonic() - started
    finally:
        import psutil

        for proc in psutil.process_iter(["cmdline"]):
            if str(state) in " ".join(proc.info["cmdline"] or []):
                proc.kill()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"EMULATOR FIGURES ({args.rows:,} yellow rows, {gz.stat().st_size / 1e6:.0f} MB .csv.gz):")
    print(f"  upload-gcs:    {upload_s:7.1f} s  Parquet {upload.bytes / 1e6:.0f} MB uploaded ({upload.rows:,} rows)")
    print(f"  load-bigquery: {load_s:7.1f} s  {load.rows:,} rows in {load.table}")
    print(f"  peak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
