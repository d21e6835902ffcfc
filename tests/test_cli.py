"""`python -m taxi_assets`: what Kestra calls. Help, outputs lines, one-line errors."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli, settings_env

from taxi_assets import config
from taxi_assets.cli import COMMANDS, MONTH_STEPS


def _kestra_lines(stdout: str) -> dict:
    found = {}
    for line in stdout.splitlines():
        if line.startswith("::{") and line.endswith("}::"):
            found.update(json.loads(line[2:-2]))
    return found


@pytest.mark.parametrize("step", sorted(COMMANDS))
def test_every_step_has_help(step):
    result = run_cli(step, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: python -m taxi_assets {step}")
    about_a_month = "--taxi" in result.stdout and "--month" in result.stdout
    assert about_a_month == (step in (*MONTH_STEPS, "demo")), result.stdout


def test_extract_prints_kestra_outputs_and_metrics(settings):
    result = run_cli("extract", "--taxi", "green", "--month", "2019-03", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    lines = _kestra_lines(result.stdout)
    assert lines["outputs"]["file"] == "green_tripdata_2019-03.csv.gz"
    assert lines["outputs"]["data_lines"] == 2_000
    assert {m["name"]: m["value"] for m in lines["metrics"]}["data_lines"] == 2_000
    assert all(m["tags"] == {"source": "mirror", "taxi": "green", "month": "2019-03"} for m in lines["metrics"])


def test_load_postgres_downloads_loads_and_reports(settings, pg):
    result = run_cli("load-postgres", "--taxi", "yellow", "--month", "2019-02", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    outputs = _kestra_lines(result.stdout)["outputs"]
    assert outputs["rows_loaded"] == 2_000 and outputs["table"] == "yellow_tripdata"
    assert outputs["duplicate_rows"] > 0 and outputs["out_of_month_rows"] > 0
    assert pg.execute("SELECT count(*) FROM yellow_tripdata").fetchone()[0] == 2_000


def _step(settings, step: str, taxi: str, month: str) -> tuple[dict, str]:
    """Run one step as a Kestra task does; its outputs/metrics lines and its stderr."""
    result = run_cli(step, "--taxi", taxi, "--month", month, env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    return _kestra_lines(result.stdout), result.stderr


def test_purge_download_reports_what_it_freed_and_a_second_run_is_a_no_op(settings):
    extracted, _ = _step(settings, "extract", "green", "2019-04")
    folder = settings.download_dir / "green"
    on_disk = sum(p.stat().st_size for p in folder.iterdir())
    purged, _ = _step(settings, "purge-download", "green", "2019-04")
    assert purged["outputs"] == {
        "folder": str(folder),
        "removed": [
            "green_tripdata_2019-04.csv.gz.json",
            "green_tripdata_2019-04.csv.gz",
            "green_tripdata_2019-04.row_ids",
        ],
        "bytes_freed": on_disk,
    }
    assert on_disk > extracted["outputs"]["bytes"] and list(folder.iterdir()) == []
    assert purged["metrics"] == [
        {
            "name": "bytes_freed",
            "type": "counter",
            "value": on_disk,
            "tags": {"source": "mirror", "taxi": "green", "month": "2019-04"},
        }
    ]
    again, stderr = _step(settings, "purge-download", "green", "2019-04")
    assert again["outputs"] == {"folder": str(folder), "removed": [], "bytes_freed": 0}
    assert "green 2019-04: nothing downloaded to purge" in stderr


def test_after_a_purge_the_month_downloads_again_and_loads_into_postgres(settings, pg):
    _step(settings, "load-postgres", "green", "2019-05")  # the flow: load the month, then purge it
    _step(settings, "purge-download", "green", "2019-05")
    extracted, _ = _step(settings, "extract", "green", "2019-05")
    assert extracted["outputs"]["downloaded"] is True
    loaded, _ = _step(settings, "load-postgres", "green", "2019-05")
    assert loaded["outputs"]["rows_loaded"] == 2_000
    assert pg.execute("SELECT count(*) FROM green_tripdata").fetchone()[0] == 2_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["extract", "--taxi", "green", "--month", "2021-08"], "error: green 2021-08 is not published"),
        (["extract", "--taxi", "green", "--month", "2019-1"], "month must look like YYYY-MM"),
        (["extract", "--taxi", "blue", "--month", "2019-01"], "invalid choice: 'blue'"),
    ],
)
def test_failures_exit_non_zero_with_one_line(settings, args, message):
    result = run_cli(*args, env=settings_env(settings))
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr and "::{" not in result.stdout


def test_an_unreachable_database_is_one_line_without_the_password(settings):
    env = {**settings_env(settings), config.POSTGRES_DSN: "postgresql://taxi:s3cret@127.0.0.1:1/ny_taxi"}
    result = run_cli("load-postgres", "--taxi", "green", "--month", "2019-01", env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1
    assert "cannot connect to Postgres at 127.0.0.1:1/ny_taxi" in errors[0]
    assert "s3cret" not in result.stderr + result.stdout


def test_a_malformed_dsn_is_one_line_without_the_password(settings):
    env = {**settings_env(settings), config.POSTGRES_DSN: "postgresql://taxi:pa%ZZss-s3cret@db:5432/ny_taxi"}
    result = run_cli("load-postgres", "--taxi", "green", "--month", "2019-01", env=env)
    assert result.returncode == 1
    assert "TAXI_POSTGRES_DSN is not a valid Postgres DSN" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_schedule_month_gives_kestra_the_month_just_ended_or_the_month_given():
    tick = "2019-03-01T09:00-05:00[America/New_York]"  # as Kestra renders a trigger date
    assert _kestra_lines(run_cli("schedule-month", "--tick", tick).stdout) == {
        "outputs": {"month": "2019-02"},
        "metrics": [],
    }
    given = run_cli("schedule-month", "--tick", tick, "--month", "2019-07")
    assert _kestra_lines(given.stdout)["outputs"] == {"month": "2019-07"}
    bad = run_cli("schedule-month", "--tick", "soon")
    assert bad.returncode == 2 and "not an ISO date-time: 'soon'" in bad.stderr


def test_purge_download_keeps_the_file_when_told_to(settings):
    _step(settings, "extract", "green", "2019-04")
    kept = run_cli(
        "purge-download",
        "--taxi",
        "green",
        "--month",
        "2019-04",
        env={**settings_env(settings), config.KEEP_DOWNLOADS: "1"},
    )
    assert kept.returncode == 0 and _kestra_lines(kept.stdout)["outputs"]["removed"] == []
    assert (settings.download_dir / "green" / "green_tripdata_2019-04.csv.gz").is_file()
    assert "TAXI_KEEP_DOWNLOADS" in kept.stderr
