"""One chain of assets per taxi type, built by one factory:
raw CSV -> Postgres table, and raw CSV -> GCS object (Parquet) -> BigQuery table.

Assets are thin: they call the steps in `taxi_assets.steps` and describe the result.

Each store's asset asks for the month first (`steps.extract.ask`, as the CLI's load steps do) and
reads the download under `download_in_use`: a Kestra flow's purge-download on the same state
folder keeps the download until this store's ledger holds it too. Dagster itself never purges:
its local copy serves re-runs (offline ones too, the demo's), and the GCS check reads the month's
local Parquet, in a step that may run after the BigQuery load.
"""

import csv
import functools
import inspect
from collections.abc import Callable
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)

from taxi_assets import ledger
from taxi_assets.datasets import FILENAME_COLUMN, ROW_ID_COLUMN, TaxiDataset
from taxi_assets.defs.partitions import partitions_for
from taxi_assets.defs.resources import TaxiBigQueryResource, TaxiGcsResource, TaxiPostgresResource, TaxiSourceResource
from taxi_assets.errors import TaxiError
from taxi_assets.files import FileInfo
from taxi_assets.monthfile import open_month_file
from taxi_assets.months import Month
from taxi_assets.redact import redact_url
from taxi_assets.steps.bigquery import load_bigquery
from taxi_assets.steps.extract import ask, download_in_use, extract
from taxi_assets.steps.gcp_setup import ensure_dataset
from taxi_assets.steps.gcs import ensure_bucket, upload_gcs
from taxi_assets.steps.postgres import load_postgres
from taxi_assets.stores import partition_name

PREVIEW_ROWS = 5


