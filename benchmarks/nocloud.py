"""The no-cloud path at fhvhv's real scale: everything the project starts, at most 3 GB (issue 20, target 4).

    .venv/bin/python benchmarks/nocloud.py --save /tmp/before.json     # on the code before (a worktree)
    .venv/bin/python benchmarks/nocloud.py --before /tmp/before.json   # after; writes benchmarks/RESULTS-nocloud.txt
    .venv/bin/python benchmarks/nocloud.py --before b.json --after a.json   # the report of two saved runs
    .venv/bin/python benchmarks/nocloud.py --rows 2000000              # a quicker look (prints only, unless --write)

A generated fhvhv 2024-01 (`benchmarks/tlc.py`'s `tlc_month`, cached under benchmarks/.cache/tlc/)
is served by a local `TlcServer` and goes through the no-cloud chain against the embedded
default (nothing configured: embedded Postgres, fake-gcs-server and bqemulator under a private
state folder), each step a CLI process started by chain.py's lean launcher (`run_step`):
extract, upload-gcs, load-bigquery, `check --store gcs`, `check --store bigquery`; then, on the
emulators that have done all that (they stay up between steps, as a local service does),
upload-gcs again (the object deleted from the bucket first, with its upload record) and
load-bigquery again (replacing the month). The emulators are started by `gcp-setup` beforehand
(untimed); the embedded Postgres is held by this script.

While each step runs a thread samples every 0.2 s the PSS of every process the project started
(the step and its children, Postgres, fake-gcs-server, bqemulator), per process and summed, and
the machine's used memory (MemTotal - MemAvailable, other people's work included). The target:
the summed PSS at its peak <= 3 GB over the whole chain, with the same results (rows, the
object's crc32c, the checks' verdicts, and a fingerprint of the month in BigQuery, queried
after the chain and not counted).

A step is killed when the machine's available memory falls under --min-free-mb (the emulators
before this change could take the machine's memory; the machine is shared).

EMULATOR FIGURES: fake-gcs-server and bqemulator (DuckDB) on this machine, not Google Cloud.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from chain import MB, MemorySampler, Report, command_env, hold_postgres, machine_used_mb, run_step, tear_down  # noqa: E402
from tlc import DATASET, MONTH, REAL_ROWS, STEP_ARGS, tlc_month  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS-nocloud.txt"
TARGET_MB = 3000  # "<= 3 GB machine-wide for everything the project starts"
GROUPS = ("step", "postgres", "fake-gcs-server", "bqemulator")

# The object gone from the bucket and upload-gcs's record of it, so that upload-gcs sends it again.
_FORGET_OBJECT = r"""
from taxi_assets.config import Settings
from taxi_assets.datasets import TLC_FHVHV as ds
from taxi_assets.emulators import with_local_cloud
from taxi_assets.files import local_path
from taxi_assets.gcp import storage_client
from taxi_assets.months import Month
from taxi_assets.steps.gcs import upload_record_path
from taxi_assets.stores import object_name
settings = with_local_cloud(Settings.from_env(), bigquery=False)
storage_client(settings).bucket(settings.gcp_bucket).blob(object_name(ds, Month(2024, 1))).delete()
upload_record_path(local_path(settings, ds, Month(2024, 1))).unlink()
"""

# The month as BigQuery holds it, order-independent: run after the chain, in a process of its own.
_FINGERPRINT = r"""
import json
from taxi_assets.config import Settings
from taxi_assets.emulators import with_local_cloud
from taxi_assets.gcp import bigquery_client
from taxi_assets.stores import table_id
from taxi_assets.datasets import TLC_FHVHV as ds
settings = with_local_cloud(Settings.from_env())
sql = (f"SELECT COUNT(*) AS n, COUNT(DISTINCT unique_row_id) AS ids, MIN(unique_row_id) AS lo,"
       f" MAX(unique_row_id) AS hi, ROUND(SUM(base_passenger_fare), 2) AS fares, ROUND(SUM(trip_miles), 2) AS miles,"
       f" COUNT(DISTINCT filename) AS files FROM `{table_id(settings, ds)}` WHERE month = DATE '2024-01-01'")
