"""Per-partition checks of a Postgres month, from one scan of its partition.

They query the table itself, independently of what the load reported.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    multi_asset_check,
)
from psycopg import sql

from taxi_assets.datasets import TaxiDataset
from taxi_assets.defs.assets import postgres_key
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import TaxiPostgresResource, TaxiSourceResource
from taxi_assets.months import Month
from taxi_assets.steps.extract import extract
from taxi_assets.steps.postgres import partition_name

ROWS_MATCH_FILE = "rows_match_file"
ROW_IDS_PRESENT = "row_ids_present"
NO_DUPLICATE_ROWS = "no_duplicate_rows"
PICKUPS_IN_MONTH = "pickups_in_month"


def month_profile(conn, dataset: TaxiDataset, month: Month) -> dict[str, int]:
    """Counts over the month's partition: rows, null ids, duplicate rows, out-of-month pickups."""
    pickup = sql.Identifier(dataset.pickup_column.lower())
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE unique_row_id IS NULL),"
            ' count(unique_row_id) - count(DISTINCT unique_row_id COLLATE "C"),'
            " count(*) FILTER (WHERE {p} < %s OR {p} >= %s) FROM {t}"
        ).format(p=pickup, t=sql.Identifier(partition_name(dataset, month))),
        (month.start, month.end),
    ).fetchone()
    return dict(zip(("rows", "null_row_ids", "duplicate_rows", "out_of_month_rows"), row, strict=True))


def build_postgres_checks(dataset: TaxiDataset) -> AssetChecksDefinition:
    asset = postgres_key(dataset)

    @multi_asset_check(
        name=f"{dataset.taxi}_trips_postgres_checks",
        specs=[
            AssetCheckSpec(
                ROWS_MATCH_FILE,
                asset=asset,
                blocking=True,
                partitions_def=monthly_partitions,
                description="The month holds exactly the file's data lines.",
            ),
            AssetCheckSpec(
                ROW_IDS_PRESENT,
                asset=asset,
                blocking=True,
                partitions_def=monthly_partitions,
                description="Every row has a unique_row_id.",
            ),
            AssetCheckSpec(
                NO_DUPLICATE_ROWS,
                asset=asset,
                partitions_def=monthly_partitions,
                description="Exact duplicate rows in the file (kept, reported as a warning).",
            ),
            AssetCheckSpec(
                PICKUPS_IN_MONTH,
                asset=asset,
                partitions_def=monthly_partitions,
                description="Rows whose pickup lies outside the file's month (kept, a warning).",
            ),
        ],
    )
    def postgres_checks(
        context: AssetCheckExecutionContext, source: TaxiSourceResource, postgres: TaxiPostgresResource
    ) -> Iterator[AssetCheckResult]:
        month = Month.parse(context.partition_key)
        info = extract(source.settings(), dataset, month)
        with postgres.connect() as conn:
            profile = month_profile(conn, dataset, month)
        yield AssetCheckResult(
            check_name=ROWS_MATCH_FILE,
            asset_key=asset,
            passed=profile["rows"] == info.data_lines,
            metadata={"table_rows": profile["rows"], "file_data_lines": info.data_lines},
        )
        yield AssetCheckResult(
            check_name=ROW_IDS_PRESENT,
            asset_key=asset,
            passed=profile["null_row_ids"] == 0,
            metadata={"null_row_ids": profile["null_row_ids"]},
        )
        yield AssetCheckResult(
            check_name=NO_DUPLICATE_ROWS,
            asset_key=asset,
            passed=profile["duplicate_rows"] == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"duplicate_rows": profile["duplicate_rows"]},
        )
        yield AssetCheckResult(
            check_name=PICKUPS_IN_MONTH,
            asset_key=asset,
            passed=profile["out_of_month_rows"] == 0,
            severity=AssetCheckSeverity.WARN,
            metadata={"out_of_month_rows": profile["out_of_month_rows"]},
        )

    return postgres_checks
