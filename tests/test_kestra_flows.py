"""What Kestra itself cannot check in our flows (its parser and validator check the rest, in
tests/test_kestra_engine.py): tasks stay thin calls of the package; inputs given by triggers and
Subflows, expressions and If conditions name what exists; Flow triggers depend on our flows'
stated ends and build what those flows loaded; every input says what it is; taxi and
month inputs offer exactly what the project publishes (tests/flow_rules.py, each rule shown to
catch a mistake made in a real flow); every secret a flow reads is documented for the one `.env`
both orchestrators use."""

from __future__ import annotations

import re

import pytest
import yaml
from flow_rules import (
    all_tasks,
    description_rule,
    expression_rule,
    flow_trigger_rule,
    flows_by_key,
    if_rule,
    input_rule,
    published_rule,
    secret_rule,
)
from helpers import ROOT
from kestra_harness import NAMESPACE

from taxi_assets import ledger
from taxi_assets.cli import COMMANDS

FLOWS = sorted((ROOT / "kestra_flows").glob("*.yaml"))
ALL_FLOWS = flows_by_key([yaml.safe_load(path.read_text()) for path in FLOWS])
DOCUMENTED = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|MERGE\s+INTO|(CREATE|DROP|ALTER|TRUNCATE)\s+TABLE|COPY\s.+\s(FROM|TO))\b",
    re.I,
)


def _tasks(items: list[dict]):
    """Every task, flowable tasks (WorkingDirectory) opened up."""
    for item in items:
        yield item
        yield from _tasks(item.get("tasks", []))


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_every_command_is_a_step_of_the_package(path):
    flow = yaml.safe_load(path.read_text())
    commands = [c for task in _tasks(flow["tasks"]) for c in task.get("commands", [])]
    assert commands, "a flow of ours runs the package"
    for command in commands:
        prefix, _, rest = command.partition("python -m taxi_assets ")
        assert prefix == "" and rest.split()[0] in COMMANDS, f"not a `python -m taxi_assets <step>` call: {command}"
    assert not SQL.search(path.read_text()), "SQL belongs in the package, not in YAML"
    assert not [t["type"] for t in _tasks(flow["tasks"]) if ".jdbc." in t["type"] or t["type"].endswith("Query")]


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_every_secret_is_documented_in_env_example(path):
    assert secret_rule(yaml.safe_load(path.read_text()), DOCUMENTED) == []


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_triggers_and_subflows_give_only_inputs_their_flow_declares_with_valid_values(path):
    assert input_rule(yaml.safe_load(path.read_text()), ALL_FLOWS) == []


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_flow_triggers_depend_on_our_flows_ending_as_stated_and_map_what_they_loaded(path):
    assert flow_trigger_rule(yaml.safe_load(path.read_text()), ALL_FLOWS) == []


