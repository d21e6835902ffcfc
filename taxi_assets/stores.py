"""Where a month lives in each store: its Postgres partition, its GCS object, its BigQuery table.

The names the steps write under and everything that reads the stores back (the checks, the
demo, Dagster's previews) compute them here, so they cannot disagree; and the one fingerprint
the checks compare an object by (`crc32c_b64`, as GCS reports it). Nothing here imports a step.
"""

from __future__ import annotations

import base64
from pathlib import Path

from taxi_assets.config import Settings
from taxi_assets.datasets import TaxiDataset
from taxi_assets.months import Month

_READ = 32 * 1024 * 1024  # bytes read at once while checksumming


def partition_name(dataset: TaxiDataset, month: Month) -> str:
    """The month's partition of its Postgres table: `green_tripdata_2019_01`."""
    return f"{dataset.table}_{month.year:04d}_{month.month:02d}"


def object_name(dataset: TaxiDataset, month: Month) -> str:
    """`green/green_tripdata_2019-01.parquet`; the TLC's under `tlc/`: never the mirror's object."""
    return f"{dataset.folder}/{dataset.taxi}_tripdata_{month}.parquet"


def table_id(settings: Settings, dataset: TaxiDataset) -> str:
    """The feed's BigQuery table, `project.dataset.table` (a month is its partition `$YYYYMM`)."""
    return f"{settings.gcp_project}.{settings.gcp_dataset}.{dataset.table}"


def crc32c_b64(path: Path) -> str:
    """crc32c as GCS reports it: base64 of the big-endian checksum."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(_READ):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()
