"""What Kestra itself cannot check in our flows (its parser and validator check the rest, in
tests/test_kestra_engine.py): tasks stay thin calls of the package, and every secret a flow
reads is documented for the one `.env` both orchestrators use."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import ROOT

from taxi_assets.cli import COMMANDS

FLOWS = sorted((ROOT / "kestra_flows").glob("*.yaml"))
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
    for name in re.findall(r"secret\('(\w+)'\)", path.read_text()):
        assert name in DOCUMENTED, f"secret {name} is not in .env.example"


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
