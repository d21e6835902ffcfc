"""The TLC flows (kestra_flows/tlc_taxi.yaml, tlc_taxi_scheduled.yaml) on Kestra 2.0's own engine,
against a local stand-in for the TLC's CloudFront (taxi_assets.samples.tlc.TlcServer), the test
Postgres and the GCS/BigQuery emulators, as tests/test_kestra_engine.py runs the mirror's flows.

The worker's environment is the stack's: settings as plain variables (TAXI_TLC_URL among them),
the DSN and the service-account key as open-source Kestra secrets (SECRET_<NAME>, base64).
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from helpers import dagster_resources, unconfigured_env
from kestra_harness import (
    FLOWS_DIR,
    NAMESPACE,
    Kestra,
    build,
    database_with_password,
    flows_without_marts,
    secret_env,
    stack_settings,
)
from psycopg import sql

from taxi_assets import checks, config, ledger
from taxi_assets.config import Settings
from taxi_assets.datasets import TLC_DATASETS
from taxi_assets.definitions import defs
from taxi_assets.defs.assets import bigquery_key, build_taxi_chain, postgres_key
from taxi_assets.defs.checks import build_bigquery_checks, build_gcs_check, build_postgres_checks
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.months import Month
from taxi_assets.samples.tlc import TlcServer
from taxi_assets.steps.gcp_setup import ensure_dataset
from taxi_assets.steps.gcs import ensure_bucket
from taxi_assets.stores import partition_name

TLC_FLOWS = ("tlc_taxi", "tlc_taxi_scheduled")
ROWS = 2_000
PASSWORD = "kestra-tlc-" + uuid.uuid4().hex  # a DSN password no log may show
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\\n" + uuid.uuid4().hex * 4 + "\\n-----END PRIVATE KEY-----\\n"
KEY_JSON = json.dumps(
    {"type": "service_account", "client_email": "k@p.iam.gserviceaccount.com", "private_key": PRIVATE_KEY}
)
# The steps of one month, in the order tlc_taxi runs them: Postgres after the cloud half.
TLC_TASKS = [
    "label",
    "extract",
    "gcp_setup",
    "upload_gcs",
    "check_gcs",
    "load_bigquery",
    "load_postgres",
    "check_bigquery",
    "check_postgres",
    "purge_download",
]


@pytest.fixture(scope="module")
def tlc(tmp_path_factory):
    """The TLC's CloudFront: months up to two months ago published (403 after), 2,000 rows each."""
    server = TlcServer(tmp_path_factory.mktemp("tlc-source"), rows=ROWS).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def kestra_db(pg_admin_dsn):
    """The taxi-data database, reached by a role with a password (looked for in the logs)."""
    with database_with_password(pg_admin_dsn, "kestra_tlc", PASSWORD) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tlc, kestra_db, fake_gcs, bq_emulator) -> Settings:
    """The settings Kestra's worker has, as the compose stack gives them (here on the emulators)."""
    return stack_settings(tmp_path_factory, "kestra-tlc", kestra_db, (fake_gcs[0], bq_emulator), tlc_url=tlc.url)


def worker_env(stack: Settings) -> dict[str, str]:
    """The Kestra worker's environment in the stack: the settings that are no secrets."""
    settings = {
        config.TLC_URL: stack.tlc_url,
        config.STATE_DIR: str(stack.state_dir),
        config.HTTP_BACKOFF: "0.01",
        config.STORAGE_EMULATOR_HOST: stack.storage_emulator,
        config.BIGQUERY_EMULATOR_HOST: stack.bigquery_emulator,
        config.GCP_BUCKET_NAME: stack.gcp_bucket,
        config.GCP_DATASET: stack.gcp_dataset,
    }
    path = f"{Path(sys.executable).parent}:{unconfigured_env()['PATH']}"  # `python`: the project's
    return unconfigured_env() | {"PATH": path} | settings


def secrets(stack: Settings) -> dict[str, str]:
    return {"TAXI_POSTGRES_DSN": stack.postgres_dsn, "GCP_CREDENTIALS": KEY_JSON}


