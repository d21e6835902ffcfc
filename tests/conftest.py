"""Shared fixtures: a real Postgres (fresh database per test), a local release server.

Postgres: `TAXI_TEST_POSTGRES_DSN` (an admin DSN of a server you run), or,
when unset, an embedded Postgres started for the session, so the suite needs no set-up (under
pytest-xdist, one per worker: each worker's basetemp is its own folder).

Markers by need, set here rather than in each test file: `jvm` (Kestra's engine: Java 25 and
Maven) and `browser` (Chromium). `python3 dev.py test --fast` runs `-m "not jvm and not browser"`.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import replace

import psycopg
import pytest
from helpers import free_port, running_bqemulator, wait_http

from taxi_assets.config import Settings
from taxi_assets.emulators import fake_gcs_command
from taxi_assets.samples.mirror_server import SampleServer

SAMPLE_ROWS = 2_000  # rows in each generated month served by the local release server

# Modules whose every test runs Kestra's engine (tests/kestra_harness.py builds it with Maven).
JVM_MODULES = {"test_kestra_engine", "test_kestra_levels", "test_kestra_tlc"}
# Fixtures that build or start Kestra's engine: a test elsewhere that asks for one needs the JVM too
# (test_wrong_month's Kestra test borrows test_kestra_tlc's `kestra`).
JVM_FIXTURES = {"kestra", "classpath"}
BROWSER_MODULES = {"test_ui"}
# Modules whose tests build marts with dbt end to end (seconds a build, a minute or two in all).
DBT_MODULES = {"test_marts", "test_dagster_marts"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        module = item.module.__name__ if item.module else ""
        if module in JVM_MODULES or JVM_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.jvm)
        if module in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
        if module in DBT_MODULES:
            item.add_marker(pytest.mark.dbt)


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
def local_release(tmp_path) -> SampleServer:
    """A release server of this test's own, for planting bad files."""
    server = SampleServer(tmp_path / "release", rows=SAMPLE_ROWS).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory):
    """fsouza/fake-gcs-server, the binary its Docker image runs: (endpoint, filesystem root)."""
    root, port = tmp_path_factory.mktemp("gcs"), free_port()
    proc = subprocess.Popen(fake_gcs_command(root, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/storage/v1/b", proc, "fake-gcs-server")
    yield url, root
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def bq_emulator(fake_gcs, tmp_path_factory):
    """bqemulator (DuckDB-backed BigQuery REST API), reading gs:// from fake-gcs-server's files."""
    with running_bqemulator(fake_gcs[1], tmp_path_factory.mktemp("bqemu") / "log") as url:
        yield url


@pytest.fixture
def gcs_settings(settings, fake_gcs, request):
    """Settings on the emulators, with a bucket of this test's own."""
    import hashlib

    bucket = "taxi-" + hashlib.md5(request.node.nodeid.encode()).hexdigest()[:10]
    return replace(settings, storage_emulator=fake_gcs[0], gcp_bucket=bucket)


@pytest.fixture
def cloud_settings(gcs_settings, bq_emulator):
    """Settings on both emulators, with a bucket and dataset of this test's own."""
    return replace(
        gcs_settings, bigquery_emulator=bq_emulator, gcp_dataset="ds_" + gcs_settings.gcp_bucket.replace("-", "_")
    )