def one_line_failures(body: Callable) -> Callable:
    """An asset's or check's body whose `TaxiError` (a fault a user can act on: a month not
    published, a source down, a bad file, a load rolled back) fails the step with the error's one
    line as the failure's description, the way the CLI prints it, instead of a stack trace.
    Anything else (a bug) keeps its stack trace. Goes under `@asset` / `@multi_asset_check`,
    which read the body's parameters through it."""

    def failure(exc: TaxiError) -> Failure:
        return Failure(description=str(exc), metadata={"error": type(exc).__name__})

    if inspect.isgeneratorfunction(body):  # the checks yield their results

        @functools.wraps(body)
        def run_yielding(*args, **kwargs):
            try:
                yield from body(*args, **kwargs)
            except TaxiError as exc:
                raise failure(exc) from None

        return run_yielding

    @functools.wraps(body)
    def run(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except TaxiError as exc:
            raise failure(exc) from None

    return run


def _file_kind(dataset: TaxiDataset) -> str:
    return "csv" if dataset.source.format == "csv.gz" else dataset.source.format


def file_key(dataset: TaxiDataset) -> str:
    """`green_trips_csv` (the mirror's .csv.gz), `tlc_green_trips_parquet` (the TLC's Parquet)."""
    return f"{dataset.name}_trips_{_file_kind(dataset)}"


def postgres_key(dataset: TaxiDataset) -> str:
    return f"{dataset.name}_trips_postgres"


def gcs_key(dataset: TaxiDataset) -> str:
    return f"{dataset.name}_trips_gcs"


def bigquery_key(dataset: TaxiDataset) -> str:
    return f"{dataset.name}_trips_bigquery"


def group(dataset: TaxiDataset) -> str:
    return f"{dataset.name}_taxi"


def markdown_table(columns: list[str], rows: list) -> str:
    def cell(value) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def column_schema(dataset: TaxiDataset) -> TableSchema:
    columns = (ROW_ID_COLUMN, FILENAME_COLUMN, *dataset.columns)
    return TableSchema(columns=[TableColumn(c.sql_name, c.pg_type) for c in columns])


def _file_preview(path: Path, dataset: TaxiDataset) -> str:
    header, blocks = open_month_file(path, dataset).read()
    first, _ = next(blocks, ([], False))
    rows = list(csv.reader(line.decode(errors="replace") for line in first[:PREVIEW_ROWS]))
    return markdown_table(header, rows)


def dagster_run(context: AssetExecutionContext) -> str:
    """Who loads, as the ledger records it."""
    return ledger.loaded_by_dagster(context.run_id)


def file_origin(info: FileInfo | ledger.LoadRecord) -> dict:
    """Which file a load took its rows from, in the metadata of both loads and of the loads the
    ledger sensor reports (a `LoadRecord` names its file by the same attributes)."""
    return {"file_size_bytes": info.bytes, "file_sha256": info.sha256, "file_etag": info.etag}


def build_taxi_chain(dataset: TaxiDataset) -> list[AssetsDefinition]:
    taxi = dataset.taxi

    @asset(
        name=file_key(dataset),
        partitions_def=partitions_for(dataset),
        group_name=group(dataset),
        kinds={_file_kind(dataset)},
        description=f"The published {taxi} month file ({dataset.file_name(Month(2019, 1)).replace('2019-01', 'YYYY-MM')},"
        f" source {dataset.source.name}), verified and kept locally.",
    )
    @one_line_failures
    def month_file(context: AssetExecutionContext, source: TaxiSourceResource) -> MaterializeResult:
        # The run's first step: the only one that asks the source whether the file changed.
        info = extract(source.settings(), dataset, Month.parse(context.partition_key), revalidate=True)
        return MaterializeResult(
            metadata={
                "dagster/row_count": info.data_lines,
                "path": MetadataValue.path(info.path),
                "url": MetadataValue.url(redact_url(info.url)),
                "size_bytes": info.bytes,
                "sha256": info.sha256,
                "downloaded": info.downloaded,
                # What the server said of the file (the loads record it too: `file_origin`).
                "etag": info.etag,
                "last_modified": info.last_modified,
                "preview": MetadataValue.md(_file_preview(Path(info.path), dataset)),
            }
        )

    @asset(
        name=postgres_key(dataset),
        deps=[month_file],
        partitions_def=partitions_for(dataset),
        group_name=group(dataset),
        kinds={"postgres"},
        description=f"The month's rows in Postgres table `{dataset.table}` (one partition per file; a re-run replaces it).",
        metadata={"dagster/table_name": dataset.table, "dagster/column_schema": column_schema(dataset)},
    )
    @one_line_failures
    def trips_postgres(
        context: AssetExecutionContext, source: TaxiSourceResource, postgres: TaxiPostgresResource
    ) -> MaterializeResult:
        month, files = Month.parse(context.partition_key), source.settings()
        with download_in_use(files, dataset, month):
            info = extract(files, dataset, month)  # the verified local copy (re-fetched if gone)
            ask(files, dataset, month, ledger.POSTGRES, by=dagster_run(context))
            with postgres.connect() as conn:
                report = load_postgres(
                    conn, dataset, month, Path(info.path), expected_rows=info.data_lines, loaded_by=dagster_run(context)
                )
                cur = conn.execute(f'SELECT * FROM "{partition_name(dataset, month)}" LIMIT {PREVIEW_ROWS}')
                preview = markdown_table([d.name for d in cur.description], cur.fetchall())
        return MaterializeResult(
            metadata={
                "dagster/row_count": report.rows_loaded,
                "dagster/column_schema": column_schema(dataset),
                "partition_table": report.partition,
                **file_origin(info),
                "duplicate_rows": report.duplicate_rows,
                "out_of_month_rows": report.out_of_month_rows,
                "null_keys": MetadataValue.json(report.null_keys),
                "replaced_previous": report.replaced_previous,
                "load_seconds": report.seconds,
                "preview": MetadataValue.md(preview),
            }
        )

    @asset(
        name=gcs_key(dataset),
        deps=[month_file],
        partitions_def=partitions_for(dataset),
        group_name=group(dataset),
        kinds={"gcs", "parquet"},
        description=f"The month as typed Parquet at gs://<bucket>/{dataset.folder}/…parquet (row ids included).",
    )
    @one_line_failures
    def trips_gcs(
        context: AssetExecutionContext, source: TaxiSourceResource, gcs: TaxiGcsResource
    ) -> MaterializeResult:
        month, files = Month.parse(context.partition_key), source.settings()
        settings = gcs.settings()
        with download_in_use(files, dataset, month):
            info = extract(files, dataset, month)
            ask(files, dataset, month, ledger.BIGQUERY, by=dagster_run(context))  # the chain's end
            ensure_bucket(settings)
            report = upload_gcs(settings, dataset, month, Path(info.path))
        return MaterializeResult(
            metadata={
                "dagster/row_count": report.rows,
                "uri": MetadataValue.url(report.uri),
                "size_bytes": report.bytes,
                "crc32c": report.crc32c,
                "uploaded": report.uploaded,
                "converted": report.converted,
            }
        )

    @asset(
        name=bigquery_key(dataset),
        deps=[trips_gcs],
        partitions_def=partitions_for(dataset),
        group_name=group(dataset),
        kinds={"bigquery"},
        description=f"The month's rows in BigQuery `{dataset.table}` (partition by file month, clustered on pickup and zones).",
    )
    @one_line_failures
    def trips_bigquery(
        context: AssetExecutionContext, source: TaxiSourceResource, bigquery: TaxiBigQueryResource
    ) -> MaterializeResult:
        month, files = Month.parse(context.partition_key), source.settings()
        settings = bigquery.settings()
        with download_in_use(files, dataset, month):
            info = extract(files, dataset, month)
            ask(files, dataset, month, ledger.BIGQUERY, by=dagster_run(context))
            ensure_dataset(settings)
            report = load_bigquery(settings, dataset, month, info, loaded_by=dagster_run(context))
        return MaterializeResult(
            metadata={
                "dagster/row_count": report.rows,
                "dagster/table_name": report.table,
                **file_origin(info),
                "source_uri": report.source_uri,
                "load_seconds": report.seconds,
            }
        )

    return [month_file, trips_postgres, trips_gcs, trips_bigquery]
