"""load-bigquery on the emulators: parity with Postgres, re-runs, bad objects, bad config;
the load job the production path sends to BigQuery."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from google.cloud import bigquery
from helpers import run_cli, settings_env

from taxi_assets import config
from taxi_assets.datasets import GREEN
from taxi_assets.errors import ConfigError, LoadError
from taxi_assets.files import parquet_path
from taxi_assets.gcp import bigquery_client
from taxi_assets.months import Month
from taxi_assets.steps.bigquery import ensure_table, load_bigquery, month_rows, partition_load, schema
from taxi_assets.steps.extract import extract
from taxi_assets.steps.gcp_setup import ensure_dataset
from taxi_assets.steps.gcs import ensure_bucket, upload_gcs
from taxi_assets.steps.postgres import load_postgres
from taxi_assets.stores import object_name, table_id

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
    return info, load_bigquery(settings, GREEN, month, info)


def _bq(settings, sql):
    return list(bigquery_client(settings).query(sql).result())


def _month_ids(settings, month):
    table = table_id(settings, GREEN)
    return sorted(r[0] for r in _bq(settings, f"SELECT unique_row_id FROM `{table}` WHERE month = DATE '{month}-01'"))


def _stored(settings, fake_gcs, month) -> Path:
    """The file fake-gcs-server keeps for the month's object (what bqemulator reads)."""
    return Path(fake_gcs[1]) / settings.gcp_bucket / object_name(GREEN, month)


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
    assert sorted(tables) == ["green_tripdata", "taxi_loads"]  # no scratch table left behind


def test_a_corrupt_object_fails_in_one_line_and_keeps_the_previous_rows(bq_settings, fake_gcs):
    _to_bigquery(bq_settings, JAN)
    stored = _stored(bq_settings, fake_gcs, JAN)
    stored.write_bytes(stored.read_bytes()[:1000])  # what a damaged object would look like
    info = extract(bq_settings, GREEN, JAN)
    with pytest.raises(LoadError, match="BigQuery load failed, previous rows kept") as err:
        load_bigquery(bq_settings, GREEN, JAN, info)
    assert month_rows(bigquery_client(bq_settings), bq_settings, GREEN, JAN) == 2_000
    # bqemulator's own error names the emulator's file under the test's /tmp folder and adds its
    # SQL on further lines: passed on as one line, naming the object instead.
    message = str(err.value)
    assert "\n" not in message and str(fake_gcs[1]) not in message and "/tmp" not in message, message
    assert "/" + str(bq_settings.state_dir) not in message
    uri = f"gs://{bq_settings.gcp_bucket}/{object_name(GREEN, JAN)}"
    assert message.endswith(f"No magic bytes found at end of file '{uri}'"), message


def test_an_object_of_another_month_fails_and_keeps_both_months(bq_settings, fake_gcs):
    """A valid Parquet of February stored as January's object: January's load refuses it before
    touching January, and February does not gain January's copy of its rows."""
    _to_bigquery(bq_settings, JAN)
    feb, _ = _to_bigquery(bq_settings, FEB)
    jan_ids, feb_ids = _month_ids(bq_settings, JAN), _month_ids(bq_settings, FEB)
    _stored(bq_settings, fake_gcs, JAN).write_bytes(parquet_path(Path(feb.path)).read_bytes())
    result = run_cli("load-bigquery", "--taxi", "green", "--month", "2019-01", env=settings_env(bq_settings))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    uri = f"gs://{bq_settings.gcp_bucket}/{object_name(GREEN, JAN)}"
    assert errors[0] == (
        f"error: green 2019-01: {uri} holds rows of green_tripdata_2019-02.csv.gz (2000 of its 2000 rows),"
        " not of green_tripdata_2019-01.csv.gz; previous rows kept; run upload-gcs for green 2019-01 again"
    )
    assert _month_ids(bq_settings, JAN) == jan_ids and len(jan_ids) == 2_000
    assert _month_ids(bq_settings, FEB) == feb_ids and len(feb_ids) == 2_000
    tables = [t.table_id for t in bigquery_client(bq_settings).list_tables(bq_settings.gcp_dataset)]
    assert sorted(tables) == ["green_tripdata", "taxi_loads"]  # the scratch table is dropped on failure too


def test_an_object_short_of_the_files_rows_fails_and_keeps_the_month(bq_settings, fake_gcs):
    """The right month but not the whole file (a stale or partial object): refused before the swap."""
    info, _ = _to_bigquery(bq_settings, JAN)
    ids = _month_ids(bq_settings, JAN)
    local = parquet_path(Path(info.path))
    pq.write_table(pq.read_table(local).slice(0, 1_500), _stored(bq_settings, fake_gcs, JAN))
    with pytest.raises(LoadError) as err:
        load_bigquery(bq_settings, GREEN, JAN, info)
    assert str(err.value).endswith(
        "green_tripdata_2019-01.parquet holds 1500 rows but the file has 2000 data lines;"
        " previous rows kept; run upload-gcs for green 2019-01 again"
    )
    assert _month_ids(bq_settings, JAN) == ids


def test_the_production_load_job_replaces_one_partition_with_the_full_schema(bq_settings):
    """What load-bigquery sends to BigQuery itself (not run here: the emulator rejects decorators)."""
    destination, job = partition_load(bq_settings, GREEN, JAN)
    assert destination == f"{bq_settings.gcp_project}.{bq_settings.gcp_dataset}.green_tripdata$201901"
    assert job.source_format == bigquery.SourceFormat.PARQUET
    assert job.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    assert job.schema == schema(GREEN) and [f.name for f in job.schema][:3] == ["unique_row_id", "filename", "month"]
    assert job.time_partitioning.type_ == "MONTH" and job.time_partitioning.field == "month"
    assert partition_load(bq_settings, GREEN, Month(2020, 12))[0].endswith("$202012")
    # BigQuery refuses a load whose partitioning differs from the table's: they agree.
    client = bigquery_client(bq_settings)
    ensure_table(client, bq_settings, GREEN)
    table = client.get_table(table_id(bq_settings, GREEN))
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("MONTH", "month")
    assert [(f.name, f.field_type) for f in table.schema] == [(f.name, f.field_type) for f in job.schema]


def test_a_missing_object_says_what_to_run(bq_settings):
    with pytest.raises(
        ConfigError, match=r"green_tripdata_2019-02.parquet does not exist; run upload-gcs for green 2019-02 first"
    ):
        load_bigquery(bq_settings, GREEN, FEB, extract(bq_settings, GREEN, FEB))


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