@pytest.fixture(scope="module")
def kestra(tmp_path_factory, stack):
    classpath = build(tmp_path_factory.mktemp("maven") / "maven.log")
    engine = Kestra(classpath, tmp_path_factory.mktemp("kestra"), worker_env(stack) | secret_env(secrets(stack)))
    loaded = engine.request(op="load", dir=str(flows_without_marts(tmp_path_factory.mktemp("flows"))))["loaded"]
    assert {f"{NAMESPACE}.{f}" for f in TLC_FLOWS} <= set(loaded), loaded
    yield engine
    engine.close()


# -- What the tests read ------------------------------------------------------------------------


def secret_forms(kestra: Kestra) -> list[str]:
    """Each secret value, and its base64 form (tasks inherit the worker's SECRET_*)."""
    return [PASSWORD, PRIVATE_KEY[30:60], *(v for k, v in kestra.env.items() if k.startswith("SECRET_"))]


def run(kestra: Kestra, flow: str, inputs: dict | None = None):
    """An execution to its end; whatever its outcome, no secret value is in its logs."""
    execution = kestra.run(flow, inputs)
    assert_no_secret_in_logs(execution, kestra)
    return execution


def tick(kestra: Kestra, trigger: str, date: str):
    execution = kestra.tick("tlc_taxi_scheduled", trigger, date)
    assert_no_secret_in_logs(execution, kestra)
    return execution


def assert_no_secret_in_logs(execution, kestra: Kestra) -> None:
    text = execution.log_text()
    assert text, "the execution logged nothing to look in"
    assert not [form for form in secret_forms(kestra) if form in text], "a secret is in the execution's logs"


def task_order(execution) -> list[str]:
    return [t["taskId"] for t in execution.data["taskRuns"]]


def file_path(taxi: str, month: str) -> str:
    return f"/trip-data/{TlcServer.file_name(taxi, Month.parse(month))}"


def gets(server: TlcServer, taxi: str, month: str) -> int:
    return server.requests.count(("GET", file_path(taxi, month)))


def pg_ids(dsn: str, taxi: str, month: str) -> list[tuple]:
    """(unique_row_id, rows with it) of the month's file, sorted in Python (not by a collation)."""
    ds = TLC_DATASETS[taxi]
    query = sql.SQL("SELECT unique_row_id, count(*) FROM {} WHERE filename = %s GROUP BY 1 ORDER BY 1")
    with psycopg.connect(dsn) as conn:
        return sorted(conn.execute(query.format(sql.Identifier(ds.table)), [ds.file_name(Month.parse(month))]))


def bq_ids(settings: Settings, taxi: str, month: str) -> list[tuple]:
    from taxi_assets.gcp import bigquery_client

    ds = TLC_DATASETS[taxi]
    query = (
        f"SELECT unique_row_id, count(*) AS n FROM `{settings.gcp_project}.{settings.gcp_dataset}.{ds.table}`"
        f" WHERE filename = '{ds.file_name(Month.parse(month))}' GROUP BY 1 ORDER BY 1"
    )
    return sorted(tuple(r.values()) for r in bigquery_client(settings).query(query).result())


def partition(dsn: str, taxi: str, month: str) -> dict | None:
    """The month's Postgres partition as a load leaves it: its table, its newest row version (a
    reload swaps in new halves), its rows, and its ledger record (the file it was loaded from)."""
    ds, m = TLC_DATASETS[taxi], Month.parse(month)
    name = partition_name(ds, m)
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT oid, relfilenode FROM pg_class WHERE oid = to_regclass(%s)", [name]).fetchone()
        if found is None:
            return None
        rows, xmin = conn.execute(
            sql.SQL("SELECT count(*), max(xmin::text::bigint) FROM {}").format(sql.Identifier(name))
        ).fetchone()
        origin = ledger.held(None, ledger.POSTGRES, ds, m, conn=conn).as_dict()
    return {"oid": found[0], "relfilenode": found[1], "origin": origin, "rows": rows, "xmin": xmin}


def assert_purged(execution, stack: Settings, taxi: str, month: str) -> None:
    """The last task removed the download and everything made beside it (row ids, the typed
    Parquet upload-gcs wrote, their records); nothing of the month is left in the folder."""
    name = TLC_DATASETS[taxi].file_name(Month.parse(month))  # yellow_tripdata_2024-01.parquet
    stem = name.removesuffix(".parquet")
    purged = execution.outputs("purge_download")["vars"]
    assert purged["folder"] == str(stack.state_dir / "downloads" / "tlc" / taxi)
    typed = f"{stem}.typed.parquet"
    assert set(purged["removed"]) == {name, name + ".json", f"{stem}.row_ids", typed, typed + ".json"}
    assert execution.metric("purge_download", "bytes_freed") > 0
    assert not [p.name for p in Path(purged["folder"]).iterdir() if p.name.startswith(stem)]


