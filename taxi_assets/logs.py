"""Where the CLI's log lines and its one `error: ...` line go.

By default (a terminal, cron, Dagster's processes): log lines on stderr, `error: ...` on stderr.

Under Kestra (`TAXI_LOG_FORMAT=kestra`, set in the Kestra image) that would be wrong: since 0.21 a
script task logs every stderr line at ERROR, so a successful execution would be all red and the one
real failure line would look like the progress around it. There each record is instead one stdout
line of Kestra's log protocol, `::{"logs": [{"level": "INFO", "message": "..."}]}::`, which Kestra
logs at that level. Verified in Kestra 2.0.0's core: the script tasks' DefaultLogConsumer hands every
line to PluginUtilsService.parseOut, whose TaskLogLineMatcher (io.kestra.core.models.tasks.runners)
matches `^::(\\{.*})::$` and logs each `logs` entry at its `level`, an SLF4J `Level` name; lines that
do not match go to INFO (stdout) or ERROR (stderr).
"""

from __future__ import annotations

import json
import logging
import os
import sys

LOG_FORMAT = "TAXI_LOG_FORMAT"  # "kestra": Kestra's log protocol on stdout; anything else: plain stderr

# SLF4J's level names, which Kestra parses `level` with: one it does not know ("WARNING") voids the line.
_KESTRA_LEVELS = ((logging.ERROR, "ERROR"), (logging.WARNING, "WARN"), (logging.INFO, "INFO"), (logging.DEBUG, "DEBUG"))

_for_kestra = False  # decided once, by setup_logging


def kestra_level(levelno: int) -> str:
    """The SLF4J level of a Python level: CRITICAL is ERROR, WARNING is WARN, below DEBUG is TRACE."""
    return next((name for floor, name in _KESTRA_LEVELS if levelno >= floor), "TRACE")


def kestra_line(level: str, message: str) -> str:
    """One line of Kestra's log protocol. JSON escapes newlines, carriage returns and quotes, so a
    message of any text stays the one line Kestra reads; ASCII leaves nothing to a decoder."""
    return "::" + json.dumps({"logs": [{"level": level, "message": message}]}) + "::"


class KestraFormatter(logging.Formatter):
    """A record as one line of Kestra's log protocol. No time or level in the message: Kestra adds
    both; a traceback (`--verbose`) stays inside the one message."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return kestra_line(kestra_level(record.levelno), super().format(record))


def setup_logging(verbose: bool) -> None:
    """Our own INFO lines (what a step did); other libraries only from WARNING (alembic, for one,
    would print its migrations of Dagster's storage). verbose: everything, at DEBUG."""
    global _for_kestra
    _for_kestra = os.environ.get(LOG_FORMAT, "").strip().lower() == "kestra"
    if _for_kestra:
        # The stream the outputs lines use, so the two stay in order; StreamHandler flushes every
        # record, so a long step shows its progress while it runs, not when stdout's buffer fills.
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(KestraFormatter())
        logging.captureWarnings(True)  # Python's warnings at WARN too, not as raw stderr (ERROR)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    if not verbose:
        logging.getLogger("taxi_assets").setLevel(logging.INFO)


def print_error(message: str) -> None:
    """The one line a failed command ends with, `error: <message>`: on stderr, or under Kestra a
    protocol line at ERROR, after the progress lines on the same stream."""
    line = f"error: {message}"
    if _for_kestra:
        print(kestra_line("ERROR", line), flush=True)
    else:
        print(line, file=sys.stderr, flush=True)
