"""The Dagster layer in-process: definitions, partitions, schedules, materializations, checks."""

from __future__ import annotations

import gzip
import importlib
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
from helpers import dagster_resources

from taxi_assets import checks, config
from taxi_assets.checks import DUPLICATE_ROWS_TOLERANCE, OUT_OF_MONTH_TOLERANCE
from taxi_assets.datasets import GREEN, MIRROR_DATASETS, TLC_DATASETS
from taxi_assets.definitions import defs
from taxi_assets.defs.assets import build_taxi_chain, one_line_failures
from taxi_assets.defs.checks import build_bigquery_checks, build_gcs_check, build_postgres_checks
from taxi_assets.defs.checks import result as dagster_result
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.errors import LoadError
from taxi_assets.months import Month
from taxi_assets.samples.mirror_data import write_month

# Dagster's own, silenced where the code location loads (taxi_assets.definitions.DAGSTER_INTERNAL_BETA)
# and here again: pytest resets the warning filters for each test.
pytestmark = pytest.mark.filterwarnings("ignore:Parameter `execution_type` of function `AssetsDefinition")


def test_definitions_load_with_one_chain_and_job_per_taxi_type():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    chains = {f"{t}_trips_{s}" for t in MIRROR_DATASETS for s in ("csv", "postgres", "gcs", "bigquery")}
    tlc = {f"tlc_{t}_trips_{s}" for t in TLC_DATASETS for s in ("parquet", "postgres", "gcs", "bigquery")}
    chain_keys = {k for k in keys if not k.startswith("marts/")}  # the marts: tests/test_dagster_marts.py
    assert chain_keys == chains | tlc | {"products", "avg_price_by_brand"}
    for taxi in MIRROR_DATASETS:
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
    # Generated months repeat one row in 997, a hundred times the tolerance: a warning, not a failure.
    duplicates = evaluations[checks.DUPLICATE_ROWS_WITHIN_TOLERANCE]
    assert not duplicates.passed and duplicates.severity == dg.AssetCheckSeverity.WARN
    assert duplicates.metadata["duplicate_rows"].value == 2 and duplicates.metadata["allowed_rows"].value == 1
    # ... and report one pickup in 1,009 from the previous month: within the tolerance of 1 in 1,000.
    out_of_month = evaluations[checks.OUT_OF_MONTH_WITHIN_TOLERANCE]
    assert out_of_month.passed and out_of_month.metadata["out_of_month_rows"].value == 2
    assert (
        pg.execute("SELECT count(*) FROM green_tripdata WHERE filename = 'green_tripdata_2019-02.csv.gz'").fetchone()[0]
        == 2_000
    )


def test_the_check_query_sees_a_tampered_month(settings, pg):
    """The checks count the table itself; they do not repeat what the load reported."""
    chain = build_taxi_chain(GREEN)[:2]  # csv -> postgres
    assert dg.materialize(chain, partition_key="2019-05", resources=dagster_resources(settings)).success
    pg.execute(
        "DELETE FROM green_tripdata WHERE (tableoid, ctid) IN (SELECT tableoid, ctid FROM green_tripdata LIMIT 3)"
    )
    profile = checks.month_profile(pg, GREEN, Month(2019, 5))
    assert profile["rows"] == 1_997 and profile["null_row_ids"] == 0
    # A row without its id cannot even be stored: the month's halves are ranges of ids.
    with pytest.raises(psycopg.errors.Error, match="partition"):
        pg.execute(
            "UPDATE green_tripdata SET unique_row_id = NULL WHERE ctid IN (SELECT ctid FROM green_tripdata LIMIT 2)"
        )


@pytest.mark.parametrize("taxi", sorted(MIRROR_DATASETS))
def test_every_job_selects_its_whole_chain(taxi):
    job = defs.resolve_job_def(f"{taxi}_trips_job")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert keys == {f"{taxi}_trips_{step}" for step in ("csv", "postgres", "gcs", "bigquery")}


# --- the tolerances of the two quirk checks ------------------------------------------------


