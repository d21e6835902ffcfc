"""The first hour offline, as the README leads it: the sample release server answers what the
real host answers (HEAD too), and the Dagster UI the demo's last line starts reads the same
source and stores the demo did."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from helpers import ROOT, embedded_default_env, free_port, kill_processes_under, run_cli, settings_env, unconfigured_env

from taxi_assets import config
from taxi_assets.errors import ConfigError
from taxi_assets.months import MIRROR_LAST_MONTH


@pytest.fixture
def sample_server(tmp_path):
    """The README's sample server, started as the README says (a process of its own)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "taxi_assets.samples.mirror_server", "--dir", str(tmp_path / "release")]
        + ["--port", str(port), "--rows", "2000"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith("serving "), "the sample server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_sample_server_answers_head_as_the_release_host_does(sample_server):
    url = f"{sample_server}/green/green_tripdata_2019-03.csv.gz"
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Type"] == "application/gzip"
    get = requests.get(url, timeout=30)
    assert get.status_code == 200 and int(head.headers["Content-Length"]) == len(get.content) > 0
    assert {k: v for k, v in head.headers.items() if k != "Date"} == {
        k: v for k, v in get.headers.items() if k != "Date"
    }
    for unknown in ("green/green_tripdata_2022-01.csv.gz", "green/yellow_tripdata_2019-01.csv.gz", "nothing"):
        answer = requests.head(f"{sample_server}/{unknown}", timeout=30)
        assert answer.status_code == 404 and answer.content == b"", unknown


def test_newest_month_finds_the_sample_servers_last_month(sample_server, cloud_settings):
    env = settings_env(cloud_settings) | {"TAXI_SOURCE_URL": sample_server}
    result = run_cli("newest-month", "--taxi", "green", env=env)
    assert result.returncode == 0, result.stderr
    [outputs] = [json.loads(line[2:-2])["outputs"] for line in result.stdout.splitlines() if '"outputs"' in line]
    assert outputs["month"] == str(MIRROR_LAST_MONTH) == "2021-07"
    assert outputs["url"] == f"{sample_server}/green/green_tripdata_2021-07.csv.gz"
    assert outputs["bytes"] > 0 and outputs["loaded"] is False
    assert "error" not in result.stderr


def _ui_line(stdout: str) -> tuple[dict[str, str], Path]:
    """The demo's last line, as a user pastes it: (its variables, the tool) from
    `[cd PROJECT &&] VAR=value ... TOOL dev`."""
    words = shlex.split(stdout.splitlines()[-1])
    if words[0] == "cd":
        assert Path(words[1]) == ROOT and words[2] == "&&", words
        words = words[3:]
    *assignments, tool, command = words
    assert command == "dev", words
    return dict(word.split("=", 1) for word in assignments), ROOT / tool


@pytest.mark.slow
def test_the_ui_the_demo_names_runs_offline_from_the_same_source_and_stores(tmp_path, source_server):
    """`TAXI_SOURCE_URL=http://127.0.0.1:8765 python3 dev.py demo` offline, then its last line in
    another shell (no TAXI_* there): a run launched in that code location (as the UI's
    Materialize button does) reads the sample server and writes to the demo's stores."""
    env = embedded_default_env(tmp_path / "state", source_server.url)
    env.pop("DAGSTER_HOME", None)
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "taxi_assets", "demo"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        variables, tool = _ui_line(demo.stdout)
        assert variables == {
            "TAXI_SOURCE_URL": source_server.url,
            "TAXI_STATE_DIR": env["TAXI_STATE_DIR"],
            "TAXI_EMULATED_GCS_PORT": env["TAXI_EMULATED_GCS_PORT"],
            "TAXI_EMULATED_BIGQUERY_PORT": env["TAXI_EMULATED_BIGQUERY_PORT"],
            "DAGSTER_HOME": str(tmp_path / "state" / "dagster"),
        }
        assert tool.name == "dg" and tool.is_file()
        # The UI's shell: nothing of the project's configuration but what the line says.
        ui_env = unconfigured_env() | variables
        launch = [str(tool), "launch", "--assets", "group:green_taxi", "--partition", "2019-02"]
        run = subprocess.run(launch, cwd=ROOT, env=ui_env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        kill_processes_under(tmp_path)
    assert (tmp_path / "state" / "downloads" / "green" / "green_tripdata_2019-02.csv.gz").is_file()
    with DagsterInstance.from_config(variables["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS] * 3  # the demo's chain and marts, the launch
        assert {r.tags["dagster/partition"] for r in runs} == {"2019-01", "2019-02"}
        for asset in ("csv", "postgres", "gcs", "bigquery"):
            key = AssetKey(f"green_trips_{asset}")
            assert instance.get_materialized_partitions(key) == {"2019-01", "2019-02"}, asset


def test_the_ui_line_carries_no_secret_and_no_default(monkeypatch, tmp_path):
    from taxi_assets.demo import ui_command

    for name in list(os.environ):
        if name.startswith(("TAXI_", "GCP_", "STORAGE_", "BIGQUERY_")) or name == "DAGSTER_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("TAXI_SOURCE_URL", "https://user:token@example.com/releases")
    monkeypatch.setenv("TAXI_TLC_URL", "http://127.0.0.1:8766/trip-data")
    monkeypatch.setenv("TAXI_STATE_DIR", "~/.local/share/taxi-assets")  # the default: not repeated
    monkeypatch.setenv("TAXI_POSTGRES_DSN", "postgresql://root:secret@localhost:5433/ny_taxi")
    monkeypatch.setenv("GCP_CREDENTIALS", '{"private_key": "secret"}')
    monkeypatch.setenv("TAXI_EMULATED_GCS_PORT", "14443")
    line, note = ui_command(tmp_path).splitlines()
    assert "secret" not in line + note and "token" not in line + note
    assert line.endswith(
        f"TAXI_TLC_URL=http://127.0.0.1:8766/trip-data TAXI_EMULATED_GCS_PORT=14443 DAGSTER_HOME={tmp_path} .venv/bin/dg dev"
    )
    assert "TAXI_STATE_DIR" not in line
    assert note == "  (with your TAXI_SOURCE_URL too, not shown here: set it in .env or the environment)"


@pytest.mark.parametrize("name", ["TAXI_EMULATED_GCS_PORT", "TAXI_EMULATED_BIGQUERY_PORT"])
def test_an_emulator_port_is_a_number_or_empty(name):
    assert config.emulated_port(name, {name: ""}) == config.DEFAULT_EMULATED_PORTS[name]
    assert config.emulated_port(name, {name: "14443"}) == 14443
    with pytest.raises(ConfigError, match=f"^{name} must be an integer, got '44x3'$"):
        config.emulated_port(name, {name: "44x3"})
