"""Our Kestra flows on Kestra 2.0's own engine: parsed and validated by Kestra, executed by its
executor and worker on the Process task runner, against the test services.

Kestra runs in one JVM for the module (tests/kestra_harness.py). Its worker's environment is
the stack's: the project's settings as plain variables, the DSN and the service-account key as
open-source Kestra secrets (SECRET_<NAME>, base64). What Kestra cannot run here: its UI and
the compose stack. The shell plugin is not served by the Maven Central this machine reaches, so
`io.kestra.plugin.scripts.shell.Commands` is a stand-in on Kestra's own script-task base class
(see tests/kestra_engine/.../shell/Commands.java); everything else is Kestra's code.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
import yaml
from flow_rules import OPEN_ENDED_UNTIL, malformed, matches, published_span
from helpers import ROOT, dagster_resources, unconfigured_env
from kestra_harness import (
    FLOWS_DIR,
    MARTS_FLOW,
    NAMESPACE,
    Execution,
    GappyServer,
    Kestra,
    build,
    database_with_password,
    flows_without_marts,
    secret_env,
    stack_settings,
)

from taxi_assets import config, ledger
from taxi_assets.config import Settings
from taxi_assets.datasets import MIRROR_DATASETS
from taxi_assets.definitions import defs
from taxi_assets.defs.assets import build_taxi_chain
from taxi_assets.months import TIMEZONE, Month, mirror_months, month_just_ended, parse_instant
from taxi_assets.steps.extract import purge_download
from taxi_assets.steps.gcp_setup import ensure_dataset
from taxi_assets.steps.gcs import ensure_bucket

FLOW_FILES = sorted(FLOWS_DIR.glob("*.yaml"))
NY = ZoneInfo(TIMEZONE)
PASSWORD = "kestra-" + uuid.uuid4().hex  # a DSN password no log may show
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\\n" + uuid.uuid4().hex * 4 + "\\n-----END PRIVATE KEY-----\\n"
KEY_JSON = json.dumps(
    {"type": "service_account", "client_email": "k@p.iam.gserviceaccount.com", "private_key": PRIVATE_KEY}
)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    server = GappyServer(tmp_path_factory.mktemp("kestra-release"), rows=2_000).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def kestra_db(pg_admin_dsn):
    """The taxi-data database the flows load into, reached by a role with a password (so the
    test can look for it in the logs)."""
    with database_with_password(pg_admin_dsn, "kestra_taxi", PASSWORD) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def products_api(tmp_path_factory):
    """A local stand-in for dummyjson.com, serving the fixture payload."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path_factory.mktemp("api")
    (root / "products").write_bytes((ROOT / "tests" / "fixtures" / "products.json").read_bytes())

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/products"
    server.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, source, kestra_db, fake_gcs, bq_emulator, products_api) -> Settings:
    """The settings Kestra's worker has, as the compose stack gives them (here on the emulators)."""
    return stack_settings(tmp_path_factory, "kestra", kestra_db, (fake_gcs[0], bq_emulator), source_url=source.url)


@pytest.fixture(scope="module")
def kestra(classpath, tmp_path_factory, stack, products_api):
    engine = Kestra(
        classpath,
        tmp_path_factory.mktemp("kestra"),
        worker_env(stack) | {config.PRODUCTS_URL: products_api} | secret_env(SECRETS(stack)),
    )
    # Counted in test_every_flow_is_accepted_by_kestra...; the marts' flow runs in test_kestra_marts.py.
    engine.request(op="load", dir=str(flows_without_marts(tmp_path_factory.mktemp("flows"))))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def classpath(tmp_path_factory) -> str:
    return build(tmp_path_factory.mktemp("maven") / "maven.log")


def SECRETS(stack: Settings) -> dict[str, str]:  # noqa: N802 (a constant of the stack)
    return {"TAXI_POSTGRES_DSN": stack.postgres_dsn, "GCP_CREDENTIALS": KEY_JSON}