row = next(iter(bigquery_client(settings).query(sql).result()))
print(json.dumps({k: (str(v) if v is not None else None) for k, v in row.items()}))
"""


def _group(proc: psutil.Process) -> str:
    cmdline = " ".join(proc.cmdline())
    if "fake-gcs-server" in cmdline:
        return "fake-gcs-server"
    if "bqemulator" in cmdline:
        return "bqemulator"
    if proc.name().startswith(("postgres", "pg_ctl")):
        return "postgres"
    return "step"


class GroupSampler(MemorySampler):
    """chain.py's sampler, with the PSS of each kind of process at its own peak and at the
    moment the sum peaked."""

    def __init__(self, *folders: Path, interval: float = 0.2):
        super().__init__(*folders, interval=interval)
        self.current: dict | None = None  # the open window's figures

    @contextlib.contextmanager
    def figures(self):
        self.current = {"peak_pss_mb": 0.0, "peak_machine_mb": 0.0, "at_peak": {}, "own_peak": {}, "samples": 0}
        try:
            with self.window() as peak:
                yield self.current
        finally:
            self.current["peak_machine_mb"] = peak.machine_mb

    def sample(self) -> None:
        super().sample()
        figures = self.current
        if figures is None:
            return
        by_group = dict.fromkeys(GROUPS, 0.0)
        for proc in self.processes().values():
            with contextlib.suppress(psutil.Error):
                by_group[_group(proc)] += proc.memory_full_info().pss / MB
        total = sum(by_group.values())
        with self._lock:
            figures["samples"] += 1
            for name, mb in by_group.items():
                figures["own_peak"][name] = max(figures["own_peak"].get(name, 0.0), mb)
            if total >= figures["peak_pss_mb"]:
                figures["peak_pss_mb"], figures["at_peak"] = total, by_group


def run_chain(rows: int, min_free_mb: float, timeout: float) -> dict:
    """The chain once, on a fresh state folder; what each step took and the results."""
    parquet, _ = tlc_month(rows)
    from taxi_assets.samples.tlc import TlcServer

    state = Path(tempfile.mkdtemp(prefix="taxi-nocloud-bench-"))
    server = TlcServer(parquet.parent, rows=rows, latest=MONTH).start()
    server.served(f"/trip-data/{parquet.name}")  # its md5 (the ETag) now, not during extract
    env = command_env(state, server.url) | {"TAXI_TLC_URL": server.url}
    steps: list[dict] = []
    results: dict = {}
    postgres = None
    setup_mb = machine_used_mb()
    try:
        postgres, _ = hold_postgres(state)
        run_step(env, "gcp-setup")  # starts both emulators, makes the bucket and the dataset (untimed)
        chain = [
            ("extract", ["extract", *STEP_ARGS]),
            ("upload-gcs", ["upload-gcs", *STEP_ARGS]),
            ("load-bigquery", ["load-bigquery", *STEP_ARGS]),
            ("check --store gcs", ["check", "--store", "gcs", *STEP_ARGS]),
            ("check --store bigquery", ["check", "--store", "bigquery", *STEP_ARGS]),
            # again, on emulators that have worked: the object deleted first, the month replaced
            ("upload-gcs (again)", ["upload-gcs", *STEP_ARGS]),
            ("load-bigquery (again)", ["load-bigquery", *STEP_ARGS]),
        ]
        with GroupSampler(state) as sampler:
            for name, args in chain:
                if name == "upload-gcs (again)":
                    subprocess.run([sys.executable, "-c", _FORGET_OBJECT], env=env, cwd=ROOT, check=True)
                with sampler.figures() as figures:
                    result = run_step(env, *args, timeout=timeout, min_free_mb=min_free_mb)
                steps.append({"step": name, **figures, **{k: v for k, v in result.items() if k != "stderr"}})
                print(
                    f"  {name:<24} "
                    + (
                        f"ABORTED ({result['aborted']})"
                        if result.get("aborted")
                        else f"{result['seconds']:7.1f} s, step RSS {result['rss_mb']:5.0f} MB"
                    )
                    + f", summed PSS peak {figures['peak_pss_mb']:,.0f} MB ({_groups(figures['at_peak'])}),"
                    f" machine used {figures['peak_machine_mb']:,.0f} MB",
                    flush=True,
                )
                if result.get("aborted"):
                    break
        if not any(s.get("aborted") for s in steps):
            out = subprocess.run(
                [sys.executable, "-c", _FINGERPRINT], env=env, cwd=ROOT, capture_output=True, text=True, check=True
            )
            results["fingerprint"] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.shutdown()
        tear_down(state, env, postgres)
    for step in steps:
        outputs = step.get("outputs") or {}
        if step["step"].startswith("upload-gcs") and outputs:
            results["object"] = {
                "rows": outputs.get("rows"),
                "bytes": outputs.get("bytes"),
                "crc32c": outputs.get("crc32c"),
            }
        if step["step"].startswith("load-bigquery") and outputs:
            results[f"{step['step']}: rows"] = outputs.get("rows")
        if step["step"].startswith("check") and outputs:
            verdicts = outputs.get("verdicts") or {}
            results[step["step"]] = {name: verdict.get("passed") for name, verdict in verdicts.items()}
    return {
        "date": str(datetime.date.today()),
        "rows": rows,
        "parquet_mb": parquet.stat().st_size / 1e6,
        "setup_mb": setup_mb,
        "steps": steps,
        "results": results,
    }


def _comparable(results: dict) -> dict:
    """The results but the object's bytes (another conversion may make other bytes of the same rows)."""
    found = {k: v for k, v in results.items() if k != "object"}
    if "bigquery rows" in found:  # as an earlier version of this benchmark named it
        found["load-bigquery: rows"] = found.pop("bigquery rows")
    return found


