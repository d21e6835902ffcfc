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


def upload_gcs(settings: Settings, dataset: TaxiDataset, month: Month, csv_gz: Path) -> UploadReport:
    """Convert the verified month file to Parquet (cached beside it) and put it in the bucket."""
    parquet = parquet_path(csv_gz)
    rows = write_parquet(csv_gz, parquet, dataset, month)
    local_crc, size = crc32c_b64(parquet), parquet.stat().st_size
    name = object_name(dataset, month)
    uri = f"gs://{settings.gcp_bucket}/{name}"
    try:
        bucket = storage_client(settings).bucket(settings.gcp_bucket)
        existing = bucket.get_blob(name)
        if existing is not None and existing.crc32c == local_crc and existing.size == size:
            log.info("%s already holds these bytes; not uploading again", uri)
            return UploadReport(uri, size, local_crc, rows, uploaded=False)
        blob = bucket.blob(name, chunk_size=CHUNK)  # chunked: a resumable upload
        blob.upload_from_filename(str(parquet), content_type="application/vnd.apache.parquet", checksum="crc32c")
        blob.reload()
    except gexc.NotFound:
        raise ConfigError(
            f"bucket {settings.gcp_bucket} does not exist; run `python -m taxi_assets gcp-setup`"
        ) from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise ConfigError(f"not allowed to write {uri}: {exc.message}") from None
    if blob.crc32c != local_crc or blob.size != size:
        raise LoadError(f"{uri} does not match the local file after upload (crc32c {blob.crc32c} vs {local_crc})")
    log.info("uploaded %s (%d bytes, %d rows)", uri, size, rows)
    return UploadReport(uri, size, local_crc, rows, uploaded=True)
