"""A re-published month is whole (issue 16): after extract, load-postgres, upload-gcs and
load-bigquery run on the TLC's new file, Postgres, the object, its metadata, upload-gcs's record
and BigQuery all name the new download, whether its conversion is byte-identical to the old
one's (the TLC re-typed its columns) or not (other rows). The steps run as the CLI runs them;
the TLC is the local stand-in, re-publishing under the same month name with a new ETag and size."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core import exceptions as gexc
from google.cloud import storage
from helpers import run_cli, settings_env

from taxi_assets import ledger
from taxi_assets.datasets import TLC_DATASETS
from taxi_assets.errors import LoadError
from taxi_assets.files import parquet_path
from taxi_assets.gcp import storage_client
from taxi_assets.months import Month
from taxi_assets.samples.tlc import TlcServer
from taxi_assets.steps.extract import extract
from taxi_assets.steps.gcs import DOWNLOAD_SHA256, upload_gcs
from taxi_assets.steps.gcs import upload_record_path as upload_record
from taxi_assets.stores import crc32c_b64, object_name

ROWS = 300
DS, MONTH = TLC_DATASETS["green"], Month(2024, 5)


@pytest.fixture
def tlc_server(tmp_path):
    server = TlcServer(tmp_path / "trip-data", rows=ROWS, latest=Month(2026, 8)).start()
    yield server
    server.shutdown()


@pytest.fixture
def cloud(cloud_settings, tlc_server):
    """Settings on the emulators and the TLC stand-in, with the bucket and dataset made."""
    settings = replace(cloud_settings, tlc_url=tlc_server.url)
    result = run_cli("gcp-setup", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    return settings


def _step(settings, step: str) -> tuple[dict, str]:
    """One step of the month as a run does it: (its outputs, its log)."""
    result = run_cli(step, "--source", "tlc", "--taxi", DS.taxi, "--month", str(MONTH), env=settings_env(settings))
    assert result.returncode == 0, f"{step}: {result.stderr}"
    return json.loads(result.stdout.splitlines()[0][2:-2])["outputs"], result.stderr


CHAIN = ("extract", "load-postgres", "upload-gcs", "load-bigquery")


def _chain(settings, steps=CHAIN) -> dict[str, tuple[dict, str]]:
    """The steps in order (extract first: it asks the TLC whether the file changed); each one's
    outputs and log."""
    return {step: _step(settings, step) for step in steps}


def _served(server: TlcServer) -> Path:
    return server.root / server.file_name(DS.taxi, MONTH)


def _publish(server: TlcServer, table: pa.Table) -> None:
    """Serve `table` as the month's file from now on: new bytes, ETag, size and Last-Modified."""
    served = _served(server)
    tmp = served.with_name(f".{served.name}.tmp")
    pq.write_table(table, tmp, compression="snappy")
    stamp = served.stat().st_mtime + 1  # Last-Modified has whole seconds
    tmp.replace(served)
    os.utime(served, (stamp, stamp))


def _retyped(server: TlcServer) -> None:
    """The same trips as another of the TLC's writers types them: double counts, plain strings
    (the first publication has int64 counts and large strings)."""
    table = pq.read_table(_served(server))
    older = {pa.int64(): pa.float64(), pa.large_string(): pa.string()}
    _publish(server, table.cast(pa.schema([f.with_type(older.get(f.type, f.type)) for f in table.schema])))


def _other_rows(server: TlcServer) -> None:
    server.republish(DS.taxi, MONTH, variant=3)  # other values and 3 more rows


def _object(settings) -> storage.Blob:
    return storage_client(settings).bucket(settings.gcp_bucket).get_blob(object_name(DS, MONTH))


def _served_file(server: TlcServer) -> tuple[str, str, int]:
    """(sha256, ETag, size) of the file the TLC serves now."""
    body = _served(server).read_bytes()
    return hashlib.sha256(body).hexdigest(), f'"{hashlib.md5(body).hexdigest()}"', len(body)


def _bigquery_rows(settings) -> int:
    from taxi_assets.gcp import bigquery_client
    from taxi_assets.steps.bigquery import month_rows

    return month_rows(bigquery_client(settings), settings, DS, MONTH)