def worker_env(stack: Settings) -> dict[str, str]:
    """The Kestra worker's environment in the stack: the settings that are no secrets."""
    settings = {
        config.SOURCE_URL: stack.source_url,
        config.STATE_DIR: str(stack.state_dir),
        config.HTTP_BACKOFF: "0.01",
        config.STORAGE_EMULATOR_HOST: stack.storage_emulator,
        config.BIGQUERY_EMULATOR_HOST: stack.bigquery_emulator,
        config.GCP_PROJECT_ID: "" if stack.storage_emulator else stack.gcp_project,
        config.GCP_BUCKET_NAME: stack.gcp_bucket,
        config.GCP_DATASET: stack.gcp_dataset,
    }
    path = f"{Path(sys.executable).parent}:{unconfigured_env()['PATH']}"  # `python`: the project's
    return unconfigured_env() | {"PATH": path} | {k: v for k, v in settings.items() if v}


def run(kestra: Kestra, flow: str, inputs: dict | None = None):
    """An execution to its end; whatever its outcome, no secret value is in its logs."""
    execution = kestra.run(flow, inputs)
    assert_no_secret_in_logs(execution, kestra)
    return execution


def subflow(kestra: Kestra, execution) -> Execution:
    """The base flow's execution a scheduled flow's `load_month` task started: where the month is
    loaded, checked and purged. Its trigger names the parent; no secret is in its logs either."""
    child = kestra.subflow(execution, "load_month")
    assert child.data["trigger"]["executionId"] == execution.data["id"], child
    assert_no_secret_in_logs(child, kestra)
    return child


def loaded_by(stack: Settings, store: str, taxi: str, month: str) -> str:
    """Who the store's ledger says loaded the month (`kestra:<execution id>` for Kestra)."""
    return ledger.held(stack, store, MIRROR_DATASETS[taxi], Month.parse(month)).loaded_by


MIRROR_MONTH = next(
    i for i in yaml.safe_load((FLOWS_DIR / "postgres_taxi.yaml").read_text())["inputs"] if i["id"] == "month"
)["validator"]


def assert_refused_by_the_subflow_input(execution, month: str) -> None:
    """A month outside the mirror's range: the scheduled flow picked it, and its Subflow task
    failed on the base flow's month validator (the one test_kestra_flows.py checks against
    taxi_assets.datasets), so no child execution, no download, no load."""
    assert execution.state == "FAILED", execution
    assert execution.labels["month"] == month
    assert execution.task_states == {"pick_month": "SUCCESS", "label": "SUCCESS", "load_month": "FAILED"}, execution
    assert "executionId" not in execution.outputs("load_month"), "a child execution was created"
    # Kestra's executor says why, in the execution's log (not the task's): which input, and the
    # pattern; the month is in the execution's label and pick_month's log.
    errors = [e["message"] for e in execution.logs if e["level"] == "ERROR"]
    assert errors == [f"Invalid value for input `month`. Cause: it must match the pattern `{MIRROR_MONTH}`"], execution
    assert f"month {month} " in execution.log_text("pick_month")


def assert_no_secret_in_logs(execution, kestra: Kestra) -> None:
    """Neither a secret value nor its base64 form (tasks inherit the worker's SECRET_*)."""
    forms = [PASSWORD, PRIVATE_KEY[30:60], *(v for k, v in kestra.env.items() if k.startswith("SECRET_"))]
    text = execution.log_text()
    assert not [form for form in forms if form in text], "a secret is in the execution's logs"


def assert_month_kept(execution, stack: Settings, taxi: str, month: str, waiting_for: str) -> None:
    """The flow's last task kept the month's download in the worker's state folder: the worker
    loads both stores (its settings configure Postgres and BigQuery), and `waiting_for` does not
    hold it yet (the other flow's store; tests/test_one_download.py runs both)."""
    kept = execution.outputs("purge_download")["vars"]
    assert kept["removed"] == [] and execution.metric("purge_download", "bytes_freed") == 0
    assert (Path(kept["folder"]) / MIRROR_DATASETS[taxi].file_name(Month.parse(month))).is_file()
    line = f"kept its download: not yet in {waiting_for} (no load recorded)"
    assert line in execution.log_text("purge_download"), execution


def assert_month_purged(execution, stack: Settings, taxi: str, month: str, parquet: bool = False) -> None:
    """The flow's last task removed the month's files from the worker's state folder (where the
    tasks downloaded them: TAXI_STATE_DIR reached them), and nothing of that month is left."""
    name = MIRROR_DATASETS[taxi].file_name(Month.parse(month))
    purged = execution.outputs("purge_download")["vars"]
    assert purged["folder"] == str(stack.state_dir / "downloads" / taxi)
    parquet_name, ids = name.replace(".csv.gz", ".parquet"), name.replace(".csv.gz", ".row_ids")
    expected = {name, name + ".json", ids} | ({parquet_name, parquet_name + ".json"} if parquet else set())
    assert set(purged["removed"]) == expected and execution.metric("purge_download", "bytes_freed") > 0
    assert not [p.name for p in Path(purged["folder"]).iterdir() if p.name.startswith(name.split(".")[0])]