def _groups(by_group: dict) -> str:
    return ", ".join(f"{name} {by_group.get(name, 0):,.0f}" for name in GROUPS)


def _peak(run: dict) -> dict:
    return max(run["steps"], key=lambda s: s["peak_pss_mb"])


def report(say: Report, label: str, run: dict) -> None:
    say(f"{label}: {run['rows']:,} rows, {run['date']} (machine's used memory before set-up {run['setup_mb']:,.0f} MB)")
    say(f"  {'step':<24} {'wall':>9} {'step RSS':>9} {'PSS, all':>9} {'machine':>9}   PSS at the peak of the sum (MB)")
    for step in run["steps"]:
        if step.get("aborted"):
            wall = f"killed: {step['aborted']}"
            say(f"  {step['step']:<24} {wall}; PSS, all {step['peak_pss_mb']:,.0f} MB ({_groups(step['at_peak'])})")
            continue
        say(
            f"  {step['step']:<24} {step['seconds']:7.1f} s {step['rss_mb']:6.0f} MB {step['peak_pss_mb']:6,.0f} MB"
            f" {step['peak_machine_mb']:6,.0f} MB   {_groups(step['at_peak'])}"
        )
    own = {name: max(s["own_peak"].get(name, 0.0) for s in run["steps"]) for name in GROUPS}
    say(f"  each kind of process at its own peak over the chain (PSS MB): {_groups(own)}")
    peak = _peak(run)
    verdict = "ok" if peak["peak_pss_mb"] <= TARGET_MB and not any(s.get("aborted") for s in run["steps"]) else "MISSED"
    say(
        f"  peak of everything the project started: {peak['peak_pss_mb']:,.0f} MB (in {peak['step']});"
        f" target <= {TARGET_MB:,} MB: {verdict}"
    )
    say(f"  results: {json.dumps(run['results'], sort_keys=True)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--min-free-mb", type=float, default=3000, help="kill a step when available memory falls under")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds before a step is given up")
    parser.add_argument("--save", type=Path, help="write this run as JSON (e.g. the 'before' run)")
    parser.add_argument("--before", type=Path, help="a saved run to report as 'before'")
    parser.add_argument("--after", type=Path, help="a saved run to report as 'after', instead of running the chain")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=PATH", help="a saved run, in one line")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name} (default at --rows {REAL_ROWS:,})")
    args = parser.parse_args()
    if args.after:
        run = json.loads(args.after.read_text())
    else:
        print(f"the no-cloud chain at {args.rows:,} fhvhv rows ({ROOT}) ...", flush=True)
        run = run_chain(args.rows, args.min_free_mb, args.timeout)
    if args.save:
        args.save.write_text(json.dumps(run, indent=1))
    say = Report()
    mem_total = int(Path("/proc/meminfo").read_text().split()[1]) / 1024
    say(f"NO-CLOUD PATH, fhvhv {MONTH} ({len(DATASET.columns)} canonical columns), each step a CLI process")
    say(
        f"  {run['rows']:,} generated rows (benchmarks/tlc.py's month): Parquet {run['parquet_mb']:,.0f} MB;"
        f" machine: {os.cpu_count()} cores, {mem_total / 1024:,.1f} GB RAM, shared with other work while this ran"
    )
    say(
        "  PSS, all: summed PSS of the step, the embedded Postgres, fake-gcs-server and bqemulator, sampled every"
        " 0.2 s; machine: MemTotal - MemAvailable at its peak, other people's work included"
    )
    say("")
    before = json.loads(args.before.read_text()) if args.before else None
    if before:
        report(say, "BEFORE", before)
        say("")
    report(say, "AFTER" if before else "THIS RUN", run)
    if before:
        b, a = _peak(before)["peak_pss_mb"], _peak(run)["peak_pss_mb"]
        was, now = _comparable(before["results"]), _comparable(run["results"])
        same = all(was[k] == now[k] for k in was.keys() & now.keys())
        objects = before["results"].get("object", {}), run["results"].get("object", {})
        same = same and objects[0].get("rows") == objects[1].get("rows")
        say("")
        say(
            f"target: peak {a:,.0f} MB / {TARGET_MB:,} MB = {a / TARGET_MB:.2f} (<= 1.00: {'ok' if a <= TARGET_MB else 'MISSED'});"
            f" before {b:,.0f} MB, after / before = {a / b:.2f}"
        )
        say(
            f"results the same (rows, the checks' verdicts, the month's fingerprint in BigQuery): {'yes' if same else 'NO'};"
            f" the object: {objects[0].get('bytes', 0):,} bytes before, {objects[1].get('bytes', 0):,} after"
            + (" (the same bytes)" if objects[0] == objects[1] else " (another Parquet conversion)")
        )
    for label, path in (item.split("=", 1) for item in args.also):
        other = json.loads(Path(path).read_text())
        peak, obj = _peak(other), other["results"].get("object", {})
        own = max(s["own_peak"].get("fake-gcs-server", 0.0) for s in other["steps"])
        say(
            f"also, {label}: peak {peak['peak_pss_mb']:,.0f} MB (in {peak['step']}), fake-gcs-server at most {own:,.0f} MB,"
            f" for an object of {obj.get('bytes', 0):,} bytes"
        )
    say("EMULATOR FIGURES (fake-gcs-server and bqemulator on this machine, not Google Cloud)")
    if args.write or (run["rows"] == REAL_ROWS and not args.save):
        RESULTS.write_text("\n".join(say.lines) + "\n")
        print(f"(written to {RESULTS.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