# -- Validation by Kestra -----------------------------------------------------------------------


def test_kestra_accepts_the_tlc_flows_and_their_month_validator(kestra):
    sources = {f"{f}.yaml": (FLOWS_DIR / f"{f}.yaml").read_text() for f in TLC_FLOWS}
    text = sources["tlc_taxi.yaml"]
    assert text.count('defaults: "2024-01"') == 1
    for month in ("2009-01", "2099-12", "2008-12", "2024-13", "24-01", "2024-1"):  # the default: a month to validate
        sources[f"month {month}"] = text.replace('defaults: "2024-01"', f'defaults: "{month}"')
    results = kestra.validate(sources)
    for name in ("tlc_taxi.yaml", "tlc_taxi_scheduled.yaml", "month 2009-01", "month 2099-12"):
        result = results[name]
        assert result.get("constraints") is None, f"{name}: {result['constraints']}"
        assert [result.get(k, []) for k in ("warnings", "deprecationPaths", "infos")] == [[], [], []], name
    for month in ("2008-12", "2024-13", "24-01", "2024-1"):
        assert "Invalid default for input 'month'" in (results[f"month {month}"].get("constraints") or ""), month


# -- One month ----------------------------------------------------------------------------------

MONTHS = [("yellow", "2024-01"), ("fhv", "2019-05"), ("yellow", "2010-02")]  # eras: today's, int64 ids, pandas index


@pytest.mark.parametrize(("taxi", "month"), MONTHS, ids=[f"{t}-{m}" for t, m in MONTHS])
def test_tlc_taxi_loads_one_download_into_bigquery_then_postgres_as_dagster_does(
    kestra, stack, tlc, pg_dsn, tmp_path, taxi, month
):
    gets_before = gets(tlc, taxi, month)
    execution = run(kestra, "tlc_taxi", {"taxi": taxi, "month": month})
    assert execution.state == "SUCCESS", execution
    assert execution.labels == {"project": "taxi-assets", "source": "tlc", "taxi": taxi, "month": month}
    assert task_order(execution) == TLC_TASKS
    assert gets(tlc, taxi, month) - gets_before == 1, "one download serves every step"
    loaded = execution.outputs("load_postgres")["vars"]
    assert (loaded["table"], loaded["month"], loaded["rows_loaded"]) == (f"tlc_{taxi}_tripdata", month, ROWS)
    assert execution.outputs("load_bigquery")["vars"]["rows"] == execution.metric("load_bigquery", "rows") == ROWS
    assert execution.metric("upload_gcs", "rows") == ROWS
    # Postgres and BigQuery hold the same rows, id by id; Postgres recorded the very file served.
    kestra_pg = pg_ids(stack.postgres_dsn, taxi, month)
    assert sum(n for _, n in kestra_pg) == ROWS and kestra_pg == bq_ids(stack, taxi, month)
    served = tlc.served(file_path(taxi, month))
    origin = partition(stack.postgres_dsn, taxi, month)["origin"]
    assert (origin["etag"], origin["bytes"]) == (served.etag, served.size)
    assert_purged(execution, stack, taxi, month)

    # Dagster's chain for the same TLC month, into a database, bucket and dataset of its own.
    dagster_side = replace(
        stack,
        postgres_dsn=pg_dsn,
        state_dir=tmp_path / "dagster-state",
        gcp_bucket=stack.gcp_bucket + "-dg",
        gcp_dataset=stack.gcp_dataset + "_dg",
    )
    ensure_bucket(dagster_side)
    ensure_dataset(dagster_side)
    resources = dagster_resources(dagster_side) | {
        "source": TaxiSourceResource(tlc_url=tlc.url, state_dir=str(dagster_side.state_dir))
    }
    ds = TLC_DATASETS[taxi]
    chain = [*build_taxi_chain(ds), build_postgres_checks(ds), build_gcs_check(ds), build_bigquery_checks(ds)]
    result = dg.materialize(chain, partition_key=month, resources=resources)
    assert result.success
    assert pg_ids(pg_dsn, taxi, month) == kestra_pg
    assert bq_ids(dagster_side, taxi, month) == kestra_pg
    # The same checks, the same verdicts and figures, whichever orchestrator ran them.
    in_kestra = {
        (store, name): (v["passed"], v["metadata"])
        for store in checks.STORES
        for name, v in execution.outputs(f"check_{store}")["vars"]["verdicts"].items()
    }
    in_dagster = {
        (e.asset_key.to_user_string().rsplit("_", 1)[1], e.check_name): (
            e.passed,
            {k: v.value if hasattr(v, "value") else v for k, v in e.metadata.items()},
        )
        for e in result.get_asset_check_evaluations()
    }
    assert len(in_kestra) == len(checks.SPECS) and in_kestra == in_dagster


