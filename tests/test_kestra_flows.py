"""What Kestra itself cannot check in our flows (its parser and validator check the rest, in
tests/test_kestra_engine.py): tasks stay thin calls of the package; inputs given by triggers and
Subflows, expressions and If conditions name what exists (tests/flow_rules.py, each rule shown
to catch a mistake made in a real flow); every secret a flow reads is documented for the one
`.env` both orchestrators use."""

from __future__ import annotations

import re

import pytest
import yaml
from flow_rules import expression_rule, flows_by_key, if_rule, input_rule, secret_rule
from helpers import ROOT

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
def test_every_expression_parses_and_names_inputs_and_earlier_tasks_of_its_flow(path):
    assert expression_rule(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_every_if_condition_is_an_expression(path):
    assert if_rule(yaml.safe_load(path.read_text())) == []


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
        'month: "{{ outputs.load_postgres.vars.month }}"', expression_rule,
        "reads load_postgres's outputs, but load_postgres does not run before label",
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
