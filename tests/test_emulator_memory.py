"""The embedded cloud within bounded memory (issue 20): the real fake-gcs-server and bqemulator.

fake-gcs-server keeps a resumable upload's chunks in memory (about 6x the object at its peak),
so upload-gcs streams an emulator its object in one request, which it writes holding it once;
bqemulator's DuckDB runs within a memory limit instead of 80% of the machine.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import google_crc32c
import pytest
from google.cloud import bigquery
from helpers import free_port, running_bqemulator, wait_http

from taxi_assets.datasets import GREEN
from taxi_assets.emulators import DUCKDB_MEMORY_LIMIT, fake_gcs_command, go_env
from taxi_assets.files import parquet_path
from taxi_assets.gcp import bigquery_client, storage_client
from taxi_assets.months import Month
from taxi_assets.samples.mirror_data import write_month
from taxi_assets.steps import gcs
from taxi_assets.steps.bigquery import schema
from taxi_assets.steps.extract import extract
from taxi_assets.steps.gcp_setup import ensure_dataset
from taxi_assets.steps.gcs import DOWNLOAD_SHA256, converted_from, ensure_bucket, upload_gcs
from taxi_assets.stores import crc32c_b64, object_name

JAN = Month(2019, 1)
MB = 2**20
ROWS = 50_000


def _peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), MB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


@pytest.fixture
def own_fake_gcs(tmp_path):
    """A fake-gcs-server of this test's own, started as the embedded default starts it (its
    memory settings included), so its high-water mark is this test's upload alone."""
    port = free_port()
    proc = subprocess.Popen(
        fake_gcs_command(tmp_path / "gcs", port),
        env=go_env(dict(os.environ)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/storage/v1/b", proc, "fake-gcs-server")
    yield url, proc
    proc.terminate()
    proc.wait(10)


def test_the_gcs_emulator_holds_a_streamed_upload_once_not_chunk_by_chunk(settings, own_fake_gcs, monkeypatch):
    url, proc = own_fake_gcs
    monkeypatch.setattr(gcs, "CHUNK", 4 * MB)  # many pieces, as a month's 32 MB ones
    settings = replace(settings, storage_emulator=url, gcp_bucket="taxi-memory")
    ensure_bucket(settings)
    data = os.urandom(48 * MB)  # incompressible: the emulator cannot hold less than it
    before = _peak_rss_mb(proc.pid)
    bucket = storage_client(settings).bucket(settings.gcp_bucket)
    blob = gcs._emulator_upload(
        settings, bucket, "green/o.parquet", "gs://taxi-memory/green/o.parquet", io.BytesIO(data), "ab12"
    )
    grew = _peak_rss_mb(proc.pid) - before
    crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
    assert (blob.size, blob.crc32c, converted_from(blob)) == (len(data), crc, "ab12")
    assert bucket.blob("green/o.parquet").download_as_bytes() == data
    # Held once while written, in a buffer that doubles: under 4x. A resumable upload of the same
    # object, every chunk kept and the whole read back after, takes the emulator over 6x.
    assert grew < 4 * len(data) / MB, f"fake-gcs-server grew by {grew:.0f} MB for a {len(data) // MB} MB object"


def test_upload_gcs_streams_an_emulator_each_upload_in_one_request(gcs_settings, monkeypatch):
    sent = []
    real = gcs._emulator_upload

    def recorded(settings, bucket, name, uri, stream, sha256):
        blob = real(settings, bucket, name, uri, stream, sha256)
        sent.append((name, sha256, blob.size))
        return blob

    monkeypatch.setattr(gcs, "_emulator_upload", recorded)
    monkeypatch.setattr(gcs, "CHUNK", 256 * 1024)
    ensure_bucket(gcs_settings)
    info = extract(gcs_settings, GREEN, JAN)
    path = Path(info.path)
    first = upload_gcs(gcs_settings, GREEN, JAN, path)  # converting while uploading
    stored = storage_client(gcs_settings).bucket(gcs_settings.gcp_bucket).blob(object_name(GREEN, JAN))
    stored.upload_from_string(b"PAR1 not this month PAR1")
    gcs.upload_record_path(path).unlink()  # no record: the object is compared
    again = upload_gcs(gcs_settings, GREEN, JAN, path)  # converted, then the local file sent
    assert first.uploaded and again.uploaded
    name = object_name(GREEN, JAN)
    assert sent == [(name, info.sha256, first.bytes), (name, info.sha256, first.bytes)]
    blob = storage_client(gcs_settings).bucket(gcs_settings.gcp_bucket).get_blob(name)
    assert (blob.crc32c, blob.size) == (crc32c_b64(parquet_path(path)), first.bytes)
    assert blob.metadata == {DOWNLOAD_SHA256: info.sha256}
    assert blob.download_as_bytes() == parquet_path(path).read_bytes()


def test_a_missing_bucket_is_one_clear_line_for_a_streamed_upload(gcs_settings):
    bucket = storage_client(gcs_settings).bucket(gcs_settings.gcp_bucket)
    with pytest.raises(gcs.ConfigError, match=f"^bucket {gcs_settings.gcp_bucket} does not exist; run"):
        gcs._emulator_upload(gcs_settings, bucket, "o", "gs://x/o", io.BytesIO(b"PAR1"), None)


@pytest.fixture
def own_bqemulator(fake_gcs, tmp_path):
    """A bqemulator of this test's own with a database file, as the embedded default runs it
    (`with_local_cloud`), reading gs:// from the session's fake-gcs-server."""
    with running_bqemulator(fake_gcs[1], tmp_path / "bqemulator.log", tmp_path / "bigquery") as url:
        yield url


def _duckdb(settings, sql: str) -> list:
    return list(bigquery_client(settings).query(sql).result())


def test_the_bigquery_emulator_loads_within_its_limit_and_keeps_no_table_blocks_after(
    gcs_settings, own_bqemulator, tmp_path
):
    settings = replace(gcs_settings, bigquery_emulator=own_bqemulator, gcp_dataset="ds_memory")
    ensure_bucket(settings)
    ensure_dataset(settings)
    path = tmp_path / GREEN.file_name(JAN)
    write_month(path, GREEN, JAN, ROWS, seed=8)
    uri = upload_gcs(settings, GREEN, JAN, path).uri
    client = bigquery_client(settings)
    table = f"{settings.gcp_project}.{settings.gcp_dataset}.loaded"
    client.create_table(bigquery.Table(table, schema=schema(GREEN)))
    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET)
    client.load_table_from_uri(uri, table, job_config=config).result()
    assert _duckdb(settings, f"SELECT COUNT(*) AS n FROM `{table}`")[0].n == ROWS
    # Its DuckDB within the limit, not 80% of the machine ("1GB" shows as "953.6 MiB")...
    value, unit = _duckdb(settings, "SELECT current_setting('memory_limit') AS m")[0].m.split()
    wanted = int(DUCKDB_MEMORY_LIMIT.removesuffix("GB")) * 1e9
    assert unit == "MiB" and abs(float(value) * MB - wanted) < 0.1 * MB, (value, unit)
    # ... and after each job it gave back the table blocks it cached: the load's, the snapshot's
    # (MB here, hundreds of MB at a month's scale), not to hold them while the next step runs.
    cached = _duckdb(settings, "SELECT SUM(memory_usage_bytes) AS b FROM duckdb_memory() WHERE tag = 'BASE_TABLE'")
    assert cached[0].b <= 2 * MB, f"{cached[0].b / MB:.1f} MB of table blocks still cached"