def test_the_marts_are_built_after_every_flow_that_loads_a_store():
    """Each flow that loads Postgres or BigQuery starts taxi_marts for that store on success."""
    triggers = [t for t in ALL_FLOWS[NAMESPACE, "taxi_marts"]["triggers"] if t["type"].endswith(".trigger.Flow")]
    built = {(d["flowId"], t["inputs"]["store"]) for t in triggers for d in t["dependsOn"]}
    loads = {"load-postgres": "postgres", "load-bigquery": "bigquery"}
    loaded = {
        (flow["id"], store)
        for flow in ALL_FLOWS.values()
        for t in all_tasks(flow)
        for c in t.get("commands", [])
        for step, store in loads.items()
        if f"taxi_assets {step} " in c
    }
    assert built == loaded


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_every_expression_parses_and_names_inputs_and_earlier_tasks_of_its_flow(path):
    assert expression_rule(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_every_if_condition_is_an_expression(path):
    assert if_rule(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_every_input_has_a_description(path):
    assert description_rule(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_taxi_and_month_inputs_offer_exactly_what_the_project_publishes(path):
    """taxi_assets.datasets (each feed's first_month, last_month; months.py's mirror range) is
    the one source of the months: each month validator is compiled and matched as Kestra
    matches it, and must accept every published month and refuse those just outside."""
    assert published_rule(yaml.safe_load(path.read_text())) == []


def test_every_month_input_is_checked_against_the_published_months():
    """The rule above looks at inputs named `month`: every flow with a month in its inputs has one."""
    with_month = [
        key[1] for key, flow in ALL_FLOWS.items() if any(i["id"] == "month" for i in flow.get("inputs") or [])
    ]
    assert sorted(with_month) == [
        "gcp_taxi",
        "gcp_taxi_scheduled",
        "postgres_taxi",
        "postgres_taxi_scheduled",
        "taxi_marts",
        "tlc_taxi",
    ]


def test_every_flow_is_in_one_dotted_namespace_and_calls_its_subflows_there():
    """Kestra keys a flow by namespace and id: the harness, the README's API calls and every
    Subflow task name this one."""
    assert {namespace for namespace, _ in ALL_FLOWS} == {NAMESPACE} and "." in NAMESPACE
    subflows = [t for flow in ALL_FLOWS.values() for t in all_tasks(flow) if t["type"].endswith(".Subflow")]
    assert subflows and {t["namespace"] for t in subflows} == {NAMESPACE}


def test_scheduled_flows_call_their_base_flow_as_a_subflow_and_copy_none_of_its_steps():
    """Each step list lives in one place: a scheduled flow picks the month and hands it to its
    base flow (a Subflow that waits and fails with it); it runs no step that loads or checks."""
    for scheduled, base in [("postgres_taxi_scheduled", "postgres_taxi"), ("gcp_taxi_scheduled", "gcp_taxi"),
                            ("tlc_taxi_scheduled", "tlc_taxi")]:  # fmt: skip
        tasks = all_tasks(ALL_FLOWS[NAMESPACE, scheduled])
        calls = [t for t in tasks if t["type"].endswith(".Subflow")]
        assert [(t["flowId"], t["wait"], t["transmitFailed"]) for t in calls] == [(base, True, True)], scheduled
        steps = {c.split()[3] for t in tasks for c in t.get("commands", [])}
        assert steps in ({"schedule-month"}, {"newest-month"}), scheduled


def mutant(flow: str, old: str, new: str) -> dict:
    """A real flow with one mistake typed into its YAML (at the first place `old` is)."""
    text = (ROOT / "kestra_flows" / f"{flow}.yaml").read_text()
    assert old in text, f"{old!r} is not in {flow}: update this mutant"
    return yaml.safe_load(text.replace(old, new, 1))


def inputs_of(flow: dict) -> list[str]:
    return input_rule(flow, ALL_FLOWS | flows_by_key([flow]))


MUTANTS = {
    "schedule gives an undeclared input": (
        "tlc_taxi_scheduled", "      taxi: green\n", "      taxii: green\n", inputs_of,
        "trigger green_schedule gives input 'taxii', which tlc_taxi_scheduled does not declare",
    ),
    "subflow gives an undeclared input": (
        "tlc_taxi_scheduled", '          taxi: "{{ inputs.taxi }}"', '          taxii: "{{ inputs.taxi }}"', inputs_of,
        "task load_month gives input 'taxii', which tlc_taxi does not declare",
    ),
    "schedule gives a value outside the SELECT's": (
        "postgres_taxi_scheduled", "      taxi: fhv\n", "      taxi: fhvhv\n", inputs_of,
        "trigger fhv_schedule gives taxi='fhvhv': not one of ['yellow', 'green', 'fhv']",
    ),
    "subflow gives a value the STRING's validator refuses": (
        "tlc_taxi_scheduled", '          month: "{{ outputs.newest_month.vars.month }}"', '          month: "2024-13"',
        inputs_of, "task load_month gives month='2024-13': does not match",
    ),
    "schedule leaves out a required input": (
        "postgres_taxi_scheduled", "    required: false\n", "    required: true\n", inputs_of,
        "trigger green_schedule does not give postgres_taxi_scheduled's required input 'month', which has no default",
    ),
    "expression names a missing input": (
        "postgres_taxi", 'month: "{{ inputs.month }}"', 'month: "{{ inputs.mnth }}"', expression_rule,
        "label: '{{ inputs.mnth }}' names inputs.mnth, which postgres_taxi does not declare",
    ),
    "expression names a missing task's output": (
        "tlc_taxi_scheduled", "{{ not outputs.newest_month.vars.loaded }}",
        "{{ not outputs.newest_months.vars.loaded }}", expression_rule,
        "unless_loaded: '{{ not outputs.newest_months.vars.loaded }}' names outputs.newest_months, which is no task",
    ),
    "expression reads a task that runs later": (
        "postgres_taxi_scheduled", 'month: "{{ outputs.pick_month.vars.month }}"',
        'month: "{{ outputs.load_month.outputs.month }}"', expression_rule,
        "reads load_month's outputs, but load_month does not run before label",
    ),
    "expression reads vars of a task that prints none": (
        "tlc_taxi_scheduled", '          month: "{{ outputs.newest_month.vars.month }}"',
        '          month: "{{ outputs.label.vars.month }}"', expression_rule,
        "load_month: '{{ outputs.label.vars.month }}' reads label's vars, which only a script task prints",
    ),
    "expression with unbalanced braces": (
        "postgres_taxi", 'taxi: "{{ inputs.taxi }}"', 'taxi: "{{ inputs.taxi }"', expression_rule,
        "label: '{{ inputs.taxi }' does not parse",
    ),
    "expression that does not parse": (
        "postgres_taxi", 'taxi: "{{ inputs.taxi }}"', 'taxi: "{{ inputs.taxi | }}"', expression_rule,
        "label: '{{ inputs.taxi | }}' does not parse",
    ),
    "plain-text If condition": (
        "tlc_taxi_scheduled", '"{{ not outputs.newest_month.vars.loaded }}"', '"not outputs.newest_month.vars.loaded"',
        if_rule, "task unless_loaded: condition 'not outputs.newest_month.vars.loaded' is not one {{ expression }}",
    ),
    "input without a description": (
        "postgres_taxi", "    description: The taxi type, one of the mirror's feeds.\n", "", description_rule,
        "input taxi has no description",
    ),
    "month validator one month too far": (
        "postgres_taxi", "2021-0[1-7]", "2021-0[1-8]", published_rule,
        "month validator accepts '2021-08', outside the published months (2019-01..2021-07)",
    ),
    "month validator one month short": (
        "gcp_taxi_scheduled", "2021-0[1-7]", "2021-0[1-6]", published_rule,
        "month validator refuses 2021-07, published (2019-01..2021-07)",
    ),
    "month validator without its first year": (
        "tlc_taxi", '"^(2009|20[1-9][0-9])', '"^(20[1-9][0-9])', published_rule,
        "month validator refuses 2009-01, 2009-02",
    ),
    "month validator accepting month 00": (
        "postgres_taxi_scheduled", '"^(2019-(0[1-9]|1[0-2])', '"^(2019-(0[0-9]|1[0-2])', published_rule,
        "month validator accepts '2019-00', outside the published months",
    ),
    "month description naming another first month": (
        "tlc_taxi", "fhvhv from 2019-02", "fhvhv from 2019-03", published_rule,
        "input month's description does not name 2019-02",
    ),
    "taxi SELECT offering a feed the source lacks": (
        "gcp_taxi", "values: [yellow, green, fhv]", "values: [yellow, green, fhv, fhvhv]", published_rule,
        "input taxi offers ['yellow', 'green', 'fhv', 'fhvhv'], the mirror feeds are ['fhv', 'green', 'yellow']",
    ),
    "flow trigger on any end of its flow": (
        "taxi_marts", "        states: [SUCCESS]\n", "", lambda flow: flow_trigger_rule(flow, ALL_FLOWS),
        "trigger after_postgres_taxi: its dependency on postgres_taxi lists no states",
    ),
    "flow trigger on a flow that is not ours": (
        "taxi_marts", "flowId: postgres_taxi", "flowId: postgres_taxis", lambda flow: flow_trigger_rule(flow, ALL_FLOWS),
        "trigger after_postgres_taxi depends on taxi.assets.postgres_taxis, which is no flow of ours",
    ),
    "flow trigger building a store its flow does not load": (
        "taxi_marts", "      store: postgres\n", "      store: bigquery\n", lambda flow: flow_trigger_rule(flow, ALL_FLOWS),
        "trigger after_postgres_taxi gives store='bigquery', which postgres_taxi does not load",
    ),
    "flow trigger building another source's marts": (
        "taxi_marts", "      source: tlc\n", "      source: mirror\n", lambda flow: flow_trigger_rule(flow, ALL_FLOWS),
        "trigger after_tlc_taxi_postgres gives source='mirror', but tlc_taxi loads from tlc",
    ),
    "flow trigger reading an input its flow lacks": (
        "taxi_marts", '  store: postgres\n      month: "{{ inputs.month }}"', '  store: postgres\n      month: "{{ inputs.store }}"',
        lambda flow: flow_trigger_rule(flow, ALL_FLOWS),
        "trigger after_postgres_taxi: '{{ inputs.store }}' names inputs.store, which postgres_taxi (the execution",
    ),
    "flow trigger reading an output its flow lacks": (
        "taxi_marts", '  store: postgres\n      month: "{{ inputs.month }}"', '  store: postgres\n      month: "{{ trigger.outputs.month }}"',
        lambda flow: flow_trigger_rule(flow, ALL_FLOWS),
        "names trigger.outputs.month, which postgres_taxi does not declare",
    ),
    "flow trigger giving an undeclared input": (
        "taxi_marts", "      store: postgres\n", "      stores: postgres\n", inputs_of,
        "trigger after_postgres_taxi gives input 'stores', which taxi_marts does not declare",
    ),
    "source SELECT offering a source we lack": (
        "taxi_marts", "values: [mirror, tlc]", "values: [mirror, tlc, nyc]", published_rule,
        "input source offers ['nyc'], which are no sources",
    ),
    "misspelled secret": (
        "postgres_taxi", "secret('TAXI_POSTGRES_DSN')", "secret('TAXI_POSTGRES_DNS')",
        lambda flow: secret_rule(flow, DOCUMENTED), "secret TAXI_POSTGRES_DNS is not in .env.example",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("flow", "old", "new", "rule", "expected"), MUTANTS.values(), ids=MUTANTS)
def test_each_rule_catches_a_mistake_kestra_would_accept(flow, old, new, rule, expected):
    problems = rule(mutant(flow, old, new))
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_every_load_names_its_execution_for_the_ledger_and_is_checked_after(path):
    """A load by Kestra is recorded as Kestra's (`kestra:<execution id>`), not the CLI's, and the
    store it loaded is checked later in the same flow."""
    tasks = list(_tasks(yaml.safe_load(path.read_text())["tasks"]))
    commands = [" ".join(t.get("commands", [])) for t in tasks]
    stores = {"load-postgres": "postgres", "upload-gcs": "gcs", "load-bigquery": "bigquery"}
    for i, (task, command) in enumerate(zip(tasks, commands, strict=True)):
        step = next((s for s in stores if f"taxi_assets {s} " in command), None)
        if step is None:
            continue
        if step != "upload-gcs":
            assert task.get("env", {}).get(ledger.LOADED_BY) == "kestra:{{ execution.id }}", task["id"]
        assert any(f"check --store {stores[step]} " in later for later in commands[i + 1 :]), task["id"]


def test_every_flow_that_loads_has_a_concurrency_limit():
    for path in FLOWS:
        flow = yaml.safe_load(path.read_text())
        if any("load-" in c or "upload-" in c for t in flow["tasks"] for c in t.get("commands", [])):
            assert flow.get("concurrency", {}).get("limit") == 1, path.stem


def test_a_flow_that_downloads_removes_the_download_last():
    """Kestra's state volume must not fill up over a backfill: the last task purges."""
    for path in FLOWS:
        tasks = yaml.safe_load(path.read_text())["tasks"]
        commands = [c for t in tasks for c in t.get("commands", [])]
        if any(step in c for c in commands for step in ("load-postgres", "upload-gcs", "load-bigquery")):
            assert "purge-download" in commands[-1], path.stem