def _ids(dsn: str, taxi: str, month: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT unique_row_id, count(*) FROM {MIRROR_DATASETS[taxi].table} WHERE filename = %s GROUP BY 1 ORDER BY 1",
            [MIRROR_DATASETS[taxi].file_name(Month.parse(month))],
        ).fetchall()


def _bq_ids(settings: Settings, taxi: str, month: str) -> list[tuple]:
    from taxi_assets.gcp import bigquery_client

    sql = (
        f"SELECT unique_row_id, count(*) AS n FROM `{settings.gcp_project}.{settings.gcp_dataset}.{MIRROR_DATASETS[taxi].table}`"
        f" WHERE filename = '{MIRROR_DATASETS[taxi].file_name(Month.parse(month))}' GROUP BY 1 ORDER BY 1"
    )
    return [tuple(r.values()) for r in bigquery_client(settings).query(sql).result()]


# -- Validation by Kestra itself ------------------------------------------------------------------


def test_every_flow_is_accepted_by_kestra_with_no_warning(kestra, tmp_path):
    results = kestra.validate({p.name: p.read_text() for p in FLOW_FILES})
    assert sorted(results) == [p.name for p in FLOW_FILES]
    for name, result in results.items():
        assert result.get("constraints") is None, f"{name}: {result['constraints']}"
        assert [result.get(k, []) for k in ("warnings", "deprecationPaths", "infos")] == [[], [], []], name
    # What `--flow-path` loads: the loader skips an invalid flow with a warning only, so count.
    # (the marts' flow is loaded, and counted, by tests/test_kestra_marts.py's engine)
    loaded = kestra.request(op="load", dir=str(flows_without_marts(tmp_path / "flows")))["loaded"]
    assert sorted(loaded) == sorted(f"{NAMESPACE}.{p.stem}" for p in FLOW_FILES if p.stem != MARTS_FLOW)


def with_month_default(flow: dict, value: str) -> str:
    """The flow's YAML with its month input's default set to `value` (Kestra validates a default;
    it wants an input with one required)."""
    inputs = [{**i, "defaults": value, "required": True} if i["id"] == "month" else i for i in flow["inputs"]]
    return yaml.safe_dump({**flow, "inputs": inputs}, sort_keys=False, allow_unicode=True)


def test_kestra_matches_each_month_validator_as_the_flow_rule_does(kestra):
    """tests/flow_rules.py checks each month validator against the published months with
    Python's re.fullmatch, for Kestra's whole-value match; here Kestra's own StringInput judges
    the bounds (the first and last published month, the months just outside, malformed months;
    not the empty text, which as a default means none) and agrees with it."""
    cases = {}
    for path in FLOW_FILES:
        flow = yaml.safe_load(path.read_text())
        if not any(i["id"] == "month" for i in flow.get("inputs") or []):
            continue
        first, last = published_span(flow)
        months = [first, last or OPEN_ENDED_UNTIL, first.previous(), *([last.next()] if last else [])]
        for value in [str(m) for m in months] + [v for v in malformed(first) if v.strip()]:
            cases[f"{path.stem} month {value!r}"] = (with_month_default(flow, value), flow, value)
    assert len({name.split()[0] for name in cases}) == 6, "every flow with a month input"
    results = kestra.validate({name: text for name, (text, _, _) in cases.items()})
    for name, (_, flow, value) in cases.items():
        validator = next(i["validator"] for i in flow["inputs"] if i["id"] == "month")
        refused = "Invalid default for input 'month'" in (results[name].get("constraints") or "")
        assert refused == (not matches(validator, value)), f"{name}: {results[name].get('constraints')}"
        if not refused:
            assert results[name].get("constraints") is None, f"{name}: {results[name]['constraints']}"


def _swap(flow: str, old: str, new: str, count: int = 1):
    return flow, old, new, count


