"""kestra_flows/taxi_marts.yaml on Kestra 2.0's own engine: a month's dbt marts built after its
loads, started by Kestra's Flow trigger (the executor evaluates every Flow trigger when an
execution ends, as in a server), against the local release server and the test Postgres.

The worker's environment is the stack's, as in tests/test_kestra_engine.py: settings as plain
variables, the DSN and the service-account key as open-source Kestra secrets.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from helpers import unconfigured_env
from kestra_harness import (
    FLOWS_DIR,
    NAMESPACE,
    Execution,
    GappyServer,
    Kestra,
    build,
    database_with_password,
    secret_env,
    stack_settings,
)

from taxi_assets import config, marts_ledger
from taxi_assets.config import Settings
from taxi_assets.months import Month

FLOW = "taxi_marts"
PASSWORD = "kestra-marts-" + uuid.uuid4().hex  # a DSN password no log may show
KEY_JSON = json.dumps({"type": "service_account", "client_email": "k@p.iam.gserviceaccount.com", "private_key": "x"})
REVENUE = "marts_mirror.fct_monthly_zone_revenue"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    server = GappyServer(tmp_path_factory.mktemp("marts-release"), rows=2_000).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, source, pg_admin_dsn) -> Settings:
    with database_with_password(pg_admin_dsn, "kestra_marts", PASSWORD) as dsn:
        yield stack_settings(tmp_path_factory, "marts", dsn, source_url=source.url)


@pytest.fixture(scope="module")
def kestra(tmp_path_factory, stack):
    settings = {
        config.SOURCE_URL: stack.source_url,
        config.STATE_DIR: str(stack.state_dir),
        config.HTTP_BACKOFF: "0.01",
    }
    path = f"{Path(sys.executable).parent}:{unconfigured_env()['PATH']}"  # `python`: the project's
    env = unconfigured_env() | {"PATH": path} | settings
    secrets = {"TAXI_POSTGRES_DSN": stack.postgres_dsn, "GCP_CREDENTIALS": KEY_JSON}
    classpath = build(tmp_path_factory.mktemp("maven") / "maven.log")
    engine = Kestra(classpath, tmp_path_factory.mktemp("kestra"), env | secret_env(secrets))
    loaded = engine.request(op="load", dir=str(FLOWS_DIR))["loaded"]  # every flow: the loads trigger the marts
    assert sorted(loaded) == sorted(f"{NAMESPACE}.{p.stem}" for p in FLOWS_DIR.glob("*.yaml"))
    yield engine
    engine.close()


def assert_no_secret_in_logs(execution: Execution, kestra: Kestra) -> None:
    forms = [PASSWORD, *(v for k, v in kestra.env.items() if k.startswith("SECRET_"))]
    assert not [form for form in forms if form in execution.log_text()], "a secret is in the execution's logs"


def revenue_rows(stack: Settings, month: str) -> int:
    with psycopg.connect(stack.postgres_dsn) as conn:
        query = f"SELECT count(*) FROM {REVENUE} WHERE revenue_month = %s::date"
        return conn.execute(query, [f"{month}-01"]).fetchone()[0]


def built_rows(execution: Execution) -> dict[str, int]:
    return execution.outputs("marts_postgres")["vars"]["rows"]


def load(kestra: Kestra, taxi: str, month: str) -> Execution:
    execution = kestra.run("postgres_taxi", {"taxi": taxi, "month": month})
    assert_no_secret_in_logs(execution, kestra)
    return execution


def marts_after(kestra: Kestra, load: Execution) -> Execution:
    """The one taxi_marts execution the load started through the Flow trigger."""
    [execution] = kestra.triggered(load, FLOW)
    assert_no_secret_in_logs(execution, kestra)
    return execution


def test_kestra_accepts_the_flow_with_no_warning(kestra):
    [result] = kestra.validate({"taxi_marts.yaml": (FLOWS_DIR / "taxi_marts.yaml").read_text()}).values()
    assert result.get("constraints") is None, result["constraints"]
    assert [result.get(k, []) for k in ("warnings", "deprecationPaths", "infos")] == [[], [], []]


def test_a_postgres_load_starts_the_marts_build_of_its_month(kestra, stack):
    month = "2019-03"
    loaded = load(kestra, "green", month)
    assert loaded.state == "SUCCESS", loaded
    marts = marts_after(kestra, loaded)
    assert marts.state == "SUCCESS", marts
    # Kestra's Flow trigger: which trigger, which execution, and the inputs it mapped.
    assert marts.data["trigger"]["executionId"] == loaded.data["id"]
    assert marts.data["trigger"]["flowId"] == "postgres_taxi" and marts.data["trigger"]["state"] == "SUCCESS"
    assert marts.data["inputs"] == {"source": "mirror", "store": "postgres", "month": month}
    assert marts.labels == {"project": "taxi-assets", "source": "mirror", "store": "postgres", "month": month}
    assert marts.task_states == {"label": "SUCCESS", "marts_postgres": "SUCCESS", "marts_bigquery": "SKIPPED"}
    built = marts.outputs("marts_postgres")["vars"]
    assert (built["store"], built["schema"], built["feeds"]) == ("postgres", "marts_mirror", {"green": 2_000})
    assert built["rows"]["fct_monthly_zone_revenue"] == revenue_rows(stack, month) > 0
    assert marts.metric("marts_postgres", "fct_monthly_zone_revenue_rows") == revenue_rows(stack, month)

    # The next load of the month starts another build (the trigger's window does not stick),
    # which now holds both feeds.
    again = load(kestra, "yellow", month)
    assert again.state == "SUCCESS", again
    rebuilt = marts_after(kestra, again)
    assert rebuilt.state == "SUCCESS" and rebuilt.data["id"] != marts.data["id"], rebuilt
    assert rebuilt.outputs("marts_postgres")["vars"]["feeds"] == {"green": 2_000, "yellow": 2_000}
    assert len(kestra.triggered(loaded, FLOW)) == 1  # and the first load still started one only
    # The store's marts ledger records Kestra's newest build, where Dagster's sensor reads it.
    recorded = marts_ledger.builds(stack, "postgres", "marts_mirror")[Month.parse(month)]
    assert recorded.built_by == f"kestra:{rebuilt.data['id']}" and recorded.rows == built_rows(rebuilt)


def test_a_failed_load_starts_no_build(kestra, source):
    month = "2020-06"
    source.missing.add("green_tripdata_2020-06")
    try:
        failed = load(kestra, "green", month)
    finally:
        source.missing.clear()
    assert failed.state == "FAILED", failed
    # A load that ends after it and succeeds: by the time its build exists, the executor has
    # processed the failed execution's end too (one executor, one queue, in order).
    loaded = load(kestra, "fhv", month)
    assert loaded.state == "SUCCESS" and marts_after(kestra, loaded).state == "SUCCESS"
    assert kestra.triggered(failed, FLOW, count=0) == []


def test_a_month_with_no_load_fails_with_the_cli_error_line_at_error_level(kestra, stack):
    execution = kestra.run(FLOW, {"source": "mirror", "store": "postgres", "month": "2020-11"})
    assert_no_secret_in_logs(execution, kestra)
    assert execution.state == "FAILED", execution
    assert execution.task_states == {"label": "SUCCESS", "marts_postgres": "FAILED"}, execution
    errors = [e["message"] for e in execution.logs if e["level"] == "ERROR"]
    ours = [m for m in errors if "Command failed with exit code" not in m]
    assert len(ours) == 1 and ours[0].startswith("error: mirror 2020-11: no feed of the month is loaded"), execution
    assert not [e for e in execution.logs if e["message"].startswith("error:") and e["level"] != "ERROR"]
    assert revenue_rows(stack, "2020-11") == 0


def test_each_trigger_maps_its_load_to_the_marts_it_feeds():
    """What each upstream flow's success builds: the flow rules check the mapping against what the
    upstream flow loads (tests/flow_rules.py, flow_trigger_rule); here it is spelled out."""
    flow = yaml.safe_load((FLOWS_DIR / "taxi_marts.yaml").read_text())
    mapping = {
        (t["dependsOn"][0]["flowId"], t["inputs"]["source"], t["inputs"]["store"], t["inputs"]["month"])
        for t in flow["triggers"]
    }
    month = "{{ inputs.month }}"  # the loading execution's month input
    assert mapping == {
        ("postgres_taxi", "mirror", "postgres", month),
        ("gcp_taxi", "mirror", "bigquery", month),
        ("tlc_taxi", "tlc", "postgres", month),
        ("tlc_taxi", "tlc", "bigquery", month),
    }
    assert {s for t in flow["triggers"] for d in t["dependsOn"] for s in d["states"]} == {"SUCCESS"}
