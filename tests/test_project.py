"""The project as a newcomer meets it: the README's two commands, CI, lint, the documented
configuration (docs/configuration.md) and layout (docs/layout.md)."""

from __future__ import annotations

import re
import subprocess
import sys

from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from helpers import ROOT, run_demo, unconfigured_env

from taxi_assets import config
from taxi_assets.definitions import defs

README = (ROOT / "README.md").read_text()


def _readme_command(number: int) -> str:
    match = re.search(rf"^(python3 dev\.py \w+)\s+# {number}\.", README, re.M)
    assert match, f"README command {number} not found"
    return match.group(1)


def test_ci_runs_exactly_the_readme_test_command():
    assert _readme_command(2) == "python3 dev.py test"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_command(2) in ci and "set -euo pipefail" in ci
    assert any(line.strip().startswith(_readme_command(1)) or _readme_command(1) in line for line in ci)


def test_readme_command_1_materializes_a_month_on_the_embedded_default(tmp_path, source_server):
    """`python3 dev.py demo` with nothing configured: embedded Postgres and emulators, whole chain,
    recorded in the Dagster instance the README's UI opens, and nothing printed but what it did."""
    result = run_demo(
        tmp_path, source_server.url, command=("python3", "dev.py", *_readme_command(1).split()[2:]), timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "embedded Postgres" in result.stdout
    assert "green_tripdata: 2,000 rows for 2019-01" in result.stdout
    assert "check rows_match_file: passed" in result.stdout
    assert "green_tripdata (BigQuery emulator): 2,000 rows for 2019-01" in result.stdout
    # It ends with the month's marts: the top 5 pickup zones by revenue, from the revenue mart.
    top = result.stdout.split("Top 5 pickup zones by revenue, 2019-01 (marts_mirror.fct_monthly_zone_revenue):\n")[1]
    zones = top.split("\n\n")[0].splitlines()
    assert len(zones) == 5 and all(
        re.fullmatch(r"  .+ \(.+\), Green: \$[\d,]+\.\d\d from [\d,]+ trips", z) for z in zones
    ), top
    assert (tmp_path / "state" / "postgres" / "PG_VERSION").exists()
    assert (tmp_path / "state" / "emulators" / "gcs").is_dir()
    # Output is what the demo did: no preview warnings from our definitions, no alembic migrations
    # of Dagster's storage, and each log line once.
    output = result.stdout + result.stderr
    assert "Warning" not in output and "alembic" not in output, output
    logged = [line.split(" ", 2)[2] for line in result.stderr.splitlines() if " INFO " in line]
    assert len(logged) == len(set(logged)), result.stderr

    # The instance the README's UI opens (`export DAGSTER_HOME=$(python -m taxi_assets dagster-home)`)
    # is the one the demo recorded into: the month materialized, its checks evaluated.
    home = subprocess.run(
        [sys.executable, "-m", "taxi_assets", "dagster-home"],
        cwd=ROOT,
        env=unconfigured_env() | {"TAXI_STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
    )
    assert home.returncode == 0, home.stderr
    assert home.stdout.strip() == str(tmp_path / "state" / "dagster")
    ui = re.escape(f"DAGSTER_HOME={tmp_path / 'state' / 'dagster'} .venv/bin/") + "(dg|dagster) dev"
    assert re.search(ui, result.stdout.splitlines()[-1]), result.stdout  # the demo's last line says how
    with DagsterInstance.from_config(home.stdout.strip()) as instance:
        marts_run, run = instance.get_runs()  # newest first: the chain, then the month's marts
        for each in (run, marts_run):
            assert each.status == DagsterRunStatus.SUCCESS and each.tags["dagster/partition"] == "2019-01"
        for asset in ("csv", "postgres", "gcs", "bigquery"):
            assert instance.get_materialized_partitions(AssetKey(f"green_trips_{asset}")) == {"2019-01"}
        for mart in ("fct_trips", "fct_monthly_zone_revenue"):
            key = AssetKey(["marts", "postgres", "mirror", mart])
            assert instance.get_materialized_partitions(key) == {"2019-01"}, key
        green_checks = {
            key for key in defs.resolve_asset_graph().asset_check_keys if key.asset_key.path[0].startswith("green_")
        }
        assert len(green_checks) >= 7
        for key in green_checks:
            record = instance.get_latest_asset_check_evaluation_record(key)
            assert record is not None and record.run_id == run.run_id, key
            evaluation = record.event.asset_check_evaluation
            assert evaluation.partition == "2019-01", key
            if key.name in ("rows_match_file", "row_ids_present", "object_matches_local_file", "matches_postgres"):
                assert evaluation.passed, key


def test_every_configuration_variable_is_documented():
    """Every variable of `.env.example`, and the embedded emulators' ports, in docs/configuration.md."""
    example = (ROOT / ".env.example").read_text()
    documented = (ROOT / "docs" / "configuration.md").read_text()
    names = re.findall(r"^([A-Z][A-Z0-9_]+)=", example, re.M)
    for name in (
        config.SOURCE_URL,
        config.STATE_DIR,
        config.POSTGRES_DSN,
        config.HTTP_RETRIES,
        config.HTTP_TIMEOUT,
        config.HTTP_BACKOFF,
    ):
        assert name in names, f"{name} is not in .env.example"
    for name in (*names, "TAXI_EMULATED_GCS_PORT", "TAXI_EMULATED_BIGQUERY_PORT"):
        assert f"`{name}" in documented, f"{name} is not documented in docs/configuration.md"


def test_the_layout_names_every_module():
    """docs/layout.md names each module and package of taxi_assets (and of its samples)."""
    layout = (ROOT / "docs" / "layout.md").read_text()
    package = ROOT / "taxi_assets"
    for folder in (package, package / "samples"):
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(("_", ".")) and entry.name != "__main__.py":
                continue
            if entry.suffix == ".py" or (entry.is_dir() and any(entry.glob("*.py"))):
                name = entry.name + ("/" if entry.is_dir() else "")
                assert re.search(rf"(^|\s){re.escape(name)}", layout, re.M), f"docs/layout.md: no {name}"


def test_ruff_is_clean():
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_steps_do_not_import_dagster():
    """The CLI is what Kestra calls: it must stay free of the orchestrator."""
    code = "import sys, taxi_assets.cli, taxi_assets.steps.extract, taxi_assets.steps.postgres; print('dagster' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_readme_command_1_without_network_ends_in_one_line_saying_what_to_do(tmp_path):
    """The demo's run fails at its first step: no Dagster log or stack trace, the step's own one
    line (what failed, what to do offline), checked before any run: the instance keeps no failed run."""
    result = run_demo(tmp_path, "http://no-such-host.invalid", timeout=120)  # .invalid never resolves
    assert result.returncode == 1
    assert result.stdout.startswith("Materializing green 2019-01 from http://no-such-host.invalid")
    assert len(result.stdout.splitlines()) == 1, result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("error: green 2019-01: cannot resolve no-such-host.invalid"), line
    assert "TAXI_SOURCE_URL" in line
    with DagsterInstance.from_config(str(tmp_path / "state" / "dagster")) as instance:
        assert instance.get_runs() == []


def test_an_unexpected_failure_of_the_demo_names_the_step_the_error_and_the_log(tmp_path):
    from dagster import job, op

    from taxi_assets.demo import failure_line
    from taxi_assets.months import Month

    @op
    def load():
        raise ValueError("no good\n  at all")

    @job
    def chain():
        load()

    with DagsterInstance.ephemeral() as instance:
        result = chain.execute_in_process(instance=instance, raise_on_error=False)
    assert failure_line(result, "green_trips_job", Month(2019, 1), tmp_path) == (
        f"the green_trips_job run for 2019-01 failed in load: ValueError: no good at all (the whole log: run "
        f"{result.run_id[:8]} in the Dagster instance at {tmp_path}, or `python -m taxi_assets -v demo` prints it here)"
    )


# docs/contributing.md: commit subjects are at most 72 characters, the detail in the body. The
# rule holds from this commit time on (older history is as it was); by date, so a shallow clone
# checks what it has.
SUBJECT_RULE_SINCE = "2026-12-05T20:30:00+00:00"
SUBJECT_MAX = 72


def test_commit_subjects_are_at_most_72_characters():
    log = subprocess.run(
        ["git", "log", f"--since={SUBJECT_RULE_SINCE}", "--format=%h %s"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert log.returncode == 0, f"git log failed (is this a git checkout?): {log.stderr.strip()}"
    long = [line for line in log.stdout.splitlines() if len(line.split(" ", 1)[1]) > SUBJECT_MAX]
    assert long == [], f"commit subjects over {SUBJECT_MAX} characters: {long}"