# Each: (flow, text replaced, replacement, occurrences) and a fragment of Kestra's message.
BROKEN = {
    "misspelled taskRunner": (_swap("postgres_taxi", "    taskRunner:\n", "    taskRuner:\n"), "taskRuner"),
    "misspelled optional property": (_swap("postgres_taxi", "    env:\n", "    evn:\n"), "evn"),
    "ENUM input type": (_swap("postgres_taxi", "type: SELECT", "type: ENUM"), "ENUM"),
    "BOOLEAN input type": (
        _swap("postgres_taxi", "inputs:\n", "inputs:\n  - id: purge\n    type: BOOLEAN\n    defaults: true\n"),
        "BOOLEAN",
    ),
    "SELECT default outside its values": (
        _swap("postgres_taxi", "defaults: green", "defaults: blue"),
        "Invalid default for input 'taxi'",
    ),
    "STRING default failing its validator": (
        _swap("postgres_taxi", 'defaults: "2019-01"', 'defaults: "2019-13"'),
        "Invalid default for input 'month'",
    ),
    "bad cron on the yellow schedule": (
        _swap("postgres_taxi_scheduled", 'cron: "0 10 1 * *"', 'cron: "0 10 1 * * *"'),
        "cron",
    ),
    "bad cron on the fhv schedule": (_swap("gcp_taxi_scheduled", 'cron: "0 11 1 * *"', 'cron: "0 11 32 * *"'), "cron"),
    "invalid timezone": (
        _swap("postgres_taxi_scheduled", "timezone: America/New_York", "timezone: America/Gotham"),
        "timezone",
    ),
    "trigger conditions": (
        _swap(
            "postgres_taxi_scheduled",
            "    inputs:\n      taxi: green\n",
            "    inputs:\n      taxi: green\n    conditions:\n      - type: io.kestra.plugin.core.condition.Weekend\n",
        ),
        "conditions",
    ),
    "pluginDefaults": (
        _swap(
            "postgres_taxi",
            "tasks:\n",
            "pluginDefaults:\n  - type: io.kestra.plugin.core.runner.Process\n    values: {}\ntasks:\n",
        ),
        "pluginDefaults",
    ),
    "unknown task type": (
        _swap("postgres_taxi", "io.kestra.plugin.core.execution.Labels", "io.kestra.plugin.core.execution.Label"),
        "io.kestra.plugin.core.execution.Label",
    ),
}


def broken_flow(flow: str, old: str, new: str, count: int) -> str:
    text = (FLOWS_DIR / f"{flow}.yaml").read_text()
    assert text.count(old) >= count, f"{flow}.yaml no longer contains {old!r}: update the case"
    return text.replace(old, new, count)


def test_kestra_rejects_each_broken_copy_of_our_flows(kestra):
    sources = {case: broken_flow(*swap) for case, (swap, _) in BROKEN.items()}
    results = kestra.validate(sources)
    for case, (_, fragment) in BROKEN.items():
        message = results[case].get("constraints")
        assert message, f"Kestra accepted the flow with a {case}"
        assert fragment in message, f"{case}: Kestra said {message!r}"
        print(f"{case}: {' '.join(message.split())[:160]}")


# -- Execution by Kestra --------------------------------------------------------------------------


@pytest.mark.parametrize("taxi", sorted(MIRROR_DATASETS))
def test_postgres_taxi_loads_the_month_dagster_loads(kestra, stack, source, pg_dsn, taxi):
    month = "2019-03"
    execution = run(kestra, "postgres_taxi", {"taxi": taxi, "month": month})
    assert execution.state == "SUCCESS", execution
    assert execution.labels == {"project": "taxi-assets", "taxi": taxi, "month": month}
    outputs = execution.outputs("load_postgres")["vars"]
    assert (outputs["rows_loaded"], outputs["month"], outputs["taxi"]) == (2_000, month, taxi)
    assert execution.metric("load_postgres", "rows") == 2_000
    assert execution.metric("load_postgres", "duplicate_rows") == outputs["duplicate_rows"]
    # The execution's download stays in the worker's state folder: BigQuery is configured too ...
    assert_month_kept(execution, stack, taxi, month, waiting_for="bigquery")
    # ... and Dagster, on the same state folder, loads that very copy: the same rows, one download.
    csv, postgres, _, _ = build_taxi_chain(MIRROR_DATASETS[taxi])
    dagster_side = replace(stack, postgres_dsn=pg_dsn)
    assert dg.materialize([csv, postgres], partition_key=month, resources=dagster_resources(dagster_side)).success
    assert source.downloads[f"/{taxi}/{MIRROR_DATASETS[taxi].file_name(Month.parse(month))}"] == 1
    kestra_ids = _ids(stack.postgres_dsn, taxi, month)
    assert kestra_ids == _ids(pg_dsn, taxi, month) and sum(n for _, n in kestra_ids) == 2_000


