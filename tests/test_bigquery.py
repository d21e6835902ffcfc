"""load-bigquery on the emulators: parity with Postgres, re-runs, bad objects, bad config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from helpers import run_cli, settings_env

from taxi_assets import config
from taxi_assets.datasets import GREEN
from taxi_assets.errors import ConfigError, LoadError
from taxi_assets.gcp import bigquery_client
from taxi_assets.months import Month
from taxi_assets.steps.bigquery import load_bigquery, month_rows, table_id
from taxi_assets.steps.extract import extract
from taxi_assets.steps.gcp_setup import ensure_dataset
from taxi_assets.steps.gcs import ensure_bucket, object_name, upload_gcs
from taxi_assets.steps.postgres import load_postgres

JAN, FEB = Month(2019, 1), Month(2019, 2)


@pytest.fixture
def bq_settings(gcs_settings, bq_emulator, request):
    dataset = "ds_" + gcs_settings.gcp_bucket.replace("-", "_")
    settings = replace(gcs_settings, bigquery_emulator=bq_emulator, gcp_dataset=dataset)
    ensure_bucket(settings)
    ensure_dataset(settings)
    return settings


def _to_bigquery(settings, month=JAN):
    info = extract(settings, GREEN, month)
    upload_gcs(settings, GREEN, month, Path(info.path))
    return info, load_bigquery(settings, GREEN, month, expected_rows=info.data_lines)


def _bq(settings, sql):
    return list(bigquery_client(settings).query(sql).result())


def test_bigquery_and_postgres_hold_the_same_rows_and_ids(bq_settings):
    info, report = _to_bigquery(bq_settings)
    with psycopg.connect(bq_settings.postgres_dsn) as conn:
        load_postgres(conn, GREEN, JAN, Path(info.path))
        pg_ids = sorted(r[0] for r in conn.execute("SELECT unique_row_id FROM green_tripdata"))
        pg_total = conn.execute("SELECT round(sum(total_amount)::numeric, 2) FROM green_tripdata").fetchone()[0]
    table = table_id(bq_settings, GREEN)
    bq_ids = sorted(r[0] for r in _bq(bq_settings, f"SELECT unique_row_id FROM `{table}`"))
    bq_total = _bq(bq_settings, f"SELECT ROUND(SUM(total_amount), 2) FROM `{table}`")[0][0]
    assert report.rows == info.data_lines == len(bq_ids) == len(pg_ids) == 2_000
    assert bq_ids == pg_ids
    assert float(bq_total) == pytest.approx(float(pg_total))


def test_a_rerun_replaces_the_month_only(bq_settings):
    _to_bigquery(bq_settings, JAN)
    _to_bigquery(bq_settings, FEB)
    _, again = _to_bigquery(bq_settings, JAN)
    client = bigquery_client(bq_settings)
    assert again.rows == 2_000
    assert month_rows(client, bq_settings, GREEN, JAN) == month_rows(client, bq_settings, GREEN, FEB) == 2_000
    tables = [t.table_id for t in client.list_tables(f"{bq_settings.gcp_project}.{bq_settings.gcp_dataset}")]
    assert tables == ["green_tripdata"]  # no scratch table left behind


def test_a_corrupt_object_fails_and_keeps_the_previous_rows(bq_settings, fake_gcs):
    _to_bigquery(bq_settings, JAN)
    stored = Path(fake_gcs[1]) / bq_settings.gcp_bucket / object_name(GREEN, JAN)
    stored.write_bytes(stored.read_bytes()[:1000])  # what a damaged object would look like
    with pytest.raises(LoadError, match="BigQuery load failed, previous rows kept"):
        load_bigquery(bq_settings, GREEN, JAN)
    assert month_rows(bigquery_client(bq_settings), bq_settings, GREEN, JAN) == 2_000


def test_a_missing_object_says_what_to_run(bq_settings):
    with pytest.raises(
        ConfigError, match=r"green_tripdata_2019-02.parquet does not exist; run upload-gcs for green 2019-02 first"
    ):
        load_bigquery(bq_settings, GREEN, FEB)


def test_the_cloud_steps_from_the_cli(bq_settings):
    env = {
        **settings_env(bq_settings),
        config.GCP_BUCKET_NAME: bq_settings.gcp_bucket + "-cli",
        config.GCP_DATASET: bq_settings.gcp_dataset + "_cli",
    }
    for step in (
        ["gcp-setup"],
        ["upload-gcs", "--taxi", "green", "--month", "2019-03"],
        ["load-bigquery", "--taxi", "green", "--month", "2019-03"],
    ):
        result = run_cli(*step, env=env)
        assert result.returncode == 0, result.stderr
    assert '"rows": 2000' in result.stdout
