"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Variable prefixes of the project's configuration (taxi_assets.config and google-cloud's own).
CONFIG_PREFIXES = ("TAXI_", "GCP_", "STORAGE_", "BIGQUERY_")


def unconfigured_env() -> dict:
    """This environment with no project configuration: the embedded default, as a newcomer has it."""
    return {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_PREFIXES)}


def embedded_default_env(state_dir: Path, source_url: str) -> dict:
    """The embedded default as README command 1 meets it (nothing configured), with the test's
    state folder and release server, and emulator ports of its own (not a user's 4443/9050)."""
    return unconfigured_env() | {
        "TAXI_SOURCE_URL": source_url,
        "TAXI_STATE_DIR": str(state_dir),
        "TAXI_EMULATED_GCS_PORT": str(free_port()),
        "TAXI_EMULATED_BIGQUERY_PORT": str(free_port()),
    }


def kill_processes_under(folder: Path) -> None:
    """Kill what runs from `folder`: the embedded emulators outlive a run by design (like a local
    service), and a test's own must not outlive the test."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        if str(folder) in " ".join(proc.info["cmdline"] or []):
            proc.kill()


PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def run_demo(
    tmp_path: Path, source_url: str, *args: str, command: tuple[str, ...] = (), timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess:
    """README command 1 on the embedded default under `tmp_path`, from `source_url`, with no proxy
    and no DAGSTER_HOME (the demo's own instance folder); `command` replaces `python -m taxi_assets
    demo` (e.g. `python3 dev.py demo`). What it started is stopped afterwards."""
    env = embedded_default_env(tmp_path / "state", source_url) | extra
    env = {k: v for k, v in env.items() if k.lower() not in PROXIES and k != "DAGSTER_HOME"}
    try:
        return subprocess.run(
            [*(command or (sys.executable, "-m", "taxi_assets", "demo")), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        kill_processes_under(tmp_path)


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 30, log: Path | None = None) -> None:
    """Until `url` answers (any HTTP status); fails naming `what` (and the log's tail) if the
    process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{what} did not start" + (f":\n{log.read_text()[-3000:]}" if log else ""), pytrace=False)


def settings_env(settings) -> dict:
    """`settings` as the environment the CLI, Dagster and the Kestra commands read (unset: left out)."""
    from taxi_assets import config

    values = {
        config.SOURCE_URL: settings.source_url,
        config.TLC_URL: settings.tlc_url if settings.tlc_url != config.DEFAULT_TLC_URL else None,
        config.STATE_DIR: str(settings.state_dir),
        config.POSTGRES_DSN: settings.postgres_dsn,
        config.HTTP_BACKOFF: "0.01",
        config.STORAGE_EMULATOR_HOST: settings.storage_emulator,
        config.BIGQUERY_EMULATOR_HOST: settings.bigquery_emulator,
        config.GCP_BUCKET_NAME: settings.gcp_bucket,
        config.GCP_DATASET: settings.gcp_dataset,
    }
    return {k: v for k, v in values.items() if v}


def dagster_resources(settings) -> dict:
    """`settings` as the Dagster resources of the taxi chains (emulator endpoints when set)."""
    from taxi_assets.defs.resources import (
        TaxiBigQueryResource,
        TaxiGcsResource,
        TaxiPostgresResource,
        TaxiSourceResource,
    )

    cloud = {"state_dir": str(settings.state_dir), "bucket": settings.gcp_bucket}
    return {
        "source": TaxiSourceResource(
            source_url=settings.source_url, tlc_url=settings.tlc_url, state_dir=str(settings.state_dir)
        ),
        "postgres": TaxiPostgresResource(dsn=settings.postgres_dsn, state_dir=str(settings.state_dir)),
        "gcs": TaxiGcsResource(emulator_host=settings.storage_emulator or "", **cloud),
        "bigquery": TaxiBigQueryResource(
            emulator_host=settings.bigquery_emulator or "",
            storage_emulator_host=settings.storage_emulator or "",
            dataset=settings.gcp_dataset,
            **cloud,
        ),
    }


def gzip_fixture(name: str, dest: Path, *, crlf: bool = False) -> Path:
    """A fixture CSV gzipped under `dest` (with CRLF line endings if asked)."""
    data = (FIXTURES / name).read_bytes()
    if crlf:
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(dest, "wb") as out:
        out.write(data)
    return dest


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taxi_assets", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def running_bqemulator(gcs_root: Path, log: Path, data_dir: Path | None = None):
    """A bqemulator of its own (in memory, or with a database file in `data_dir` as the embedded
    default runs it) reading gs:// from fake-gcs-server's files under `gcs_root`; its URL."""
    from taxi_assets.emulators import bqemulator_command

    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            bqemulator_command(port, free_port(), "taxi-assets-local", data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "BQEMU_GCS_LOCAL_ROOT": str(gcs_root)},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(
            f"{url}/bigquery/v2/projects/taxi-assets-local/datasets", proc, f"bqemulator (log: {log})", timeout=60
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
