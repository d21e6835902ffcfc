"""The month as Parquet in a bucket: the real fake-gcs-server binary (filesystem backend)."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import socket
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers import FIXTURES, gzip_fixture, run_cli, settings_env

from taxi_assets import config, parquet
from taxi_assets.datasets import FHV, GREEN, YELLOW
from taxi_assets.errors import BadFileError, ConfigError
from taxi_assets.files import parquet_path, row_ids_path, temp_path
from taxi_assets.gcp import credentials, storage_client
from taxi_assets.monthfile import open_month_file
from taxi_assets.months import Month
from taxi_assets.parquet import conversion_id, write_parquet
from taxi_assets.samples.mirror_data import write_month
from taxi_assets.steps import gcs
from taxi_assets.steps.extract import extract
from taxi_assets.steps.gcs import ensure_bucket, upload_gcs, upload_record_path
from taxi_assets.stores import crc32c_b64, object_name

JAN = Month(2019, 1)


@pytest.fixture(params=["resumable", "streamed"])
def upload_kind(request, monkeypatch) -> str:
    """Both ways an object is sent, each to the real fake-gcs-server: the resumable upload, CHUNK at
    a time, that Google Cloud gets (no real GCS here: the emulator takes it too), and the one
    streamed request an emulator gets (`gcs._emulator_upload`)."""
    monkeypatch.setattr(gcs, "_upload", partial(gcs._upload, resumable=request.param == "resumable"))
    return request.param


def test_parquet_carries_the_postgres_row_ids_and_types(tmp_path):
    csv = gzip_fixture("yellow_tripdata_2020-07_head266.csv", tmp_path / "yellow_tripdata_2020-07.csv.gz", crlf=True)
    rows = write_parquet(csv, tmp_path / "y.parquet", YELLOW, Month(2020, 7))
    table = pq.read_table(tmp_path / "y.parquet")
    lines = (FIXTURES / "yellow_tripdata_2020-07_head266.csv").read_text().splitlines()[1:]
    assert rows == table.num_rows == 266
    assert table.column("unique_row_id").to_pylist() == [hashlib.md5(line.encode()).hexdigest() for line in lines]
    assert set(table.column("filename").to_pylist()) == {"yellow_tripdata_2020-07.csv.gz"}
    first = table.slice(0, 1).to_pylist()[0]
    assert str(first["tpep_pickup_datetime"]).startswith("2020-07-01 00:25:32")
    assert str(first["total_amount"]) == "9.300000000" and first["passenger_count"] == 1
    assert str(table.schema.field("month").type) == "date32[day]"


def test_parquet_of_fhv_has_integers_where_the_file_printed_floats(tmp_path):
    csv = tmp_path / FHV.file_name(JAN)
    write_month(csv, FHV, JAN, 500)
    write_parquet(csv, tmp_path / "f.parquet", FHV, JAN)
    table = pq.read_table(tmp_path / "f.parquet")
    assert str(table.schema.field("sr_flag").type) == "int64"
    assert all("." not in v for v in table.column("pulocationid").drop_null().to_pylist())


def test_upload_is_verified_and_not_repeated(gcs_settings):
    ensure_bucket(gcs_settings)
    info = extract(gcs_settings, GREEN, JAN)
    first = upload_gcs(gcs_settings, GREEN, JAN, Path(info.path))
    assert first.uploaded and first.rows == info.data_lines
    assert first.uri == f"gs://{gcs_settings.gcp_bucket}/green/green_tripdata_2019-01.parquet"
    blob = storage_client(gcs_settings).bucket(gcs_settings.gcp_bucket).get_blob(object_name(GREEN, JAN))
    assert blob.crc32c == first.crc32c == crc32c_b64(Path(info.path).with_name("green_tripdata_2019-01.parquet"))
    again = upload_gcs(gcs_settings, GREEN, JAN, Path(info.path))
    assert not again.uploaded and again.crc32c == first.crc32c


def test_gcp_setup_makes_the_bucket_once(gcs_settings):
    assert ensure_bucket(gcs_settings) is True
    assert ensure_bucket(gcs_settings) is False


def test_a_missing_bucket_says_to_run_gcp_setup_before_converting(gcs_settings):
    """The bucket is checked first: no conversion (15 s for a yellow month) before the error."""
    info = extract(gcs_settings, GREEN, JAN)
    folder = Path(info.path).parent
    before = sorted(folder.iterdir())
    with pytest.raises(ConfigError, match="does not exist; run `python -m taxi_assets gcp-setup`"):
        upload_gcs(gcs_settings, GREEN, JAN, Path(info.path))
    assert not parquet_path(Path(info.path)).exists()
    assert sorted(folder.iterdir()) == before  # not even a temporary Parquet was started


def test_upload_from_the_cli(gcs_settings):
    env = settings_env(gcs_settings)
    ensure_bucket(gcs_settings)
    result = run_cli("upload-gcs", "--taxi", "green", "--month", "2019-01", env=env)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout.splitlines()[0][2:-2])["outputs"]
    assert outputs["uploaded"] is True and outputs["converted"] is True and outputs["rows"] == 2_000
    again = run_cli("upload-gcs", "--taxi", "green", "--month", "2019-01", env=env)
    assert again.returncode == 0, again.stderr
    outputs = json.loads(again.stdout.splitlines()[0][2:-2])["outputs"]
    assert outputs["uploaded"] is False and outputs["converted"] is False and outputs["rows"] == 2_000
    assert "is unchanged since its upload" in again.stderr and "not converting or uploading" in again.stderr


# A re-run of an unchanged month (issue 10): the upload record, checked against the download's
# sha256 and the object's checksum, spares the conversion and the upload; anything else redoes both.


def _uploaded(settings, caplog):
    """An uploaded month: (its download, its object, its upload record)."""
    caplog.set_level(logging.INFO, logger="taxi_assets")
    ensure_bucket(settings)
    info = extract(settings, GREEN, JAN)
    first = upload_gcs(settings, GREEN, JAN, Path(info.path))
    assert first.uploaded and first.converted
    blob = storage_client(settings).bucket(settings.gcp_bucket).get_blob(object_name(GREEN, JAN))
    caplog.clear()
    return Path(info.path), blob, upload_record_path(Path(info.path))


def _blob(settings):
    return storage_client(settings).bucket(settings.gcp_bucket).get_blob(object_name(GREEN, JAN))


def test_a_rerun_of_an_unchanged_month_neither_converts_nor_uploads(gcs_settings, caplog):
    path, blob, record_path = _uploaded(gcs_settings, caplog)
    assert record_path.name == "green_tripdata_2019-01.parquet.json"
    record = json.loads(record_path.read_text())
    assert record == {
        "csv": path.name,
        "csv_sha256": json.loads(path.with_name(path.name + ".json").read_text())["sha256"],
        "conversion": conversion_id(GREEN),
        "uri": f"gs://{gcs_settings.gcp_bucket}/green/green_tripdata_2019-01.parquet",
        "crc32c": blob.crc32c,
        "md5": blob.md5_hash,
        "bytes": blob.size,
        "rows": 2_000,
        "generation": blob.generation,
    }
    parquet_path(path).unlink()  # a conversion would write it again
    listing = sorted(p.name for p in path.parent.iterdir())
    again = upload_gcs(gcs_settings, GREEN, JAN, path)
    assert (again.uploaded, again.converted) == (False, False)
    assert (again.uri, again.bytes, again.crc32c, again.rows) == (record["uri"], blob.size, blob.crc32c, 2_000)
    assert sorted(p.name for p in path.parent.iterdir()) == listing  # no Parquet, not even a temporary one
    now = _blob(gcs_settings)
    assert (now.generation, now.updated, now.crc32c) == (blob.generation, blob.updated, blob.crc32c)  # not uploaded
    assert json.loads(record_path.read_text()) == record
    lines = [r.getMessage() for r in caplog.records if r.name == "taxi_assets.steps.gcs"]
    assert len(lines) == 1 and "is unchanged since its upload" in lines[0], lines
    assert f"conversion {conversion_id(GREEN)}" in lines[0] and "not converting or uploading" in lines[0]


@pytest.mark.parametrize("change", ["overwritten", "deleted"])
def test_an_object_changed_in_the_bucket_is_converted_and_uploaded_again(gcs_settings, caplog, change, upload_kind):
    path, blob, record_path = _uploaded(gcs_settings, caplog)
    stored = storage_client(gcs_settings).bucket(gcs_settings.gcp_bucket).blob(object_name(GREEN, JAN))
    if change == "overwritten":
        stored.upload_from_string(b"PAR1 not this month PAR1")
    else:
        stored.delete()
    again = upload_gcs(gcs_settings, GREEN, JAN, path)
    assert again.uploaded and again.converted and again.crc32c == blob.crc32c and again.rows == 2_000
    now = _blob(gcs_settings)
    assert now.crc32c == crc32c_b64(parquet_path(path)) and now.size == blob.size
    assert now.generation != blob.generation
    record = json.loads(record_path.read_text())
    assert (record["crc32c"], record["generation"]) == (now.crc32c, now.generation)
    why = "changed in the bucket since the upload" if change == "overwritten" else "is not in the bucket"
    assert why in caplog.text
    assert not upload_gcs(gcs_settings, GREEN, JAN, path).converted  # recorded again: the next re-run is spared


def test_a_new_release_of_the_month_is_converted_and_uploaded_again(gcs_settings, local_release, caplog):
    settings = replace(gcs_settings, source_url=local_release.url)
    path, blob, record_path = _uploaded(settings, caplog)
    old_sha = json.loads(record_path.read_text())["csv_sha256"]
    write_month(local_release.root / "green" / path.name, GREEN, JAN, 1_500, seed=7)  # the release changed
    path.unlink()  # gone without its record: extract downloads the month again
    info = extract(settings, GREEN, JAN)
    assert info.downloaded and info.sha256 != old_sha
    again = upload_gcs(settings, GREEN, JAN, path)
    assert again.uploaded and again.converted and again.rows == 1_500 and again.crc32c != blob.crc32c
    assert "the download is not the one last uploaded" in caplog.text
    assert json.loads(record_path.read_text())["csv_sha256"] == info.sha256
    assert _blob(settings).crc32c == again.crc32c


def test_a_record_of_another_conversion_converts_again(gcs_settings, caplog, monkeypatch):
    path, blob, record_path = _uploaded(gcs_settings, caplog)
    old = conversion_id(GREEN)
    monkeypatch.setattr(parquet, "CONVERSION_VERSION", parquet.CONVERSION_VERSION + 1)  # the layout changed
    assert conversion_id(GREEN) != old
    parquet_path(path).unlink()
    again = upload_gcs(gcs_settings, GREEN, JAN, path)
    assert again.converted and parquet_path(path).is_file()
    assert not again.uploaded  # this bump changed no byte, so the bucket already held them
    assert f"the Parquet conversion changed (now {conversion_id(GREEN)}, recorded {old})" in caplog.text
    assert json.loads(record_path.read_text())["conversion"] == conversion_id(GREEN)
    assert not upload_gcs(gcs_settings, GREEN, JAN, path).converted


def test_a_download_without_its_extract_record_is_always_converted(gcs_settings, caplog):
    """Nothing vouches for the file's sha256 then (it is not hashed again): convert, and record nothing."""
    path, _, record_path = _uploaded(gcs_settings, caplog)
    record_path.unlink()
    path.with_name(path.name + ".json").unlink()
    again = upload_gcs(gcs_settings, GREEN, JAN, path)
    assert again.converted and not again.uploaded and not record_path.exists()
    assert f"{path.name} has no extract record" in caplog.text


