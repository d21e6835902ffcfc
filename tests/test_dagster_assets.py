"""The Dagster layer in-process: definitions, partitions, schedules, materializations, checks."""

from __future__ import annotations

import importlib
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from helpers import dagster_resources

from taxi_assets import config
from taxi_assets.datasets import DATASETS, GREEN
from taxi_assets.definitions import defs
from taxi_assets.defs import checks
from taxi_assets.defs.assets import build_taxi_chain
from taxi_assets.defs.checks import build_bigquery_checks, build_gcs_check, build_postgres_checks
from taxi_assets.months import Month


def test_definitions_load_with_one_chain_and_job_per_taxi_type():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    chains = {f"{t}_trips_{s}" for t in DATASETS for s in ("csv", "postgres", "gcs", "bigquery")}
    assert keys == chains | {"products", "avg_price_by_brand"}
    for taxi in DATASETS:
        job = defs.resolve_job_def(f"{taxi}_trips_job")
        partition_keys = job.partitions_def.get_partition_keys()
        assert (len(partition_keys), partition_keys[0], partition_keys[-1]) == (31, "2019-01", "2021-07")


def test_schedules_request_the_month_just_ended():
    schedule = defs.resolve_schedule_def("yellow_trips_monthly")
    tick = datetime(2019, 3, 1, 10, 0, tzinfo=ZoneInfo("America/New_York"))
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2019-02"]
    assert schedule.cron_schedule == "0 10 1 * *"


def test_schedules_skip_months_past_the_published_range_saying_why():
    schedule = defs.resolve_schedule_def("green_trips_monthly")
    tick = datetime(2021, 9, 1, 9, 0, tzinfo=ZoneInfo("America/New_York"))  # August 2021: never published
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        result = schedule.evaluate_tick(context)
    assert not result.run_requests
    assert "green 2021-08 is not published" in result.skip_message


def test_resources_read_the_environment_through_envvar(monkeypatch):
    import taxi_assets.definitions as module

    monkeypatch.setenv(config.POSTGRES_DSN, "postgresql://u:secret@db/ny_taxi")
    reloaded = importlib.reload(module).defs
    try:
        assert isinstance(reloaded.resources["postgres"].dsn, dg.EnvVar)  # resolved per run, never shown
    finally:
        monkeypatch.delenv(config.POSTGRES_DSN)
        importlib.reload(module)


def test_materializing_a_partition_loads_the_month_and_runs_its_checks(cloud_settings, pg):
    settings = cloud_settings
    result = dg.materialize(
        [*build_taxi_chain(GREEN), build_postgres_checks(GREEN), build_gcs_check(GREEN), build_bigquery_checks(GREEN)],
        partition_key="2019-02",
        resources=dagster_resources(settings),
    )
    assert result.success
    pg_meta = result.asset_materializations_for_node("green_trips_postgres")[0].metadata
    assert pg_meta["dagster/row_count"].value == 2_000
    assert [c.name for c in pg_meta["dagster/column_schema"].value.columns][:3] == [
        "unique_row_id",
        "filename",
        "vendorid",
    ]
    assert "| unique_row_id |" in pg_meta["preview"].value
    csv_meta = result.asset_materializations_for_node("green_trips_csv")[0].metadata
    assert csv_meta["size_bytes"].value > 0 and len(csv_meta["sha256"].value) == 64
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations[checks.ROWS_MATCH_FILE].passed and evaluations[checks.ROW_IDS_PRESENT].passed
    # The generated month has duplicates and late rows, like the real ones: warnings, not failures.
    for name in (checks.NO_DUPLICATE_ROWS, checks.PICKUPS_IN_MONTH):
        assert not evaluations[name].passed and evaluations[name].severity == dg.AssetCheckSeverity.WARN
    assert (
        pg.execute("SELECT count(*) FROM green_tripdata WHERE filename = 'green_tripdata_2019-02.csv.gz'").fetchone()[0]
        == 2_000
    )


def test_the_check_query_sees_a_tampered_month(settings, pg):
    """The checks count the table itself; they do not repeat what the load reported."""
    chain = build_taxi_chain(GREEN)[:2]  # csv -> postgres
    assert dg.materialize(chain, partition_key="2019-05", resources=dagster_resources(settings)).success
    pg.execute("DELETE FROM green_tripdata WHERE ctid IN (SELECT ctid FROM green_tripdata LIMIT 3)")
    pg.execute("UPDATE green_tripdata SET unique_row_id = NULL WHERE ctid IN (SELECT ctid FROM green_tripdata LIMIT 2)")
    profile = checks.month_profile(pg, GREEN, Month(2019, 5))
    assert profile["rows"] == 1_997 and profile["null_row_ids"] == 2


@pytest.mark.parametrize("taxi", sorted(DATASETS))
def test_every_job_selects_its_whole_chain(taxi):
    job = defs.resolve_job_def(f"{taxi}_trips_job")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert keys == {f"{taxi}_trips_{step}" for step in ("csv", "postgres", "gcs", "bigquery")}