def test_a_month_not_yet_published_fails_on_its_403_in_one_line_without_retry(kestra, stack, tlc):
    month = str(tlc.latest["fhvhv"].next())
    execution = run(kestra, "tlc_taxi", {"taxi": "fhvhv", "month": month})
    assert execution.state == "FAILED", execution
    # The download is the first step: nothing after it ran.
    assert execution.task_states == {"label": "SUCCESS", "extract": "FAILED"}
    errors = [line for line in execution.log_text("extract").splitlines() if line.startswith("error:")]
    assert len(errors) == 1, execution
    assert errors[0].startswith(f"error: tlc_fhvhv {month} is not published yet (") and "403" in errors[0]
    assert [r for r in tlc.requests if r[1] == file_path("fhvhv", month)] == [("GET", file_path("fhvhv", month))]
    assert partition(stack.postgres_dsn, "fhvhv", month) is None


# -- Every day, the newest month ----------------------------------------------------------------


def test_the_daily_schedule_loads_the_newest_month_once_and_again_when_republished(kestra, stack, tlc):
    taxi, newest = "green", str(tlc.latest["green"])
    ticks = [f"2026-11-{day}T08:00-05:00[America/New_York]" for day in (26, 27, 28)]  # green's, 08:00

    first = tick(kestra, "green_schedule", ticks[0])
    assert first.state == "SUCCESS", first
    assert first.labels == {"project": "taxi-assets", "source": "tlc", "taxi": taxi, "month": newest}
    found = first.outputs("newest_month")["vars"]
    assert (found["month"], found["loaded"]) == (newest, False)
    assert first.task_states == dict.fromkeys(["newest_month", "label", "unless_loaded", "load_month"], "SUCCESS")
    child = first.outputs("load_month")
    assert child["state"] == "SUCCESS" and child["outputs"] == {"rows_bigquery": ROWS, "rows_postgres": ROWS}
    loaded = partition(stack.postgres_dsn, taxi, newest)
    assert loaded["rows"] == ROWS and (loaded["origin"]["etag"], loaded["origin"]["bytes"]) == (
        found["etag"],
        found["bytes"],
    )
    first_ids = pg_ids(stack.postgres_dsn, taxi, newest)
    assert first_ids == bq_ids(stack, taxi, newest)

    # The next day: the same file is served, the month is loaded from it, nothing else runs.
    gets_before = gets(tlc, taxi, newest)
    second = tick(kestra, "green_schedule", ticks[1])
    assert second.state == "SUCCESS", second
    assert second.outputs("newest_month")["vars"] == found | {"loaded": True}
    assert second.task_states == dict.fromkeys(["newest_month", "label", "unless_loaded"], "SUCCESS")
    assert partition(stack.postgres_dsn, taxi, newest) == loaded, "the partition was touched"
    assert gets(tlc, taxi, newest) == gets_before

    # The TLC re-uploads the month (new values, ETag, size): the next day loads it again.
    tlc.republish(taxi, Month.parse(newest))
    third = tick(kestra, "green_schedule", ticks[2])
    assert third.state == "SUCCESS", third
    again = third.outputs("newest_month")["vars"]
    assert again["month"] == newest and not again["loaded"] and again["etag"] != found["etag"]
    rows = ROWS + 1  # the re-uploaded file has one row more (TlcServer.republish's variant 1)
    assert third.outputs("load_month")["outputs"] == {"rows_bigquery": rows, "rows_postgres": rows}
    reloaded = partition(stack.postgres_dsn, taxi, newest)
    assert reloaded["xmin"] != loaded["xmin"] and reloaded["rows"] == rows  # new rows, swapped in
    assert (reloaded["origin"]["etag"], reloaded["origin"]["bytes"]) == (again["etag"], again["bytes"])
    new_ids = pg_ids(stack.postgres_dsn, taxi, newest)
    assert new_ids != first_ids and new_ids == bq_ids(stack, taxi, newest)
    assert gets(tlc, taxi, newest) == gets_before + 1


