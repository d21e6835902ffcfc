"""upload-gcs at real scale: the first run against a re-run of the unchanged month (issue 10, target 3).

    .venv/bin/python benchmarks/rerun.py [--rows 7700000] [--reruns 3]

Every run is the command in a process of its own (`python -m taxi_assets upload-gcs`), as Kestra
and a shell run it, against the embedded fake-gcs-server (its real binary) under a temporary
state folder. The month is the generated yellow month benchmarks/run.py caches; it is extracted
from a local release server and the emulator is started before anything is timed, so the first
run is conversion + upload and a re-run is what a re-run costs: process start, extract's check
of the download, and upload-gcs's check of its record against the object (one metadata GET).
`extract` run again alone is shown beside it: the part of a re-run that is not upload-gcs's own;
and a re-run without the upload record: what every re-run cost before the record existed.

EMULATOR FIGURES: fake-gcs-server on this machine, not Google Cloud (a re-run's one GET costs
a round trip more there; a first run's upload depends on the network).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cloud import _free_port  # noqa: E402
from run import MONTH, REAL_ROWS, _sample  # noqa: E402  (the same cached month as the other benchmarks)

_CONFIG_PREFIXES = ("TAXI_", "GCP_", "STORAGE_", "BIGQUERY_")


def _command(env: dict, *args: str) -> dict:
    """`python -m taxi_assets <args>` in its own process: wall time, peak RSS, Kestra outputs."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "taxi_assets", *args], env=env, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(args)}` failed ({proc.returncode}):\n{stderr[-3000:]}")
    lines = [json.loads(line[2:-2]) for line in stdout.splitlines() if line.startswith("::{")]
    outputs = next((line["outputs"] for line in lines if "outputs" in line), {})
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "outputs": outputs, "stderr": stderr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--reruns", type=int, default=3, help="re-runs of the unchanged month (median reported)")
    args = parser.parse_args()
    gz = _sample(args.rows)
    state = Path(tempfile.mkdtemp(prefix="taxi-rerun-bench-"))
    os.environ["TAXI_EMULATED_GCS_PORT"] = str(_free_port())  # read when taxi_assets.emulators is imported
    from taxi_assets.config import Settings
    from taxi_assets.datasets import YELLOW
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.sample_server import SampleServer
    from taxi_assets.steps.gcs import ensure_bucket

    release = state / "release"
    (release / YELLOW.taxi).mkdir(parents=True)
    (release / YELLOW.taxi / gz.name).symlink_to(gz)
    server = SampleServer(release, rows=0).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_PREFIXES)} | {
        "TAXI_STATE_DIR": str(state),
        "TAXI_SOURCE_URL": server.url,
        "TAXI_EMULATED_GCS_PORT": os.environ["TAXI_EMULATED_GCS_PORT"],
        "TAXI_EMULATED_BIGQUERY_PORT": str(_free_port()),  # not started: upload-gcs needs no BigQuery
    }
    month = ["--taxi", YELLOW.taxi, "--month", str(MONTH)]
    try:
        _command(env, "extract", *month)  # untimed: the download is not what is measured
        ensure_bucket(with_local_cloud(Settings(state_dir=state), bigquery=False))  # starts fake-gcs-server
        first = _command(env, "upload-gcs", *month)
        assert first["outputs"]["converted"] and first["outputs"]["uploaded"], first["outputs"]
        reruns = [_command(env, "upload-gcs", *month) for _ in range(args.reruns)]
        for run in reruns:
            assert not run["outputs"]["converted"] and not run["outputs"]["uploaded"], run["outputs"]
        extracts = [_command(env, "extract", *month) for _ in range(args.reruns)]
        record = state / "downloads" / YELLOW.taxi / gz.name.replace(".csv.gz", ".parquet.json")
        record.unlink()  # as before issue 10: every re-run converted, then found the bytes in the bucket
        before = _command(env, "upload-gcs", *month)
        assert before["outputs"]["converted"] and not before["outputs"]["uploaded"], before["outputs"]
    finally:
        server.shutdown()
        subprocess.run(
            [sys.executable, "-m", "taxi_assets", "emulators", "stop"], env=env, cwd=ROOT, capture_output=True
        )
        shutil.rmtree(state, ignore_errors=True)

    rerun_s = statistics.median(r["seconds"] for r in reruns)
    extract_s = statistics.median(r["seconds"] for r in extracts)
    out = first["outputs"]
    print(
        f"EMULATOR FIGURES ({out['rows']:,} yellow rows, {gz.stat().st_size / 1e6:.0f} MB .csv.gz,"
        f" Parquet {out['bytes'] / 1e6:.0f} MB; {os.cpu_count()} cores; each run a CLI process):"
    )
    print(f"  upload-gcs, first run (convert + upload): {first['seconds']:7.2f} s   peak RSS {first['rss_mb']:4.0f} MB")
    each = ", ".join(f"{r['seconds']:.2f}" for r in reruns)
    print(
        f"  upload-gcs, re-run of the unchanged month: {rerun_s:6.2f} s   peak RSS {max(r['rss_mb'] for r in reruns):4.0f} MB"
        f"   (median of {len(reruns)}: {each})"
    )
    print(f"  of which extract's own re-run (start + sha256 check): {extract_s:.2f} s (median of {len(extracts)})")
    print(
        f"  upload-gcs, re-run without the upload record (every re-run before issue 10: converts, finds the"
        f" bytes in the bucket, does not upload): {before['seconds']:.2f} s"
    )
    ratio = rerun_s / first["seconds"]
    print(f"  re-run / first run: {ratio:.3f}  ({first['seconds'] / rerun_s:.0f}x faster)")
    print(f"  re-run <= 2 s, target 3: {'ok' if rerun_s <= 2 else 'MISSED'}")
    line = next((x for x in reruns[0]["stderr"].splitlines() if "unchanged since its upload" in x), "")
    print(f"  the re-run's log: {line.strip()}")


if __name__ == "__main__":
    main()
