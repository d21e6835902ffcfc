"""upload-gcs (and the bucket half of gcp-setup): the month's Parquet in the bucket.

The object is `gs://{bucket}/{taxi}/{taxi}_tripdata_{YYYY-MM}.parquet`, uploaded resumably in
8 MB chunks (memory bounded), verified by crc32c against the local file, and not uploaded
again when the bucket already holds the same bytes.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import google_crc32c
from google.api_core import exceptions as gexc

from taxi_assets.config import Settings
from taxi_assets.datasets import TaxiDataset
from taxi_assets.errors import ConfigError, LoadError
from taxi_assets.gcp import storage_client
from taxi_assets.months import Month
from taxi_assets.parquet import write_parquet
from taxi_assets.steps.extract import parquet_path

log = logging.getLogger(__name__)
CHUNK = 8 * 1024 * 1024


@dataclass
class UploadReport:
    uri: str
    bytes: int
    crc32c: str
    rows: int
    uploaded: bool  # False: the bucket already held these exact bytes

    def as_dict(self) -> dict:
        return asdict(self)


def object_name(dataset: TaxiDataset, month: Month) -> str:
    return f"{dataset.taxi}/{dataset.file_name(month).removesuffix('.csv.gz')}.parquet"


def crc32c_b64(path: Path) -> str:
    """crc32c as GCS reports it: base64 of the big-endian checksum."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()


def ensure_bucket(settings: Settings) -> bool:
    """Create the bucket if missing (STANDARD class: valid in every location). True if created."""
    client = storage_client(settings)
    try:
        if client.lookup_bucket(settings.gcp_bucket) is not None:
            return False
        bucket = client.bucket(settings.gcp_bucket)
        bucket.storage_class = "STANDARD"
        client.create_bucket(bucket, location=settings.gcp_location)
        log.info("created bucket gs://%s in %s", settings.gcp_bucket, settings.gcp_location)
        return True
    except gexc.Conflict:
        return False  # created meanwhile, or taken by another project: the upload will tell
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise ConfigError(f"not allowed to use bucket {settings.gcp_bucket}: {exc.message}") from None


def _missing_bucket(settings: Settings) -> ConfigError:
    return ConfigError(f"bucket {settings.gcp_bucket} does not exist; run `python -m taxi_assets gcp-setup`")


def check_bucket(settings: Settings, name: str = "", client=None) -> None:
    """Fail at once (ConfigError) if the bucket does not exist: one listing of at most one object.

    A listing, not a bucket GET: Storage Object Admin on the bucket (what upload-gcs needs)
    grants storage.objects.list but not storage.buckets.get. Without even that, the upload
    itself reports what is not allowed.
    """
    try:
        client = client or storage_client(settings)
        list(client.list_blobs(settings.gcp_bucket, prefix=name or None, max_results=1))
    except gexc.NotFound:
        raise _missing_bucket(settings) from None
    except gexc.Unauthorized as exc:
        raise ConfigError(f"not allowed to use bucket {settings.gcp_bucket}: {exc.message}") from None
    except gexc.Forbidden:
        log.debug("cannot list gs://%s; the upload will tell whether it may write", settings.gcp_bucket)


def upload_gcs(settings: Settings, dataset: TaxiDataset, month: Month, csv_gz: Path) -> UploadReport:
    """Convert the verified month file to Parquet (cached beside it) and put it in the bucket.

    The bucket is checked first: a missing bucket fails before the conversion (15 s for a
    yellow month), not after it.
    """
    name, client = object_name(dataset, month), storage_client(settings)
    check_bucket(settings, name, client)
    parquet = parquet_path(csv_gz)
    rows = write_parquet(csv_gz, parquet, dataset, month)
    local_crc, size = crc32c_b64(parquet), parquet.stat().st_size
    uri = f"gs://{settings.gcp_bucket}/{name}"
    try:
        bucket = client.bucket(settings.gcp_bucket)
        existing = bucket.get_blob(name)
        if existing is not None and existing.crc32c == local_crc and existing.size == size:
            log.info("%s already holds these bytes; not uploading again", uri)
            return UploadReport(uri, size, local_crc, rows, uploaded=False)
        blob = bucket.blob(name, chunk_size=CHUNK)  # chunked: a resumable upload
        blob.upload_from_filename(str(parquet), content_type="application/vnd.apache.parquet", checksum="crc32c")
        blob.reload()
    except gexc.NotFound:
        raise _missing_bucket(settings) from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise ConfigError(f"not allowed to write {uri}: {exc.message}") from None
    if blob.crc32c != local_crc or blob.size != size:
        raise LoadError(f"{uri} does not match the local file after upload (crc32c {blob.crc32c} vs {local_crc})")
    log.info("uploaded %s (%d bytes, %d rows)", uri, size, rows)
    return UploadReport(uri, size, local_crc, rows, uploaded=True)
