"""The TLC feeds in Dagster: a chain per feed with the mirror's checks, monthly partitions from
each feed's first month, and the sensor that asks the source for new and re-published months."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pytest
from helpers import dagster_resources

from taxi_assets import checks, ledger
from taxi_assets.datasets import TLC_DATASETS
from taxi_assets.definitions import defs
from taxi_assets.defs.assets import build_taxi_chain
from taxi_assets.defs.checks import build_bigquery_checks, build_gcs_check, build_postgres_checks
from taxi_assets.defs.sensors import MAX_ATTEMPTS, loaded_files
from taxi_assets.gcp import bigquery_client
from taxi_assets.months import Month, month_just_ended
from taxi_assets.samples.tlc import TlcServer
from taxi_assets.steps.extract import extract
from taxi_assets.steps.gcp_setup import ensure_dataset

ROWS = 300
NOW = month_just_ended(datetime.now(timezone.utc)).next()  # this month, in New York


@pytest.fixture
def tlc_server(tmp_path):
    server = TlcServer(tmp_path / "trip-data", rows=ROWS, latest=NOW.previous().previous()).start()
    yield server
    server.shutdown()


def test_each_feed_has_a_chain_a_job_and_a_sensor_with_partitions_from_its_first_month():
    for feed, first in (("yellow", "2009-01"), ("green", "2014-01"), ("fhv", "2015-01"), ("fhvhv", "2019-02")):
        job = defs.resolve_job_def(f"tlc_{feed}_trips_job")
        keys = job.partitions_def.get_partition_keys()
        assert (keys[0], keys[-1]) == (first, str(NOW.previous()))  # up to the month just ended
        sensor = defs.resolve_sensor_def(f"tlc_{feed}_published_months")
        assert sensor.job_name == job.name and sensor.default_status == dg.DefaultSensorStatus.STOPPED
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys() if "tlc_fhvhv" in k.to_user_string()} == {
        "tlc_fhvhv_trips_parquet",
        "tlc_fhvhv_trips_postgres",
        "tlc_fhvhv_trips_gcs",
        "tlc_fhvhv_trips_bigquery",
    }


def test_a_tlc_month_materializes_with_every_check_passing_and_the_sensor_moves_on(cloud_settings, tlc_server):
    settings = replace(cloud_settings, tlc_url=tlc_server.url)
    ds = TLC_DATASETS["fhvhv"]  # 2019-02: airport_fee and wav_match_flag typed null
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [*build_taxi_chain(ds), build_postgres_checks(ds), build_gcs_check(ds), build_bigquery_checks(ds)],
        partition_key="2019-02",
        resources=dagster_resources(settings),
        instance=instance,
    )
    assert result.success
    assert result.asset_materializations_for_node("tlc_fhvhv_trips_postgres")[0].metadata[
        "dagster/row_count"
    ].value == (ROWS)
    meta = result.asset_materializations_for_node("tlc_fhvhv_trips_parquet")[0].metadata
    assert meta["etag"].value.startswith('"') and meta["size_bytes"].value > 0
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    assert len(evaluations) == 7 and all(e.passed for e in evaluations.values()), {
        k: e.metadata for k, e in evaluations.items() if not e.passed
    }
    assert evaluations[("tlc_fhvhv_trips_bigquery", checks.MATCHES_POSTGRES)].metadata["postgres"].value["rows"] == ROWS
    # The run's loads are what the sensor reads: it asks for the next month.
    tick = _tick(defs.resolve_sensor_def("tlc_fhvhv_published_months"), instance, settings)
    assert [r.partition_key for r in tick.run_requests] == ["2019-03"]
    instance.dispose()


def _loaded_files(settings, ds):
    resources = dagster_resources(settings)
    return loaded_files(resources["postgres"], resources["bigquery"].settings(), ds)


def _tick(sensor, instance, settings, cursor=None):
    resources = {k: v for k, v in dagster_resources(settings).items() if k in ("source", "postgres", "bigquery")}
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, repository_def=defs.get_repository_def()
    ) as context:
        result = sensor.evaluate_tick(context)
    return result


def _loaded(settings, ds, month: Month, stores=ledger.STORES, *, revalidate=False) -> None:
    """Record a month in the stores' ledgers as loaded from the file the server has now, as a
    load by any orchestrator records it (the loads themselves: the test above)."""
    info = extract(settings, ds, month, revalidate=revalidate)
    entry = ledger.record(ds, month, info, info.data_lines, "0" * 64, by="kestra:test")
    if ledger.POSTGRES in stores:
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            ledger.ensure_postgres(conn)
            ledger.write_postgres(conn, entry)
    if ledger.BIGQUERY in stores:
        client = bigquery_client(settings)
        ensure_dataset(settings)
        ledger.ensure_bigquery(client, settings)
        client.query(ledger.bigquery_insert_sql(settings, entry)).result()


def test_the_sensor_requests_new_months_as_they_appear_and_republished_ones_again(cloud_settings, tlc_server):
    settings = replace(cloud_settings, tlc_url=tlc_server.url)
    ds = TLC_DATASETS["green"]
    sensor = defs.resolve_sensor_def("tlc_green_published_months")
    newest = NOW.previous().previous()
    with dg.DagsterInstance.ephemeral() as instance:
        # Nothing loaded: the newest published month (the month just ended is not out yet).
        first = _tick(sensor, instance, settings)
        assert [r.partition_key for r in first.run_requests] == [str(newest)]
        assert first.run_requests[0].tags["taxi_assets/reason"] == "published"
        for month in (newest.previous(), newest):
            _loaded(settings, ds, month)
        assert set(_loaded_files(settings, ds)) == {newest.previous(), newest}
        # Loaded up to the newest: nothing to ask for until the TLC publishes the next month.
        idle = _tick(sensor, instance, settings)
        assert not idle.run_requests and f"{newest.next()} is not published yet" in idle.skip_message
        tlc_server.publish("green", newest.next())
        published = _tick(sensor, instance, settings)
        assert [r.partition_key for r in published.run_requests] == [str(newest.next())]
        # A file uploaded again (new ETag and size) for a month already loaded: requested again, once per file.
        tlc_server.republish("green", newest.previous(), variant=2)
        again = _tick(sensor, instance, settings)
        requested = {r.partition_key: r for r in again.run_requests}
        assert set(requested) == {str(newest.next()), str(newest.previous())}
        assert requested[str(newest.previous())].tags["taxi_assets/reason"] == "re-published"
        assert requested[str(newest.previous())].run_key != first.run_requests[0].run_key


def test_the_sensor_walks_older_months_in_turn(cloud_settings, tlc_server):
    """Months beyond the newest six are compared a few per tick, the cursor remembering where."""
    settings = replace(cloud_settings, tlc_url=tlc_server.url)
    ds = TLC_DATASETS["fhv"]
    sensor = defs.resolve_sensor_def("tlc_fhv_published_months")
    months = [Month(2019, 11), Month(2019, 12), *(Month(2020, m) for m in range(1, 13))]  # 14 loaded
    with dg.DagsterInstance.ephemeral() as instance:
        for month in months:
            _loaded(settings, ds, month)
        tlc_server.republish("fhv", Month(2019, 11), variant=1)  # the oldest: checked on the second tick

        def republished(result) -> list[str]:
            return [r.partition_key for r in result.run_requests if r.tags["taxi_assets/reason"] == "re-published"]

        first = _tick(sensor, instance, settings)
        assert republished(first) == [] and first.cursor == "2020-01"
        assert [r.partition_key for r in first.run_requests] == ["2021-01"]  # the next month, published
        second = _tick(sensor, instance, settings, cursor=first.cursor)
        assert republished(second) == ["2019-11"] and second.cursor == str(NOW)  # the walk starts over

        # A month loaded into Postgres from one file and into BigQuery from another is loaded again.
        tlc_server.republish("fhv", Month(2020, 12), variant=1)
        _loaded(settings, ds, Month(2020, 12), [ledger.POSTGRES], revalidate=True)
        assert _loaded_files(settings, ds)[Month(2020, 12)] == ("", None)


def test_a_failed_run_is_requested_again_a_few_times_then_left_to_a_person(cloud_settings, tlc_server, monkeypatch):
    """Dagster starts a run key once, whatever became of its run: the sensor asks again under a
    new key after a failure, up to MAX_ATTEMPTS runs per file."""
    settings = replace(cloud_settings, tlc_url=tlc_server.url)
    ds = TLC_DATASETS["yellow"]
    sensor = defs.resolve_sensor_def("tlc_yellow_published_months")
    newest = NOW.previous().previous()
    # Runs of that month that fail: the file asset with a host that refuses every request.
    failing = dagster_resources(replace(settings, tlc_url="http://127.0.0.1:9/trip-data"))
    monkeypatch.setenv("TAXI_HTTP_RETRIES", "0")  # the resource reads its retries from the environment
    with dg.DagsterInstance.ephemeral() as instance:
        keys = []
        for _ in range(MAX_ATTEMPTS):
            tick = _tick(sensor, instance, settings)
            [request] = tick.run_requests
            assert request.partition_key == str(newest)
            keys.append(request.run_key)
            result = dg.materialize(
                [build_taxi_chain(ds)[0]],
                partition_key=str(newest),
                instance=instance,
                resources=failing,
                tags=request.tags,
                raise_on_error=False,
            )
            assert not result.success
        assert keys[1:] == [f"{keys[0]}:retry1", f"{keys[0]}:retry2"]
        exhausted = _tick(sensor, instance, settings)
        assert not exhausted.run_requests
        assert f"{newest} failed {MAX_ATTEMPTS} times for this file" in exhausted.skip_message


def test_the_catalog_sensor_reports_each_months_current_load_once_whatever_the_order(settings):
    """Loads committed out of order (an older record seen after a newer one), a month loaded twice
    between ticks, and Dagster's own loads (already in its catalog): each month's current load
    by Kestra or the CLI is reported once, and only that one."""
    ds = TLC_DATASETS["green"]
    base = ledger.record(ds, Month(2024, 1), _file(ds), 10, "0" * 64)
    stamp = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)

    def write(month: Month, minutes: int, by: str) -> None:
        entry = replace(base, month=str(month), loaded_at=stamp + timedelta(minutes=minutes), loaded_by=by)
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            ledger.ensure_postgres(conn)
            ledger.write_postgres(conn, entry)

    resources = {k: v for k, v in dagster_resources(settings).items() if k in ("postgres", "bigquery")}
    sensor = defs.resolve_sensor_def("loads_from_the_ledgers")

    def tick(cursor=None):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            return sensor.evaluate_tick(context)

    def reported(result) -> dict[str, str]:
        return {e.partition: e.metadata["loaded_by"].value for e in result.asset_events}

    with dg.DagsterInstance.ephemeral() as instance:
        write(Month(2024, 2), 5, "kestra:b")
        write(Month(2024, 1), 1, "cli")  # committed after, loaded (stamped) before
        write(Month(2024, 3), 2, "dagster:run")
        first = tick()
        assert reported(first) == {"2024-01": "cli", "2024-02": "kestra:b"}
        assert "BigQuery is not configured" in (tick(first.cursor).skip_message or "")
        write(Month(2024, 1), 7, "kestra:c")
        write(Month(2024, 1), 8, "kestra:d")  # loaded twice since: its newest load only
        assert reported(tick(first.cursor)) == {"2024-01": "kestra:d"}


def _file(ds):
    from taxi_assets.files import FileInfo

    return FileInfo(ds.taxi, "2024-01", f"/x/{ds.file_name(Month(2024, 1))}", "http://x", 1, "ab" * 32, 10, [])