# -- Secrets ------------------------------------------------------------------------------------


def test_secrets_reach_the_tasks_only_from_kestras_secret_store_and_no_log_shows_them(kestra, stack):
    """The worker's environment holds neither the DSN nor the key, yet the scheduled flow, run by
    hand, finds and loads fhvhv's newest month through `secret()`; the flows name neither; and
    Kestra's own log (the JVM's, where the subflow's tasks log their stderr too, which the
    parent's execution logs do not hold) shows no secret value."""
    assert not {"TAXI_POSTGRES_DSN", "GCP_CREDENTIALS"} & set(kestra.env)
    assert {"SECRET_TAXI_POSTGRES_DSN", "SECRET_GCP_CREDENTIALS"} <= set(kestra.env)
    for flow in TLC_FLOWS:
        text = (FLOWS_DIR / f"{flow}.yaml").read_text()
        assert PASSWORD not in text and "postgresql://" not in text
    execution = run(kestra, "tlc_taxi_scheduled", {"taxi": "fhvhv"})
    assert execution.state == "SUCCESS", execution
    month = execution.outputs("newest_month")["vars"]["month"]
    assert execution.outputs("load_month")["outputs"]["rows_postgres"] == ROWS
    assert partition(stack.postgres_dsn, "fhvhv", month)["rows"] == ROWS
    engine_log = kestra.log.read_text(errors="replace")
    assert f"into tlc_fhvhv_tripdata (tlc_fhvhv_tripdata_{month.replace('-', '_')})" in engine_log
    assert not [form for form in secret_forms(kestra) if form in engine_log], "a secret is in Kestra's log"


# -- One memory: Dagster sees what Kestra loaded -------------------------------------------------


def _evaluate(sensor_name: str, instance, resources: dict, cursor: str | None = None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, repository_def=defs.get_repository_def()
    ) as context:
        return defs.resolve_sensor_def(sensor_name).evaluate_tick(context)


def test_dagster_shows_a_month_kestra_loaded_and_its_sensor_does_not_request_it(kestra, stack, tlc):
    taxi, month = "fhv", str(tlc.latest["fhv"])  # the newest published: what the TLC sensor would ask for
    ds = TLC_DATASETS[taxi]
    execution = run(kestra, "tlc_taxi", {"taxi": taxi, "month": month})
    assert execution.state == "SUCCESS", execution
    served = tlc.served(file_path(taxi, month))
    resources = dagster_resources(stack) | {
        "source": TaxiSourceResource(tlc_url=tlc.url, state_dir=str(stack.state_dir))
    }
    with dg.DagsterInstance.ephemeral() as instance:
        tick = _evaluate("loads_from_the_ledgers", instance, resources)
        for event in tick.asset_events:  # what Dagster's sensor daemon does with them
            instance.report_runless_asset_event(event)
        for key in (postgres_key(ds), bigquery_key(ds)):
            assert month in instance.get_materialized_partitions(dg.AssetKey(key)), key
            records = instance.fetch_materializations(dg.AssetKey(key), limit=1).records
            meta = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
            assert meta["loaded_by"] == f"kestra:{execution.data['id']}" and meta["orchestrator"] == "kestra"
            assert (meta["file_etag"], meta["file_size_bytes"], meta["dagster/row_count"]) == (
                served.etag,
                served.size,
                ROWS,
            )
        # Reported once: the next tick finds nothing new.
        again = _evaluate("loads_from_the_ledgers", instance, resources, cursor=tick.cursor)
        assert not again.asset_events and "no new loads" in again.skip_message
        # The TLC sensor reads the same ledgers: the month is loaded from the file served, not requested.
        published = _evaluate(f"tlc_{taxi}_published_months", instance, resources)
        assert month not in [r.partition_key for r in published.run_requests]
        assert f"{Month.parse(month).next()} is not published yet" in (published.skip_message or "")