@pytest.mark.parametrize(
    ("republish", "rows", "bytes_sent"),
    [(_retyped, ROWS, False), (_other_rows, ROWS + 3, True)],
    ids=["byte-identical-conversion", "other-rows"],
)
def test_a_republished_month_reaches_every_store_and_is_then_unchanged(cloud, tlc_server, republish, rows, bytes_sent):
    first = _chain(cloud)["extract"][0]
    before = _object(cloud)
    republish(tlc_server)
    sha256, etag, size = _served_file(tlc_server)
    assert sha256 != first["sha256"] and size != first["bytes"]

    steps = _chain(cloud)
    run = {step: outputs for step, (outputs, _) in steps.items()}

    assert run["extract"]["downloaded"] and (run["extract"]["sha256"], run["extract"]["bytes"]) == (sha256, size)
    assert run["load-postgres"]["rows_loaded"] == rows == run["load-bigquery"]["rows"] == _bigquery_rows(cloud)
    for store in ledger.STORES:  # each store names the file its rows came from
        held = ledger.held(cloud, store, DS, MONTH)
        assert (held.sha256, held.etag, held.bytes, held.rows) == (sha256, etag, size, rows), store
    assert run["upload-gcs"]["uploaded"] is bytes_sent and run["upload-gcs"]["converted"]
    blob = _object(cloud)
    local = parquet_path(Path(run["extract"]["path"]))
    assert (
        (blob.crc32c, blob.size)
        == (crc32c_b64(local), local.stat().st_size)
        == (run["upload-gcs"]["crc32c"], run["upload-gcs"]["bytes"])
    )
    assert (blob.crc32c == before.crc32c) is not bytes_sent  # the same bytes exactly when none were sent
    assert blob.metadata[DOWNLOAD_SHA256] == sha256
    renamed = [line for line in steps["upload-gcs"][1].splitlines() if "metadata updated, bytes not sent again" in line]
    assert len(renamed) == (0 if bytes_sent else 1)  # one line says the object was renamed, not re-sent
    record = json.loads(upload_record(Path(run["extract"]["path"])).read_text())
    assert (record["csv_sha256"], record["crc32c"], record["generation"]) == (sha256, blob.crc32c, blob.generation)

    again, log = _step(cloud, "upload-gcs")
    assert (again["uploaded"], again["converted"]) == (False, False) and "is unchanged since its upload" in log
    now = _object(cloud)
    assert (now.generation, now.metageneration, now.metadata) == (blob.generation, blob.metageneration, blob.metadata)
    assert _step(cloud, "load-bigquery")[0]["rows"] == rows == _bigquery_rows(cloud)


def test_a_month_left_stuck_by_an_upload_that_kept_the_old_metadata_is_mended_by_upload_gcs(cloud, tlc_server):
    """The state issue 16 reported: the record names the new download, the object the old one.
    upload-gcs's fast path no longer calls that unchanged: it names the new download, without
    converting or sending bytes, and load-bigquery then loads the month."""
    first, _ = _chain(cloud, ("extract", "upload-gcs", "load-bigquery"))["extract"]
    _retyped(tlc_server)
    second, _ = _step(cloud, "extract")
    _step(cloud, "upload-gcs")
    stale = storage_client(cloud).bucket(cloud.gcp_bucket).blob(object_name(DS, MONTH))
    stale.metadata = {DOWNLOAD_SHA256: first["sha256"]}  # as upload-gcs left it before the fix
    stale.patch()
    refused = run_cli(
        "load-bigquery", "--source", "tlc", "--taxi", DS.taxi, "--month", str(MONTH), env=settings_env(cloud)
    )
    assert refused.returncode == 1 and "was converted from another download of the month" in refused.stderr

    mended, log = _step(cloud, "upload-gcs")

    assert (mended["uploaded"], mended["converted"]) == (False, False)
    assert "metadata updated, bytes not sent again" in log and "is unchanged" not in log
    assert _object(cloud).metadata[DOWNLOAD_SHA256] == second["sha256"]
    assert _step(cloud, "load-bigquery")[0]["rows"] == ROWS
    assert ledger.held(cloud, ledger.BIGQUERY, DS, MONTH).sha256 == second["sha256"]


def test_the_metadata_of_an_object_another_writer_replaced_meanwhile_is_left_alone(cloud, tlc_server, monkeypatch):
    """The metadata PATCH is conditional on the object upload-gcs compared. fake-gcs-server
    ignores preconditions, so the check GCS makes (412) is made here, around the real PATCH."""
    first = extract(cloud, DS, MONTH)
    upload_gcs(cloud, DS, MONTH, Path(first.path))
    _retyped(tlc_server)
    second = extract(cloud, DS, MONTH, revalidate=True)
    theirs = {DOWNLOAD_SHA256: "another writer's download"}
    real_patch = storage.Blob.patch

    def patch_after_another_writer(blob, *args, if_generation_match=None, if_metageneration_match=None, **kwargs):
        other = blob.bucket.blob(blob.name)
        other.metadata = theirs
        other.upload_from_string(b"PAR1 another writer's month PAR1")
        live = blob.bucket.get_blob(blob.name)
        for wanted, actual in ((if_generation_match, live.generation), (if_metageneration_match, live.metageneration)):
            if wanted is not None and wanted != actual:
                raise gexc.PreconditionFailed("conditionNotMet")
        return real_patch(blob, *args, **kwargs)

    monkeypatch.setattr(storage.Blob, "patch", patch_after_another_writer)
    with pytest.raises(LoadError, match="changed in the bucket by another writer .* run upload-gcs again"):
        upload_gcs(cloud, DS, MONTH, Path(second.path))
    blob = _object(cloud)
    assert blob.metadata == theirs and blob.download_as_bytes() == b"PAR1 another writer's month PAR1"
    assert json.loads(upload_record(Path(second.path)).read_text())["csv_sha256"] == first.sha256  # not recorded