def test_amounts_with_float_noise_round_to_numeric_instead_of_failing(tmp_path):
    csv = tmp_path / "yellow_tripdata_2020-07.csv.gz"
    header = (FIXTURES / "yellow_tripdata_2020-07_head266.csv").read_text().splitlines()[0]
    row = "1,2020-07-01 00:25:32,2020-07-01 00:33:39,1,1.50,1,N,238,75,2,0.30000000000000004,0.5,0.5,0,0,0.3,9.3,0"
    csv.write_bytes(gzip.compress(f"{header}\n{row}\n".encode()))
    write_parquet(csv, tmp_path / "y.parquet", YELLOW, Month(2020, 7))
    assert str(pq.read_table(tmp_path / "y.parquet").column("fare_amount")[0]) == "0.300000000"


@pytest.mark.parametrize("value", ["not a key", '{"type": "service_account"}', "x" * 300, '"{quoted json}"'])
def test_bad_credentials_are_a_clear_error_that_does_not_echo_them(settings, value):
    with pytest.raises(ConfigError) as err:
        credentials(replace(settings, gcp_credentials=value), emulator=None)
    assert "GCP_CREDENTIALS" in str(err.value) and value not in str(err.value)


def test_google_cloud_without_credentials_is_one_clear_line(settings, tmp_path):
    env = {
        config.SOURCE_URL: settings.source_url,
        config.STATE_DIR: str(settings.state_dir),
        config.GCP_PROJECT_ID: "my-project",
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json"),  # no application-default either
        "NO_GCE_CHECK": "True",
    }
    result = run_cli("gcp-setup", env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert "no Google credentials: set GCP_CREDENTIALS" in errors[0]


def test_the_embedded_emulators_are_recognized_and_nothing_else_is(fake_gcs, bq_emulator, source_server):
    from taxi_assets.emulators import _answers

    assert _answers(f"{fake_gcs[0]}/storage/v1/b")
    assert _answers(f"{bq_emulator}/bigquery/v2/projects/taxi-assets-local/datasets")
    assert not _answers(f"{source_server.url}/storage/v1/b")  # another HTTP service on the port


def test_an_embedded_emulator_whose_port_is_taken_fails_at_once_with_its_reason(tmp_path, monkeypatch):
    """Another process on the port (another state folder's emulator left running, another
    service): ours cannot bind and exits, and the step says so at once, not after a minute."""
    from taxi_assets.config import EMULATED_GCS_PORT, Settings
    from taxi_assets.emulators import running_emulators, with_local_cloud

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        monkeypatch.setenv(EMULATED_GCS_PORT, str(holder.getsockname()[1]))
        settings = Settings(state_dir=tmp_path / "state", embedded=True)
        started = time.monotonic()
        with pytest.raises(ConfigError) as failed:
            with_local_cloud(settings, bigquery=False)
    assert time.monotonic() - started < 30
    message = str(failed.value)
    assert message.startswith("the local GCS emulator (fake-gcs-server) exited at start (exit 1): ")
    assert "address already in use" in message and EMULATED_GCS_PORT in message
    assert not running_emulators(settings)


# Row ids computed once (issue 10); a conversion fast enough to be worth it.


def test_the_parquet_takes_its_row_ids_from_the_download_not_from_hashing_again(settings, tmp_path):
    download = Path(extract(settings, GREEN, JAN).path)
    ids = row_ids_path(download)
    body = ids.read_bytes()
    planted = hashlib.md5(b"planted").digest() * ((len(body) - 32) // 16)  # same download, same size
    ids.write_bytes(body[:32] + planted)
    write_parquet(download, tmp_path / "g.parquet", GREEN, JAN, open_month_file(download, GREEN).recorded_row_ids())
    assert set(pq.read_table(tmp_path / "g.parquet").column("unique_row_id").to_pylist()) == {
        hashlib.md5(b"planted").hexdigest()
    }


def test_a_conversion_without_row_ids_hashes_them_to_the_same_parquet(settings, tmp_path):
    download = Path(extract(settings, GREEN, JAN).path)
    write_parquet(download, tmp_path / "with.parquet", GREEN, JAN, open_month_file(download, GREEN).recorded_row_ids())
    write_parquet(download, tmp_path / "without.parquet", GREEN, JAN)
    lines = gzip.decompress(download.read_bytes()).decode().splitlines()[1:]
    with_ids = pq.read_table(tmp_path / "with.parquet")
    assert with_ids.equals(pq.read_table(tmp_path / "without.parquet"))
    assert with_ids.column("unique_row_id").to_pylist() == [hashlib.md5(x.encode()).hexdigest() for x in lines]
    assert list(download.parent.glob("*taxi-row-ids*")) == []  # the hashed ids were a nameless temp file


def test_amounts_become_numeric_as_rounding_to_nine_decimals_does(tmp_path):
    rng = np.random.default_rng(10)
    values = [
        *rng.uniform(-999_999, 999_999, 100_000).round(2),
        *rng.uniform(-1_000, 1_000, 100_000),  # all 17 significant digits
        0.1 + 0.2,
        2.675,
        -0.0,
        None,
        999_999.999_999_999,
    ]
    column = pa.chunked_array([pa.array(values, pa.float64())])
    numeric = pa.decimal128(38, 9)
    assert parquet._scaled_decimals(column, numeric).equals(pc.round(column, 9).cast(numeric).combine_chunks())
    for beyond in (1e6, -3e12, float("inf"), float("nan")):  # the general path's: it tells what NUMERIC cannot hold
        assert parquet._scaled_decimals(pa.chunked_array([pa.array([1.0, beyond])]), numeric) is None


def test_a_block_with_a_large_amount_takes_the_general_path(tmp_path):
    csv = tmp_path / "yellow_tripdata_2020-07.csv.gz"
    header = (FIXTURES / "yellow_tripdata_2020-07_head266.csv").read_text().splitlines()[0]
    row = "1,2020-07-01 00:25:32,2020-07-01 00:33:39,1,1.50,1,N,238,75,2,{fare},0.5,0.5,0,0,0.3,9.3,0"
    body = "\n".join(row.format(fare=f) for f in ("7.25", "12345678901.23"))
    csv.write_bytes(gzip.compress(f"{header}\n{body}\n".encode()))
    write_parquet(csv, tmp_path / "y.parquet", YELLOW, Month(2020, 7))
    fares = [str(v) for v in pq.read_table(tmp_path / "y.parquet").column("fare_amount").to_pylist()]
    general = pc.round(pa.array([12345678901.23]), 9).cast(pa.decimal128(38, 9))  # float64's precision
    assert fares == ["7.250000000", str(general[0])]


# The first upload follows the conversion as it writes (issue 10).


def test_a_first_upload_streams_the_parquet_chunk_by_chunk_as_it_is_written(
    gcs_settings, monkeypatch, tmp_path, upload_kind
):
    monkeypatch.setattr(gcs, "CHUNK", 256 * 1024)  # the smallest chunk GCS allows: many of them
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 2_000)  # the file grows in many steps
    ensure_bucket(gcs_settings)
    path = tmp_path / "downloads" / GREEN.file_name(JAN)
    path.parent.mkdir()
    write_month(path, GREEN, JAN, 30_000, seed=4)
    report = upload_gcs(gcs_settings, GREEN, JAN, path)
    local = parquet_path(path).read_bytes()
    assert report.uploaded and report.bytes == len(local) > 4 * 256 * 1024
    blob = storage_client(gcs_settings).bucket(gcs_settings.gcp_bucket).get_blob(object_name(GREEN, JAN))
    assert blob.download_as_bytes() == local


def test_a_conversion_failing_mid_way_leaves_no_object(gcs_settings, monkeypatch, tmp_path, upload_kind):
    chunk_read = threading.Event()
    read = gcs._Growing.read

    def read_and_tell(self, size=-1):
        data = read(self, size)
        chunk_read.set()
        return data

    def half_then_fails(source, dest, *args):
        with open(temp_path(dest), "wb") as out:  # what write_parquet writes as it goes
            out.write(b"PAR1" + b"x" * 700_000)
            out.flush()
            assert chunk_read.wait(30), "the upload never read a chunk"  # it is under way
        temp_path(dest).unlink()
        raise BadFileError("green_tripdata_2019-01.csv.gz: row 9000 has 3 columns")

    monkeypatch.setattr(gcs, "CHUNK", 256 * 1024)
    monkeypatch.setattr(gcs._Growing, "read", read_and_tell)
    monkeypatch.setattr(gcs, "write_parquet", half_then_fails)
    ensure_bucket(gcs_settings)
    path = tmp_path / GREEN.file_name(JAN)
    write_month(path, GREEN, JAN, 100)
    with pytest.raises(BadFileError, match="row 9000 has 3 columns"):
        upload_gcs(gcs_settings, GREEN, JAN, path)
    assert storage_client(gcs_settings).bucket(gcs_settings.gcp_bucket).get_blob(object_name(GREEN, JAN)) is None


def test_a_first_upload_never_streams_an_older_local_parquet(gcs_settings, tmp_path):
    ensure_bucket(gcs_settings)
    path = tmp_path / GREEN.file_name(JAN)  # no extract record: the ids are hashed first, a delay
    write_month(path, GREEN, JAN, 5_000, seed=6)
    parquet_path(path).write_bytes(b"PAR1 an older conversion's bytes PAR1")
    report = upload_gcs(gcs_settings, GREEN, JAN, path)
    blob = storage_client(gcs_settings).bucket(gcs_settings.gcp_bucket).get_blob(object_name(GREEN, JAN))
    assert blob.download_as_bytes() == parquet_path(path).read_bytes() and report.rows == 5_000