@pytest.mark.parametrize(
    ("tolerance", "count", "rows", "passed"),
    [
        # The real months (../shared/reference/data.md, tlc.md) pass ...
        (DUPLICATE_ROWS_TOLERANCE, 4, 7_667_792, True),  # the mirror's yellow 2019-01
        (DUPLICATE_ROWS_TOLERANCE, 0, 7_696_617, True),  # the TLC's Parquet of it
        (OUT_OF_MONTH_TOLERANCE, 537, 7_696_617, True),  # yellow 2019-01, 2001 to 2088
        (OUT_OF_MONTH_TOLERANCE, 48, 2_964_624, True),  # "a few dozen" in yellow 2024-01
        # ... one row is always tolerated, so a small month's single quirk is no warning ...
        (DUPLICATE_ROWS_TOLERANCE, 1, 88_605, True),  # green 2020-11's size
        (DUPLICATE_ROWS_TOLERANCE, 2, 88_605, False),
        # ... and the faults these checks are for do not.
        (DUPLICATE_ROWS_TOLERANCE, 50_000, 7_667_792, False),  # a 50,000-line block published twice
        (OUT_OF_MONTH_TOLERANCE, 630_918, 630_918, False),  # another month's file under this name
        (OUT_OF_MONTH_TOLERANCE, 7_667_792 * 5 // 744, 7_667_792, False),  # timestamps 5 h off (UTC)
    ],
)
def test_quirk_checks_pass_within_their_tolerance_and_warn_above(tolerance, count, rows, passed):
    result = dagster_result(tolerance.verdict("quirk", count, rows), "green_trips_postgres")
    assert result.passed is passed and result.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value if hasattr(v, "value") else v for k, v in result.metadata.items()}
    assert meta[tolerance.count_key] == count and meta["rows"] == rows
    assert meta["tolerance_per_million"] == tolerance.per_million
    assert meta["allowed_rows"] == max(1, -(-rows * tolerance.per_million // 1_000_000))
    assert meta["rate_per_million"] == pytest.approx(count * 1e6 / rows, abs=0.01)


def test_tolerances_sit_between_the_real_months_and_the_faults():
    """Each is over ten times the worst real month measured, and each check says so in the UI."""
    assert DUPLICATE_ROWS_TOLERANCE.per_million >= 10 * 4 * 1e6 / 7_667_792
    assert OUT_OF_MONTH_TOLERANCE.per_million >= 10 * 537 * 1e6 / 7_696_617
    specs = {s.name: s for s in build_postgres_checks(GREEN).check_specs}
    for name, tolerance in (
        (checks.DUPLICATE_ROWS_WITHIN_TOLERANCE, DUPLICATE_ROWS_TOLERANCE),
        (checks.OUT_OF_MONTH_WITHIN_TOLERANCE, OUT_OF_MONTH_TOLERANCE),
    ):
        assert f"{tolerance.per_million:,} per million rows" in specs[name].description
        assert not specs[name].blocking


def _plant_month(server, month: Month, lines: list[str]) -> None:
    """A green month file of these data lines on a test's own release server."""
    path = server.root / "green" / GREEN.file_name(month)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="") as out:
        out.write("\r\n".join([",".join(GREEN.column_names), *lines]) + "\r\n")


def _generated_lines(tmp_path, month: Month) -> list[str]:
    path = write_month(tmp_path / "generated.csv.gz", GREEN, month, 2_000, seed=7)
    with gzip.open(tmp_path / "generated.csv.gz", "rt", newline="") as f:
        lines = f.read().split("\r\n")[1:-1]
    assert len(lines) == path.rows
    return lines


def _postgres_checks(settings, month: Month) -> dict:
    result = dg.materialize(
        [*build_taxi_chain(GREEN)[:2], build_postgres_checks(GREEN)],
        partition_key=str(month),
        resources=dagster_resources(settings),
    )
    assert result.success  # warnings never fail the run
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations[checks.ROWS_MATCH_FILE].passed and evaluations[checks.ROW_IDS_PRESENT].passed
    return evaluations


def test_a_month_within_tolerance_passes_with_its_counts_in_metadata(settings, local_release, tmp_path):
    month = Month(2019, 3)
    lines = _generated_lines(tmp_path, month)
    pickup = GREEN.pickup_index
    in_month = [line for line in lines if line.split(",")[pickup].startswith(str(month))]
    late = [line for line in lines if not line.split(",")[pickup].startswith(str(month))]
    unique = list(dict.fromkeys(in_month))
    assert len(late) >= 1 and len(unique) < len(in_month)  # the generator's quirks, to be thinned out
    planted = [*unique, unique[10], late[0]]  # one exact duplicate, one pickup from February
    _plant_month(local_release, month, planted)

    evaluations = _postgres_checks(replace(settings, source_url=local_release.url), month)
    duplicates = evaluations[checks.DUPLICATE_ROWS_WITHIN_TOLERANCE]
    out_of_month = evaluations[checks.OUT_OF_MONTH_WITHIN_TOLERANCE]
    assert duplicates.passed and out_of_month.passed
    assert {k: v.value for k, v in duplicates.metadata.items()} == {
        "duplicate_rows": 1,
        "rows": len(planted),
        "rate_per_million": round(1e6 / len(planted), 2),
        "tolerance_per_million": 10,
        "allowed_rows": 1,
    }
    assert {k: v.value for k, v in out_of_month.metadata.items()} == {
        "out_of_month_rows": 1,
        "rows": len(planted),
        "rate_per_million": round(1e6 / len(planted), 2),
        "tolerance_per_million": 1_000,
        "allowed_rows": 2,
    }


def test_a_month_above_tolerance_warns_with_its_counts_in_metadata(settings, local_release, tmp_path):
    """April with 200 of March's rows mixed in (a tenth: far above the tolerance, far below the
    half that extract refuses as another month's file), and a block printed twice."""
    april = _generated_lines(tmp_path, Month(2019, 4))
    march = _generated_lines(tmp_path, Month(2019, 3))[:200]
    planted = [*april, *march, *april[:100]]
    _plant_month(local_release, Month(2019, 4), planted)
    outside = sum(not line.split(",")[GREEN.pickup_index].startswith("2019-04") for line in planted)

    evaluations = _postgres_checks(replace(settings, source_url=local_release.url), Month(2019, 4))
    for name, count_key, count in (
        (checks.DUPLICATE_ROWS_WITHIN_TOLERANCE, "duplicate_rows", len(planted) - len(set(planted))),
        (checks.OUT_OF_MONTH_WITHIN_TOLERANCE, "out_of_month_rows", outside),
    ):
        evaluation = evaluations[name]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluation.metadata[count_key].value == count >= 100
        assert evaluation.metadata["rows"].value == len(planted)
        assert evaluation.metadata["rate_per_million"].value > evaluation.metadata["tolerance_per_million"].value


# --- a fault a user can act on fails the step with one line ---------------------------------


def test_a_taxi_error_fails_the_step_with_its_one_line_not_a_stack_trace(tmp_path, monkeypatch):
    """The source down: the UI shows the step's failure as the line the CLI prints, with no
    TaxiError stack chained under it (a bug, any other exception, keeps its trace)."""
    monkeypatch.setenv(config.HTTP_RETRIES, "0")
    source = TaxiSourceResource(source_url="http://127.0.0.1:9", state_dir=str(tmp_path / "state"))
    result = dg.materialize(
        build_taxi_chain(GREEN)[:1], partition_key="2019-02", resources={"source": source}, raise_on_error=False
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    data = failure.step_failure_data
    description = data.user_failure_data.description
    assert description.startswith("green 2019-02: download failed") and "127.0.0.1:9" in description
    assert "\n" not in description
    assert data.user_failure_data.metadata["error"].value == "DownloadError"
    assert data.error.cls_name == "Failure" and data.error.cause is None and data.error.context is None
    assert data.error.message.strip().endswith(description)


def test_one_line_failures_catches_what_a_check_raises_while_yielding():
    def body():
        yield 1
        raise LoadError("green 2019-02: the load was rolled back")

    with pytest.raises(dg.Failure) as caught:
        list(one_line_failures(body)())
    assert caught.value.description == "green 2019-02: the load was rolled back"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__

    def bug():
        raise KeyError("not ours")

    with pytest.raises(KeyError):  # anything else keeps its trace
        one_line_failures(bug)()
