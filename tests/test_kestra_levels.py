"""Log levels on Kestra 2.0's own engine: a successful execution is not red, a failure is red once.

Kestra logs a script task's stderr at ERROR, so the CLI logs by Kestra's protocol there instead
(taxi_assets/logs.py; the engine's worker has TAXI_LOG_FORMAT=kestra, as the Kestra image does).
A small flow of our own runs `extract` against the local release server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import unconfigured_env
from kestra_harness import NAMESPACE, Kestra, build

from taxi_assets import config

PROCESS = "taskRunner:\n      type: io.kestra.plugin.core.runner.Process"
EXTRACT = "python -m taxi_assets extract --taxi green --month {{ inputs.month }}"
FLOWS = {
    # extract, lose the download, extract again: INFO, then WARN (the record outlived its file), INFO.
    "log_levels": f"""
id: log_levels
namespace: {NAMESPACE}
inputs:
  - id: month
    type: STRING
tasks:
  - id: extract
    type: io.kestra.plugin.scripts.shell.Commands
    {PROCESS}
    commands:
      - {EXTRACT}
  - id: lose_download
    type: io.kestra.plugin.scripts.shell.Commands
    {PROCESS}
    commands:
      - rm {{{{ outputs.extract.vars.path }}}}
  - id: extract_again
    type: io.kestra.plugin.scripts.shell.Commands
    {PROCESS}
    commands:
      - {EXTRACT}
""",
    # A message no plain line could carry: newline, quotes, braces, the protocol's own `}::`, non-ASCII.
    "awkward_message": f"""
id: awkward_message
namespace: {NAMESPACE}
tasks:
  - id: say
    type: io.kestra.plugin.scripts.shell.Commands
    {PROCESS}
    commands:
      - |-
        python -c 'import logging; from taxi_assets.logs import setup_logging; setup_logging(False); logging.getLogger("taxi_assets").warning("two\\nlines, \\"quoted\\", {{braced}} }}:: and \\u00fc")'
""",
}
AWKWARD = 'taxi_assets: two\nlines, "quoted", {braced} }:: and ü'


@pytest.fixture(scope="module")
def kestra(tmp_path_factory, source_server):
    flows = tmp_path_factory.mktemp("level-flows")
    for name, text in FLOWS.items():
        (flows / f"{name}.yaml").write_text(text)
    env = unconfigured_env() | {
        "PATH": f"{Path(sys.executable).parent}:{unconfigured_env()['PATH']}",  # `python`: the project's
        config.SOURCE_URL: source_server.url,
        config.STATE_DIR: str(tmp_path_factory.mktemp("level-state")),
        config.HTTP_BACKOFF: "0.01",
    }
    engine = Kestra(build(tmp_path_factory.mktemp("maven") / "maven.log"), tmp_path_factory.mktemp("kestra"), env)
    assert sorted(engine.request(op="load", dir=str(flows))["loaded"]) == sorted(f"{NAMESPACE}.{f}" for f in FLOWS)
    yield engine
    engine.close()


def ours(execution) -> list[tuple[str, str]]:
    """(level, message) of what the CLI logged: its loggers' lines and its `error:` line, not Kestra's own."""
    return [
        (e["level"], e["message"]) for e in execution.logs if e.get("message", "").startswith(("taxi_assets", "error:"))
    ]


def test_a_successful_execution_logs_progress_at_info_and_warnings_at_warn_with_no_error(kestra):
    execution = kestra.run("log_levels", {"month": "2019-01"})
    assert execution.state == "SUCCESS", execution
    assert not [e for e in execution.logs if e["level"] == "ERROR"], execution
    lines = ours(execution)
    assert [level for level, _ in lines] == ["INFO", "WARN", "INFO"], lines
    assert "downloaded green_tripdata_2019-01.csv.gz" in lines[0][1]
    assert "green_tripdata_2019-01.csv.gz is gone but its record is not" in lines[1][1]
    assert execution.outputs("extract_again")["vars"]["downloaded"] is True  # outputs lines still parsed


def test_a_failed_execution_logs_one_error_line_the_cli_error(kestra):
    execution = kestra.run("log_levels", {"month": "2030-02"})  # not published: the server answers 404
    assert execution.state == "FAILED" and execution.task_states == {"extract": "FAILED"}, execution
    errors = [e["message"] for e in execution.logs if e["level"] == "ERROR"]
    # Besides ours, Kestra's own verdict on the task: "Command failed with exit code 1" (twice).
    from_the_command = [m for m in errors if "Command failed with exit code 1" not in m]
    assert len(from_the_command) == 1, execution
    assert from_the_command[0].startswith("error: green 2030-02 is not published ("), execution


def test_a_message_with_newlines_quotes_and_the_protocols_own_brackets_arrives_whole(kestra):
    execution = kestra.run("awkward_message")
    assert execution.state == "SUCCESS", execution
    assert ours(execution) == [("WARN", AWKWARD)], execution
