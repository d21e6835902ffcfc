"""The dbt marts as Dagster assets (taxi_assets/defs/marts/defs.yaml, the Component
taxi_assets.components.taxi_marts): the asset graph, a month materialized in Postgres with its dbt
tests as checks, and the automation that requests a month once its loads land."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest
from dagster_dbt import DbtCliResource
from helpers import dagster_resources

from taxi_assets import marts_ledger
from taxi_assets.components.taxi_marts import build_marts_defs, default_dbt_resource, marts_key
from taxi_assets.datasets import GREEN, YELLOW
from taxi_assets.definitions import defs
from taxi_assets.defs.assets import build_taxi_chain
from taxi_assets.months import Month

# Dagster's own, silenced where the code location loads (taxi_assets.definitions.DAGSTER_INTERNAL_BETA)
# and here again: pytest resets the warning filters for each test.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Parameter `execution_type` of function `AssetsDefinition"),
    # Dagster's own test helper (evaluate_automation_conditions) selects with a beta parameter.
    pytest.mark.filterwarnings("ignore:Parameter `include_sources` of function `AssetSelection.all`"),
]

MONTHLY = {"mirror": ("fct_trips", "fct_monthly_zone_revenue"), "tlc": ("fct_trips", "fct_monthly_zone_revenue")}
MONTHLY["tlc"] += ("fct_monthly_fhvhv_zone_pay",)
DIMS = ("dim_zones", "taxi_zone_lookup", "payment_type_lookup")


def _key(store: str, source: str, node: str) -> dg.AssetKey:
    return marts_key(store, source, node)


def test_the_marts_are_assets_downstream_of_the_loads_partitioned_and_automated():
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    for store, load in (("postgres", "{}_trips_postgres"), ("bigquery", "{}_trips_bigquery")):
        for source, models in MONTHLY.items():
            for name in (*models, *DIMS):
                key = _key(store, source, name)
                assert key in keys, key
                node = graph.get(key)
                assert node.group_name == f"marts_{source}_{store}"
                assert set(node.kinds) == {"dbt", store}
                monthly = name in models
                assert (node.automation_condition is not None) == monthly, key
                assert (node.partitions_def is not None) == monthly, key
        # dbt's sources are our load assets: file -> table -> marts.
        assert graph.get(_key(store, "mirror", "fct_trips")).parent_keys == {
            dg.AssetKey(load.format(t)) for t in ("green", "yellow", "fhv")
        } | {_key(store, "mirror", "dim_zones"), _key(store, "mirror", "payment_type_lookup")}
        assert (
            dg.AssetKey(load.format("tlc_fhvhv"))
            in graph.get(_key(store, "tlc", "fct_monthly_fhvhv_zone_pay")).parent_keys
        )
    assert _key("postgres", "mirror", "fct_monthly_fhvhv_zone_pay") not in keys  # a TLC-only model
    # Months: the mirror's range, and the TLC's from its earliest feed on, open-ended.
    mirror = graph.get(_key("postgres", "mirror", "fct_trips")).partitions_def
    assert mirror == graph.get(dg.AssetKey("green_trips_postgres")).partitions_def
    tlc = graph.get(_key("bigquery", "tlc", "fct_trips")).partitions_def.get_partition_keys()
    assert tlc[0] == "2009-01" and tlc[-1] >= "2025-01"
    # dbt's tests are checks, the singular tests too (revenue_reconciles reads sources besides its mart).
    checks = {(k.asset_key, k.name) for k in graph.asset_check_keys}
    for store in ("postgres", "bigquery"):
        assert (_key(store, "mirror", "fct_trips"), "unique_fct_trips_trip_id") in checks
        assert (_key(store, "mirror", "fct_trips"), "out_of_month_pickups") in checks
        assert (_key(store, "tlc", "fct_monthly_zone_revenue"), "revenue_reconciles") in checks
        assert (_key(store, "tlc", "dim_zones"), "unique_dim_zones_location_id") in checks
    # One automation sensor per source x store; the dbt resource, defined once.
    for source in MONTHLY:
        for store in ("postgres", "bigquery"):
            assert isinstance(
                defs.resolve_sensor_def(f"marts_{source}_{store}_automation"), dg.AutomationConditionSensorDefinition
            )
    assert isinstance(defs.resources["dbt"], DbtCliResource)


def _requested(result) -> set[tuple[str, str]]:
    return {
        (key.to_user_string(), partition)
        for r in result.results
        for key, subset in [(r.key, r.true_subset)]
        for partition in (subset.expensively_compute_partition_keys() if r.true_subset.size else [])
    }


def test_a_load_landing_requests_its_month_s_marts_which_build_with_their_checks(settings):
    store, marts_schema = "postgres", "marts_mirror"
    fct_trips, revenue = _key(store, "mirror", "fct_trips"), _key(store, "mirror", "fct_monthly_zone_revenue")
    resources = {**dagster_resources(settings), "dbt": default_dbt_resource()}
    with dg.instance_for_test() as instance:
        # Nothing loaded: nothing requested.
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0

        # Green and yellow 2019-01 land in Postgres (fhv never does): that month's marts, and
        # nothing else, are requested. (Yellow too: the dbt test revenue_reconciles reads both tables.)
        loads = [*build_taxi_chain(GREEN)[:2], *build_taxi_chain(YELLOW)[:2]]  # csv -> postgres
        assert dg.materialize(loads, partition_key="2019-01", resources=resources, instance=instance).success
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert _requested(second) == {(fct_trips.to_user_string(), "2019-01"), (revenue.to_user_string(), "2019-01")}

        # The month's marts (the dims built first, being missing), dbt's tests as checks.
        # (the component's own assets: the code location's are bound to the resources of the environment)
        monthly = next(a for a in build_marts_defs("mirror", store).assets if fct_trips in a.keys)
        result = dg.materialize([monthly], partition_key="2019-01", resources=resources, instance=instance)
        assert result.success
        materialized = {e.asset_key for e in result.get_asset_materialization_events()}
        assert {fct_trips, revenue, _key(store, "mirror", "dim_zones")} <= materialized
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert evaluations["revenue_reconciles"].passed and evaluations["unique_fct_trips_trip_id"].passed
        # The generated month holds 2 pickups of the month before: dbt's warn-severity test warns.
        out_of_month = evaluations["out_of_month_pickups"]
        assert not out_of_month.passed and out_of_month.severity == dg.AssetCheckSeverity.WARN
        assert all(e.passed for name, e in evaluations.items() if name != "out_of_month_pickups")
        with psycopg.connect(settings.postgres_dsn) as conn:
            rows = conn.execute(
                f"SELECT service_type, count(*) FROM {marts_schema}.fct_trips WHERE file_month = '2019-01-01' GROUP BY 1"
            ).fetchall()
        assert sorted(rows) == [("Green", 2_000), ("Yellow", 2_000)]

        # Recorded in the store's marts ledger as Dagster's build, which its sensor does not report.
        built = marts_ledger.builds(settings, store, marts_schema)[Month(2019, 1)]
        assert built.built_by == f"dagster:{result.run_id}" and built.rows["fct_trips"] == 4_000

        # Built: not requested again (neither for the dims the run built).
        third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert third.total_requested == 0


def test_marts_built_by_kestra_or_the_cli_are_reported_as_materializations(settings):
    """The stores are the one memory: a month's marts that Kestra or the CLI built (the store's
    marts ledger says so) show in Dagster's catalog as materializations of that month."""
    schema, keys = "marts_mirror", {_key("postgres", "mirror", node) for node in MONTHLY["mirror"]}
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")  # a build's dbt makes it

    def built(month: Month, by: str, trips: int) -> None:
        rows = {"fct_trips": trips, "fct_monthly_zone_revenue": 3}
        marts_ledger.write(settings, "postgres", schema, marts_ledger.build("mirror", month, rows, by=by))

    sensor = next(s for s in build_marts_defs("mirror", "postgres").sensors if s.name.endswith("_from_the_ledger"))
    resources = {k: v for k, v in dagster_resources(settings).items() if k in ("postgres", "bigquery")}

    def tick(cursor=None):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            return sensor.evaluate_tick(context)

    with dg.DagsterInstance.ephemeral() as instance:
        built(Month(2019, 2), "kestra:a", 10)
        built(Month(2019, 3), "dagster:run", 20)  # Dagster's own build: already in its catalog
        first = tick()
        assert {(e.asset_key, e.partition) for e in first.asset_events} == {(k, "2019-02") for k in keys}
        trips = next(e for e in first.asset_events if e.asset_key.path[-1] == "fct_trips")
        assert trips.metadata["built_by"].value == "kestra:a" and trips.metadata["dagster/row_count"].value == 10
        assert not tick(first.cursor).asset_events  # reported once
        built(Month(2019, 2), "cli", 11)  # built again: its newest build
        again = tick(first.cursor)
        assert {e.partition for e in again.asset_events} == {"2019-02"} and len(again.asset_events) == len(keys)
        assert {e.metadata["built_by"].value for e in again.asset_events} == {"cli"}