@pytest.mark.parametrize("taxi", sorted(MIRROR_DATASETS))
def test_gcp_taxi_loads_the_bigquery_rows_dagster_loads(kestra, stack, taxi):
    month = "2019-04"
    assert run(kestra, "gcp_setup").state == "SUCCESS"
    execution = run(kestra, "gcp_taxi", {"taxi": taxi, "month": month})
    assert execution.state == "SUCCESS", execution
    assert execution.labels == {"project": "taxi-assets", "taxi": taxi, "month": month}
    assert execution.metric("upload_gcs", "rows") == 2_000 and execution.metric("upload_gcs", "bytes") > 0
    assert execution.outputs("load_bigquery")["vars"]["rows"] == execution.metric("load_bigquery", "rows") == 2_000
    assert_month_kept(execution, stack, taxi, month, waiting_for="postgres")
    # Dagster's chain into a bucket and dataset of its own, from the same state folder.
    dagster_side = replace(stack, gcp_bucket=stack.gcp_bucket + "-dg", gcp_dataset=stack.gcp_dataset + "_dg")
    ensure_bucket(dagster_side)
    ensure_dataset(dagster_side)
    csv, _, gcs, bigquery = build_taxi_chain(MIRROR_DATASETS[taxi])
    resources = dagster_resources(dagster_side)
    assert dg.materialize([csv, gcs, bigquery], partition_key=month, resources=resources).success
    kestra_ids = _bq_ids(stack, taxi, month)
    assert kestra_ids == _bq_ids(dagster_side, taxi, month) and sum(n for _, n in kestra_ids) == 2_000


def test_scheduled_flows_on_a_schedule_tick_load_the_month_dagster_requests(kestra, stack):
    tick = "2019-03-01T10:00-05:00[America/New_York]"  # yellow's tick, 10:00 New York on the 1st
    execution = kestra.tick("postgres_taxi_scheduled", "yellow_schedule", tick)
    assert_no_secret_in_logs(execution, kestra)
    assert execution.state == "SUCCESS", execution
    assert execution.labels == {"project": "taxi-assets", "taxi": "yellow", "month": "2019-02"}
    assert parse_instant(execution.data["trigger"]["date"]) == parse_instant(tick)
    # The month is loaded by postgres_taxi, the Subflow's child execution, whose id the ledger records.
    assert execution.task_states == dict.fromkeys(["pick_month", "label", "load_month"], "SUCCESS")
    assert execution.outputs("load_month")["outputs"] == {"rows_postgres": 2_000}
    child = subflow(kestra, execution)
    assert child.state == "SUCCESS" and child.data["id"] != execution.data["id"], child
    assert child.labels == {"project": "taxi-assets", "taxi": "yellow", "month": "2019-02"}
    assert child.outputs("load_postgres")["vars"]["rows_loaded"] == 2_000
    assert loaded_by(stack, ledger.POSTGRES, "yellow", "2019-02") == f"kestra:{child.data['id']}"
    assert sum(n for _, n in _ids(stack.postgres_dsn, "yellow", "2019-02")) == 2_000
    schedule = defs.resolve_schedule_def("yellow_trips_monthly")
    with dg.build_schedule_context(
        scheduled_execution_time=parse_instant(tick), repository_def=defs.get_repository_def()
    ) as context:
        assert [r.partition_key for r in schedule.evaluate_tick(context).run_requests] == ["2019-02"]

    gcp = kestra.tick("gcp_taxi_scheduled", "fhv_schedule", "2020-01-01T11:00-05:00[America/New_York]")
    assert_no_secret_in_logs(gcp, kestra)
    assert gcp.state == "SUCCESS", gcp
    assert gcp.labels["month"] == "2019-12" and gcp.outputs("load_month")["outputs"] == {"rows_bigquery": 2_000}
    child = subflow(kestra, gcp)
    assert child.labels["month"] == "2019-12" and child.metric("load_bigquery", "rows") == 2_000
    assert loaded_by(stack, ledger.BIGQUERY, "fhv", "2019-12") == f"kestra:{child.data['id']}"
    assert_month_kept(child, stack, "fhv", "2019-12", waiting_for="postgres")


