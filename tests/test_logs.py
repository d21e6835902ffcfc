"""taxi_assets/logs.py: plain stderr lines by default, Kestra's log protocol with TAXI_LOG_FORMAT=kestra.

The engine's side (Kestra reading the lines at their levels) is tests/test_kestra_levels.py.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading

import pytest
from helpers import ROOT, unconfigured_env

from taxi_assets.logs import LOG_FORMAT, KestraFormatter

PROTOCOL = re.compile(r"^::(\{.*})::$")  # Kestra's TaskLogLineMatcher.LOG_DATA_SYNTAX, per line


def parsed(line: str) -> list[dict]:
    """What Kestra reads from a line: the `logs` entries, or none when the line is not the protocol's."""
    match = PROTOCOL.match(line)
    return json.loads(match[1]).get("logs", []) if match else []


def record(level: int, message: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("taxi_assets.steps.extract", level, __file__, 1, message, None, exc_info)


@pytest.mark.parametrize(
    "level, kestra",
    [
        (logging.DEBUG, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARN"),  # SLF4J's name: "WARNING" would void the line
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "ERROR"),
    ],
)
def test_a_record_is_one_protocol_line_at_its_kestra_level(level, kestra):
    line = KestraFormatter().format(record(level, "downloaded green_tripdata_2019-01.csv.gz"))
    assert parsed(line) == [
        {"level": kestra, "message": "taxi_assets.steps.extract: downloaded green_tripdata_2019-01.csv.gz"}
    ]


def test_newlines_quotes_and_the_protocols_own_brackets_stay_in_one_valid_line():
    message = 'two\nlines\r\n "quoted" \\ {braced} }:: ::{ and ü\u2028'
    line = KestraFormatter().format(record(logging.INFO, message))
    assert line.splitlines() == [line] and line.isascii()  # Java's readLine splits at \n and \r only
    assert parsed(line) == [{"level": "INFO", "message": f"taxi_assets.steps.extract: {message}"}]


def test_a_traceback_stays_inside_its_one_message():
    try:
        raise ValueError("boom")
    except ValueError:
        line = KestraFormatter().format(record(logging.DEBUG, "unexpected failure", sys.exc_info()))
    [entry] = parsed(line)
    assert entry["message"].startswith("taxi_assets.steps.extract: unexpected failure\nTraceback")
    assert entry["message"].endswith("ValueError: boom")


# A command that fails unexpectedly, after a progress line and a Python warning.
FAILING = """
import logging, sys, warnings
from taxi_assets import cli

def step(args, settings):
    logging.getLogger("taxi_assets.steps.x").info("halfway")
    warnings.warn("deprecated thing")
    raise RuntimeError("disk on fire")

cli.COMMANDS["extract"] = (step, "")
sys.exit(cli.main(sys.argv[1:]))
"""


def run_failing(*args: str, kestra: bool) -> subprocess.CompletedProcess:
    env = unconfigured_env() | ({LOG_FORMAT: "kestra"} if kestra else {})
    return subprocess.run(
        [sys.executable, "-c", FAILING, *args, "extract", "--taxi", "green", "--month", "2019-01"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_without_kestra_logs_and_the_error_line_go_to_stderr_as_before():
    result = run_failing(kestra=False)
    assert result.returncode == 2 and result.stdout == ""
    assert re.search(r"^\S+ \S+ INFO taxi_assets.steps.x: halfway$", result.stderr, re.M), result.stderr
    assert result.stderr.splitlines()[-1] == "error: unexpected RuntimeError: disk on fire"


def test_under_kestra_progress_warnings_and_the_error_line_are_protocol_lines_on_stdout():
    result = run_failing(kestra=True)
    assert result.returncode == 2 and result.stderr == ""  # nothing Kestra would log at ERROR by itself
    entries = [entry for line in result.stdout.splitlines() for entry in parsed(line)]
    assert [e["level"] for e in entries] == ["INFO", "WARN", "ERROR"], result.stdout
    assert entries[0]["message"] == "taxi_assets.steps.x: halfway"
    assert "UserWarning: deprecated thing" in entries[1]["message"]
    assert entries[2]["message"] == "error: unexpected RuntimeError: disk on fire"


def test_under_kestra_verbose_adds_the_traceback_as_one_debug_line():
    result = run_failing("--verbose", kestra=True)
    entries = [entry for line in result.stdout.splitlines() for entry in parsed(line)]
    debug = [e["message"] for e in entries if e["level"] == "DEBUG" and "Traceback" in e["message"]]
    assert len(debug) == 1 and debug[0].endswith("RuntimeError: disk on fire"), result.stdout
    assert entries[-1] == {"level": "ERROR", "message": "error: unexpected RuntimeError: disk on fire"}


def test_under_kestra_a_line_is_on_stdout_while_the_step_still_runs():
    """Kestra shows what it has read: a long step's progress must not wait in stdout's buffer."""
    code = (
        "import logging, sys; from taxi_assets.logs import setup_logging; setup_logging(False); "
        "logging.getLogger('taxi_assets').info('started'); sys.stdin.read()"  # then waits for the test
    )
    # Buffered as in Kestra's worker: stdout a pipe and no PYTHONUNBUFFERED (which this suite may have).
    env = {k: v for k, v in unconfigured_env().items() if k != "PYTHONUNBUFFERED"} | {LOG_FORMAT: "kestra"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    watchdog = threading.Timer(30, proc.kill)  # a line stuck in the buffer: fail, not hang
    watchdog.start()
    try:
        first = proc.stdout.readline()
        assert proc.poll() is None, "the process ended before its line was read"
        assert parsed(first) == [{"level": "INFO", "message": "taxi_assets: started"}]
    finally:
        watchdog.cancel()
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
