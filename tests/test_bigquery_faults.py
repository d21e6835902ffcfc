"""load-bigquery when BigQuery fails under it: a dead or hung endpoint ends the step within bounds
of its own, saying so while it waits; SIGTERM ends it at once; the scratch tables of dead loads
are dropped by the month's next load."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from google.cloud import bigquery
from helpers import ROOT, free_port, run_cli, settings_env, wait_http

from taxi_assets import config
from taxi_assets.datasets import GREEN
from taxi_assets.emulators import bqemulator_command
from taxi_assets.errors import LoadError
from taxi_assets.gcp import bigquery_client
from taxi_assets.months import Month
from taxi_assets.steps import bigquery as step
from taxi_assets.steps.bigquery import ensure_table, load_bigquery, month_rows, schema
from taxi_assets.steps.extract import extract
from taxi_assets.steps.gcp_setup import ensure_dataset
from taxi_assets.steps.gcs import ensure_bucket, upload_gcs
from taxi_assets.stores import object_name, table_id

JAN, FEB = Month(2019, 1), Month(2019, 2)
LOAD = ("load-bigquery", "--taxi", "green", "--month", "2019-01")


@pytest.fixture
def uploaded(gcs_settings):
    """Settings whose bucket holds January's object; BigQuery is the test's to choose."""
    ensure_bucket(gcs_settings)
    info = extract(gcs_settings, GREEN, JAN)
    upload_gcs(gcs_settings, GREEN, JAN, Path(info.path))
    return replace(gcs_settings, gcp_dataset="ds_" + gcs_settings.gcp_bucket.replace("-", "_"))


@pytest.fixture
def hanging_emulator(uploaded, tmp_path):
    """A bqemulator of the test's own whose load of January hangs, as a long load runs: it reads
    gs:// objects from a folder of its own, where January's is a FIFO nobody writes."""
    objects, port = tmp_path / "bq-objects", free_port()
    fifo = objects / uploaded.gcp_bucket / object_name(GREEN, JAN)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    log = tmp_path / "bqemulator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            bqemulator_command(port, free_port(), uploaded.gcp_project),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "BQEMU_GCS_LOCAL_ROOT": str(objects)},
        )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/bigquery/v2/projects/{uploaded.gcp_project}/datasets", proc, "bqemulator", timeout=60, log=log)
    settings = replace(uploaded, bigquery_emulator=url)
    ensure_dataset(settings)
    yield settings, proc
    proc.kill()
    proc.wait(10)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _start_load(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "taxi_assets", *LOAD],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until_busy(url: str, project: str) -> None:
    """Until the emulator stops answering: it is inside the load job (it serves one at a time)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/bigquery/v2/projects/{project}/datasets", timeout=1).close()
            time.sleep(0.1)
        except OSError:
            return
    pytest.fail("the load never reached the emulator")


def test_a_dead_endpoint_fails_within_the_bound_in_one_line(uploaded):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    env = {**settings_env(replace(uploaded, bigquery_emulator=endpoint)), config.BIGQUERY_TIMEOUT: "5"}
    started = time.monotonic()
    result = run_cli(*LOAD, env=env, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert _errors(result.stderr) == [
        f"error: green 2019-01: BigQuery at {endpoint} did not answer for 5 s (connection refused); previous rows kept"
    ], result.stderr
    assert f"BigQuery at {endpoint} does not answer (connection refused); trying again for up to 5 s" in result.stderr
    assert took < 20, took  # not the client's 10 minutes of retries


def test_an_emulator_killed_mid_load_fails_within_the_bound(hanging_emulator):
    settings, emulator = hanging_emulator
    url = settings.bigquery_emulator
    load = _start_load({**settings_env(settings), config.BIGQUERY_TIMEOUT: "5"})
    _until_busy(url, settings.gcp_project)
    emulator.kill()
    killed = time.monotonic()
    _, stderr = load.communicate(timeout=60)
    took = time.monotonic() - killed
    assert load.returncode == 1, stderr
    errors = _errors(stderr)
    assert len(errors) == 1 and re.fullmatch(
        rf"error: green 2019-01: BigQuery at {url} did not answer for 5 s \(connection \w+\); previous rows kept",
        errors[0],
    ), stderr
    assert f"BigQuery at {url} does not answer (connection" in stderr  # said while it waited
    assert took < 20, took


def test_a_job_that_runs_too_long_says_so_while_waiting_and_gives_up(hanging_emulator, monkeypatch, caplog):
    settings, _ = hanging_emulator
    settings = replace(settings, bigquery_timeout=3)
    monkeypatch.setattr(step, "HEARTBEAT", 1.0)
    info = extract(settings, GREEN, JAN)
    started = time.monotonic()
    with caplog.at_level("INFO", logger=step.__name__), pytest.raises(LoadError) as err:
        load_bigquery(settings, GREEN, JAN, info)
    assert str(err.value) == (
        f"green 2019-01: the BigQuery load job did not finish within 3 s ({config.BIGQUERY_TIMEOUT}); previous rows kept"
    )
    assert "waiting for BigQuery: load job (1 s)" in caplog.messages
    assert time.monotonic() - started < 20


def test_sigterm_ends_a_load_waiting_on_a_silent_endpoint_at_once(uploaded):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(60)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        load = _start_load(settings_env(replace(uploaded, bigquery_emulator=endpoint)))  # default bounds: minutes
        conn, _ = silent.accept()
        conn.settimeout(30)
        assert conn.recv(1, socket.MSG_PEEK), "the load never sent its request"  # it now waits for the answer
        load.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = load.communicate(timeout=30)
        took = time.monotonic() - sent
        conn.close()
    assert load.returncode == 130, stderr
    assert _errors(stderr) == ["error: interrupted; nothing half-done was kept"], stderr
    assert took < 5, took


def test_the_next_load_drops_the_scratch_tables_of_dead_loads_of_its_month_only(uploaded, bq_emulator):
    settings = replace(uploaded, bigquery_emulator=bq_emulator)
    ensure_dataset(settings)
    client = bigquery_client(settings)
    ensure_table(client, settings, GREEN)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a load killed with SIGKILL: its process is gone
    uri = f"gs://{settings.gcp_bucket}/{object_name(GREEN, JAN)}"

    def scratch(month: Month, pid: int, holding_rows: bool) -> str:
        """A scratch table as a load of `month` by process `pid` on this host makes it."""
        name = f"{table_id(settings, GREEN)}__load_{month.year:04d}{month.month:02d}_{pid:08x}"
        table = bigquery.Table(name, schema=schema(GREEN))
        table.labels = {"taxi_assets_host": step._this_host(), "taxi_assets_pid": str(pid)}
        client.create_table(table)
        if holding_rows:
            config_ = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET)
            client.load_table_from_uri(uri, name, job_config=config_).result()
        return name.rsplit(".", 1)[1]

    dead_jan = scratch(JAN, gone.pid, holding_rows=True)
    live_jan = scratch(JAN, os.getpid(), holding_rows=False)  # a load of January running at once
    dead_feb = scratch(FEB, gone.pid, holding_rows=True)
    assert month_rows(client, settings, GREEN, JAN) == 0

    result = run_cli(*LOAD, env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert f"dropping {dead_jan}, left by a load of 2019-01 that did not finish" in result.stderr
    tables = {t.table_id for t in client.list_tables(f"{settings.gcp_project}.{settings.gcp_dataset}")}
    assert tables == {"green_tripdata", "taxi_loads", live_jan, dead_feb}
    assert month_rows(client, settings, GREEN, JAN) == 2_000