def test_scheduled_flows_run_by_hand_load_the_month_given(kestra, stack):
    execution = run(kestra, "postgres_taxi_scheduled", {"taxi": "green", "month": "2019-05"})
    assert execution.state == "SUCCESS", execution
    assert execution.labels["month"] == "2019-05"
    assert execution.outputs("load_month")["outputs"] == {"rows_postgres": 2_000}
    assert subflow(kestra, execution).labels["month"] == "2019-05"
    assert sum(n for _, n in _ids(stack.postgres_dsn, "green", "2019-05")) == 2_000
    assert_month_kept(subflow(kestra, execution), stack, "green", "2019-05", waiting_for="bigquery")
    gcp = run(kestra, "gcp_taxi_scheduled", {"taxi": "green", "month": "2019-05"})
    assert gcp.state == "SUCCESS", gcp
    assert gcp.outputs("load_month")["outputs"] == {"rows_bigquery": 2_000}
    child = subflow(kestra, gcp)
    assert child.outputs("load_bigquery")["vars"]["rows"] == 2_000
    # Both stores hold the one download now: the second flow's purge removed it.
    assert_month_purged(child, stack, "green", "2019-05", parquet=True)


def test_getting_started_runs_against_the_local_api(kestra):
    execution = run(kestra, "getting_started")
    assert execution.state == "SUCCESS", execution
    top = execution.outputs("query")["vars"]["top"]
    assert execution.outputs("query")["vars"]["brands"] == 7
    assert [(t["brand"], t["avg_price"]) for t in top[:3]] == [
        ("Calvin Klein", 59.99),
        ("Glamour Beauty", 19.99),
        ("Velvet Touch", 14.99),
    ]


# -- Failure and secrets --------------------------------------------------------------------------


