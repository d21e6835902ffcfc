"""TAXI_EMBEDDED=0, the stack's setting: a missing or empty DSN, or no cloud configured, is one
clear error, never an embedded Postgres or emulator that would turn the mistake into a success.
Without it (a newcomer's machine) an empty DSN still means the embedded default."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from helpers import ROOT, free_port, unconfigured_env

from taxi_assets import database
from taxi_assets.config import Settings
from taxi_assets.emulators import with_local_cloud
from taxi_assets.errors import ConfigError

STACK = {"TAXI_EMBEDDED": "0"}


def step(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taxi_assets", *args],
        env=unconfigured_env() | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_the_setting_an_empty_dsn_is_the_embedded_default():
    settings = Settings.from_env({"TAXI_POSTGRES_DSN": "  "})
    assert (settings.postgres_dsn, settings.embedded) == (None, True)


@pytest.mark.parametrize("value", ["", " ", "\n"])
def test_in_a_stack_an_empty_dsn_is_an_error(value):
    with pytest.raises(ConfigError, match=r"TAXI_POSTGRES_DSN is empty .* TAXI_EMBEDDED=0"):
        Settings.from_env(STACK | {"TAXI_POSTGRES_DSN": value})


def test_an_unknown_value_of_the_setting_is_an_error_not_a_guess():
    with pytest.raises(ConfigError, match="TAXI_EMBEDDED must be 0"):
        Settings.from_env({"TAXI_EMBEDDED": "off-ish"})


def test_in_a_stack_no_dsn_starts_no_embedded_postgres(tmp_path, monkeypatch):
    """Settings built field by field (as the Dagster Postgres resource builds them) obey the
    process environment too."""
    monkeypatch.setenv("TAXI_EMBEDDED", "0")
    settings = Settings(state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match="TAXI_POSTGRES_DSN is not set and TAXI_EMBEDDED=0"):
        database.connect(settings)
    assert not (tmp_path / "state").exists()


def test_in_a_stack_no_cloud_configured_starts_no_emulator(tmp_path):
    settings = Settings.from_env(STACK | {"TAXI_STATE_DIR": str(tmp_path / "state")})
    with pytest.raises(ConfigError, match="no GCP_PROJECT_ID nor STORAGE_EMULATOR_HOST and BIGQUERY_EMULATOR_HOST"):
        with_local_cloud(settings)
    with pytest.raises(ConfigError, match="no GCP_PROJECT_ID nor BIGQUERY_EMULATOR_HOST set"):
        with_local_cloud(replace(settings, storage_emulator="http://fake-gcs:4443"))
    assert not (tmp_path / "state").exists()
    given = replace(settings, storage_emulator="http://fake-gcs:4443", bigquery_emulator="http://bigquery:9050")
    assert with_local_cloud(given) == given
    assert with_local_cloud(replace(settings, gcp_configured=True)).storage_emulator is None


def test_load_postgres_with_an_empty_dsn_fails_at_once_and_starts_nothing(tmp_path):
    """What a Kestra task gets from an empty secret: the step stops before anything else (the
    release server here does not even exist), in one line."""
    state = tmp_path / "state"
    env = STACK | {
        "TAXI_POSTGRES_DSN": "",
        "TAXI_STATE_DIR": str(state),
        "TAXI_SOURCE_URL": f"http://127.0.0.1:{free_port()}",
    }
    result = step("load-postgres", "--taxi", "green", "--month", "2019-01", env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: TAXI_POSTGRES_DSN is empty (an empty secret or .env value?) and TAXI_EMBEDDED=0 starts"
        " no embedded Postgres: give it the taxi-data Postgres's DSN"
    ]
    assert not state.exists()


def test_load_postgres_with_no_dsn_starts_no_embedded_postgres(tmp_path, source_server):
    state = tmp_path / "state"
    env = STACK | {"TAXI_STATE_DIR": str(state), "TAXI_SOURCE_URL": source_server.url}
    result = step("load-postgres", "--taxi", "green", "--month", "2019-01", env=env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.splitlines()[-1]]
    assert errors[0].startswith("error: TAXI_POSTGRES_DSN is not set and TAXI_EMBEDDED=0 starts no embedded Postgres")
    assert not (state / "postgres").exists()


def test_a_cloud_step_with_nothing_configured_starts_no_emulator(tmp_path):
    state = tmp_path / "state"
    result = step("gcp-setup", env=STACK | {"TAXI_STATE_DIR": str(state)})
    assert result.returncode == 1
    assert result.stderr.startswith("error: no GCP_PROJECT_ID nor STORAGE_EMULATOR_HOST")
    assert len(result.stderr.splitlines()) == 1
    assert not state.exists()
