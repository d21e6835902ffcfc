"""load-bigquery: replace one month of `{dataset}.{taxi}_tripdata` from the Parquet in GCS.

The table is partitioned by `month` (the file's month, not the pickup date: files hold rows
from other months) and clustered on pickup time and zones. A load job writes the month's
partition through its decorator (`table$YYYYMM`) with WRITE_TRUNCATE: BigQuery swaps that one
partition atomically, so a re-run never duplicates, a failed load leaves the previous rows,
no scratch table is made and the work is proportional to the month.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from taxi_assets.config import Settings
from taxi_assets.datasets import FILENAME_COLUMN, ROW_ID_COLUMN, TaxiDataset
from taxi_assets.errors import ConfigError, LoadError
from taxi_assets.gcp import bigquery_client, storage_client
from taxi_assets.months import Month
from taxi_assets.parquet import MONTH_COLUMN
from taxi_assets.steps.gcs import object_name

log = logging.getLogger(__name__)


@dataclass
class BigQueryReport:
    table: str
    month: str
    source_uri: str
    rows: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def table_id(settings: Settings, dataset: TaxiDataset) -> str:
    return f"{settings.gcp_project}.{settings.gcp_dataset}.{dataset.table}"


def schema(dataset: TaxiDataset) -> list[bigquery.SchemaField]:
    """Same order as the Parquet columns (see `parquet.arrow_schema`)."""
    return [
        bigquery.SchemaField(ROW_ID_COLUMN.sql_name, "STRING", mode="REQUIRED"),
        bigquery.SchemaField(FILENAME_COLUMN.sql_name, "STRING", mode="REQUIRED"),
        bigquery.SchemaField(MONTH_COLUMN, "DATE", mode="REQUIRED"),
        *(bigquery.SchemaField(c.sql_name, c.bq_type) for c in dataset.columns),
    ]


def ensure_table(client: bigquery.Client, settings: Settings, dataset: TaxiDataset) -> None:
    table = bigquery.Table(table_id(settings, dataset), schema=schema(dataset))
    table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.MONTH, field=MONTH_COLUMN)
    table.clustering_fields = [dataset.pickup_column.lower(), "pulocationid", "dolocationid"]
    client.create_table(table, exists_ok=True)


def month_rows(client: bigquery.Client, settings: Settings, dataset: TaxiDataset, month: Month) -> int:
    job = client.query(
        f"SELECT COUNT(*) AS n FROM `{table_id(settings, dataset)}` WHERE {MONTH_COLUMN} = @m",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("m", "DATE", date(month.year, month.month, 1))]
        ),
    )
    return next(iter(job.result())).n


def _emulator_replace_month(
    client: bigquery.Client, settings: Settings, dataset: TaxiDataset, month: Month, uri: str
) -> None:
    """Emulator only: bqemulator rejects partition decorators (`Invalid table id`).

    So: load into a scratch table, then swap the month in one transaction, then drop the
    scratch table. Same outcome as the decorator load (a bad object leaves the month as it
    was), in three jobs instead of one; BigQuery itself always takes the decorator path.
    """
    target = table_id(settings, dataset)
    scratch = f"{target}__load_{month.year:04d}{month.month:02d}_{uuid.uuid4().hex[:8]}"  # one per run
    client.create_table(bigquery.Table(scratch, schema=schema(dataset)), exists_ok=True)
    try:
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, write_disposition="WRITE_TRUNCATE")
        client.load_table_from_uri(uri, scratch, job_config=config).result()
        client.query(
            f"BEGIN TRANSACTION; DELETE FROM `{target}` WHERE {MONTH_COLUMN} = DATE '{month}-01';"
            f" INSERT INTO `{target}` SELECT * FROM `{scratch}`; COMMIT TRANSACTION;"
        ).result()
    finally:
        client.delete_table(scratch, not_found_ok=True)


def load_bigquery(
    settings: Settings, dataset: TaxiDataset, month: Month, *, expected_rows: int | None = None
) -> BigQueryReport:
    """Replace `month` in the BigQuery table with the Parquet object upload-gcs put in the bucket."""
    started = time.monotonic()
    client = bigquery_client(settings)
    uri = f"gs://{settings.gcp_bucket}/{object_name(dataset, month)}"
    target = f"{table_id(settings, dataset)}${month.year:04d}{month.month:02d}"
    try:
        if storage_client(settings).bucket(settings.gcp_bucket).get_blob(object_name(dataset, month)) is None:
            raise ConfigError(f"{uri} does not exist; run upload-gcs for {dataset.taxi} {month} first")
        ensure_table(client, settings, dataset)
        if settings.bigquery_emulator:
            _emulator_replace_month(client, settings, dataset, month, uri)
        else:
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET,
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,  # this partition only
                schema=schema(dataset),
            )
            client.load_table_from_uri(uri, target, job_config=config).result()
        rows = month_rows(client, settings, dataset, month)
    except gexc.NotFound as exc:
        raise ConfigError(
            f"{uri} or dataset {settings.gcp_dataset} not found ({exc.message}); run gcp-setup and upload-gcs first"
        ) from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise ConfigError(f"not allowed to load {target}: {exc.message}") from None
    except gexc.GoogleAPIError as exc:
        raise LoadError(f"{dataset.taxi} {month}: BigQuery load failed, previous rows kept: {exc}") from None
    if expected_rows is not None and rows != expected_rows:
        raise LoadError(
            f"{dataset.taxi} {month}: BigQuery now holds {rows} rows for the month but the file has {expected_rows};"
            " load it again"
        )
    report = BigQueryReport(table_id(settings, dataset), str(month), uri, rows, round(time.monotonic() - started, 3))
    log.info("loaded %d rows into %s for %s", rows, report.table, month)
    return report