def test_a_missing_month_fails_with_the_cli_line_and_keeps_the_previous_rows(kestra, stack, source):
    month = "2020-06"
    assert run(kestra, "postgres_taxi", {"taxi": "green", "month": month}).state == "SUCCESS"
    before = _ids(stack.postgres_dsn, "green", month)
    purge_download(stack, MIRROR_DATASETS["green"], Month.parse(month))  # kept for BigQuery: removed by hand
    source.missing.add("green_tripdata_2020-06")
    try:
        execution = run(kestra, "postgres_taxi", {"taxi": "green", "month": month})
    finally:
        source.missing.clear()
    assert execution.state == "FAILED", execution
    assert execution.task_states == {"label": "SUCCESS", "load_postgres": "FAILED"}  # purge never ran
    errors = [line for line in execution.log_text("load_postgres").splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "green_tripdata_2020-06.csv.gz" in errors[0], execution
    assert _ids(stack.postgres_dsn, "green", month) == before and len(before) > 0


def test_a_run_by_hand_without_a_month_takes_the_month_just_ended_and_refuses_it_before_loading(kestra):
    execution = run(kestra, "postgres_taxi_scheduled", {"taxi": "fhv"})
    expected = month_just_ended(parse_instant(datetime.now(tz=NY).isoformat()))
    assert expected not in mirror_months()
    assert_refused_by_the_subflow_input(execution, str(expected))


def test_secrets_reach_the_tasks_from_kestras_secret_store_only(kestra, stack):
    """The worker's environment has no DSN: the rows can only have come through the secret."""
    assert not {"TAXI_POSTGRES_DSN", "GCP_CREDENTIALS"} & set(kestra.env)
    assert {"SECRET_TAXI_POSTGRES_DSN", "SECRET_GCP_CREDENTIALS"} <= set(kestra.env)
    for flow in FLOW_FILES:
        text = flow.read_text()
        assert PASSWORD not in text and "postgresql://" not in text
    execution = run(kestra, "postgres_taxi", {"taxi": "yellow", "month": "2021-07"})
    assert execution.state == "SUCCESS", execution
    assert sum(n for _, n in _ids(stack.postgres_dsn, "yellow", "2021-07")) == 2_000


def test_the_service_account_key_reaches_tasks_through_the_secret_store(classpath, tmp_path_factory, stack):
    """On Google Cloud (no emulators) the CLI parses GCP_CREDENTIALS: a second engine whose
    worker is set up so shows the key arrived (its fields are read and found wanting, as this
    one is no real key), while no log shows it. The real Google is out of reach here."""
    on_google = replace(stack, storage_emulator=None, bigquery_emulator=None, gcp_project="taxi-assets-test")
    engine = Kestra(
        classpath, tmp_path_factory.mktemp("kestra-google"), worker_env(on_google) | secret_env(SECRETS(stack))
    )
    try:
        engine.request(op="load", dir=str(flows_without_marts(tmp_path_factory.mktemp("flows"))))
        execution = run(engine, "gcp_setup")
    finally:
        engine.close()
    assert execution.state == "FAILED", execution
    errors = [line for line in execution.log_text("gcp_setup").splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: GCP_CREDENTIALS is not a usable service-account key ("), (
        execution
    )


# -- Same clock, same month -----------------------------------------------------------------------

SAME_CLOCK = [  # (taxi, its New York tick): DST changes, the year's turn, the published range's end
    ("green", datetime(2019, 4, 1, 9, tzinfo=NY)),
    ("yellow", datetime(2019, 11, 1, 10, tzinfo=NY)),
    ("fhv", datetime(2020, 1, 1, 11, tzinfo=NY)),
    ("green", datetime(2021, 8, 1, 9, tzinfo=NY)),
    ("yellow", datetime(2021, 9, 1, 10, tzinfo=NY)),
]


@pytest.mark.parametrize(("taxi", "tick"), SAME_CLOCK, ids=[f"{t}-{d:%Y-%m}" for t, d in SAME_CLOCK])
def test_the_same_tick_gives_the_same_month_in_both_orchestrators(kestra, stack, taxi, tick):
    """Kestra's schedule runs the flow at the tick (its first task asks the package for the
    month); Dagster's schedule is evaluated at the same tick: one month, or none for both."""
    flow = yaml.safe_load((FLOWS_DIR / "postgres_taxi_scheduled.yaml").read_text())
    trigger = next(t for t in flow["triggers"] if t["id"] == f"{taxi}_schedule")
    schedule = defs.resolve_schedule_def(f"{taxi}_trips_monthly")
    assert (trigger["cron"], trigger["timezone"]) == (schedule.cron_schedule, schedule.execution_timezone)
    assert trigger["cron"] == f"0 {tick.hour} {tick.day} * *", "the tick is one of both schedules'"

    execution = kestra.tick("postgres_taxi_scheduled", trigger["id"], tick.isoformat() + f"[{TIMEZONE}]")
    assert_no_secret_in_logs(execution, kestra)
    kestra_month = execution.labels["month"]
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        result = schedule.evaluate_tick(context)
    if Month.parse(kestra_month) in mirror_months():
        assert execution.state == "SUCCESS", execution
        assert subflow(kestra, execution).labels["month"] == kestra_month
        assert [r.partition_key for r in result.run_requests] == [kestra_month]
        assert sum(n for _, n in _ids(stack.postgres_dsn, taxi, kestra_month)) == 2_000
    else:  # past the published range: Kestra's Subflow refuses the month, Dagster skips saying so
        assert_refused_by_the_subflow_input(execution, kestra_month)
        assert not result.run_requests and f"{taxi} {kestra_month} is not published" in result.skip_message


def test_the_documented_backfill_runs_every_published_month_once(kestra):
    """The backfill request docs/kestra.md documents names a real flow and trigger, and the
    ticks of its window, as Kestra's Schedule evaluates them, load each published month once."""
    doc = (ROOT / "docs" / "kestra.md").read_text()
    body = json.loads(re.search(r"triggers/backfill/create \\\n\s+-d '(\{.*?\})'", doc, re.S).group(1))
    flow = yaml.safe_load((FLOWS_DIR / f"{body['flowId']}.yaml").read_text())
    assert flow["namespace"] == body["namespace"]
    trigger = next(t for t in flow["triggers"] if t["id"] == body["triggerId"])
    minute, hour, day = (int(x) for x in trigger["cron"].split()[:3])
    start, end = (datetime.fromisoformat(body["backfill"][k]).replace(tzinfo=NY) for k in ("start", "end"))
    months, tick = [], start.replace(day=day, hour=hour, minute=minute)
    while tick < end:
        if tick >= start:
            evaluated = kestra.tick(body["flowId"], trigger["id"], tick.isoformat() + f"[{TIMEZONE}]", run=False)
            months.append(str(month_just_ended(parse_instant(evaluated["trigger"]["date"]))))
        tick = (tick + timedelta(days=32)).replace(day=day)
    assert months == [str(m) for m in mirror_months()]
