"""Shared fixtures: a real Postgres (fresh database per test), a local release server.

Postgres: `TAXI_TEST_POSTGRES_DSN` (an admin DSN; CI points it at the machine's server), or,
when unset, an embedded Postgres started for the session, so the suite needs no set-up.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest

from taxi_assets import config
from taxi_assets.config import Settings
from taxi_assets.sample_server import SampleServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLE_ROWS = 2_000  # rows in each generated month served by the local release server


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory) -> str:
    dsn = os.environ.get("TAXI_TEST_POSTGRES_DSN")
    if not dsn:
        from taxi_assets.database import embedded_dsn

        dsn = embedded_dsn(Settings(state_dir=tmp_path_factory.mktemp("embedded-admin")))
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.fail(f"TAXI_TEST_POSTGRES_DSN={dsn!r} does not answer: {exc}", pytrace=False)
    return dsn


def _with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture
def pg_dsn(pg_admin_dsn) -> str:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"taxi_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield _with_dbname(pg_admin_dsn, name)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def source_server(tmp_path_factory) -> SampleServer:
    """The local release server: generated months with the real header and quirks."""
    server = SampleServer(tmp_path_factory.mktemp("release"), rows=SAMPLE_ROWS).start()
    yield server
    server.shutdown()


@pytest.fixture
def settings(tmp_path, source_server, pg_dsn) -> Settings:
    return Settings(
        source_url=source_server.url,
        state_dir=tmp_path / "state",
        postgres_dsn=pg_dsn,
        http_retries=3,
        http_backoff=0.01,
    )


@pytest.fixture
def taxi_env(monkeypatch, settings) -> Settings:
    """The same settings, as the environment the CLI and Dagster read."""
    monkeypatch.setenv(config.SOURCE_URL, settings.source_url)
    monkeypatch.setenv(config.STATE_DIR, str(settings.state_dir))
    monkeypatch.setenv(config.POSTGRES_DSN, settings.postgres_dsn)
    monkeypatch.setenv(config.HTTP_BACKOFF, "0.01")
    return settings


@pytest.fixture
def local_release(tmp_path) -> SampleServer:
    """A release server of this test's own, for planting bad files."""
    server = SampleServer(tmp_path / "release", rows=SAMPLE_ROWS).start()
    yield server
    server.shutdown()
