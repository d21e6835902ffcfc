"""The data checks of a loaded month, as plain functions: `python -m taxi_assets check` (what
Kestra's flows run after their loads) and Dagster's asset checks call these same functions, so
a month gets the same verdicts whichever orchestrator loaded or checks it.

Each check queries the store itself, independently of what the load reported, and compares it
with the ledger (`taxi_assets.ledger`): what the store says it loaded, from which file. Two
quirks of the published files are kept and counted, not treated as faults: exact duplicate
rows and pickups outside the file's month. Their checks pass within a tolerance drawn from the
real files and warn above it (`DUPLICATE_ROWS_TOLERANCE`, `OUT_OF_MONTH_TOLERANCE`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from psycopg import sql

from taxi_assets import ledger
from taxi_assets.config import CHECKED_STORES, GCS_STORE, Settings
from taxi_assets.datasets import TaxiDataset
from taxi_assets.months import Month
from taxi_assets.stores import crc32c_b64, object_name, partition_name, table_id

log = logging.getLogger(__name__)

ERROR, WARN = "ERROR", "WARN"
GCS, STORES = GCS_STORE, CHECKED_STORES

ROWS_MATCH_FILE = "rows_match_file"
ROW_IDS_PRESENT = "row_ids_present"
DUPLICATE_ROWS_WITHIN_TOLERANCE = "duplicate_rows_within_tolerance"
OUT_OF_MONTH_WITHIN_TOLERANCE = "out_of_month_pickups_within_tolerance"
OBJECT_MATCHES_LOCAL = "object_matches_local_file"
MATCHES_POSTGRES = "matches_postgres"


@dataclass(frozen=True)
class Verdict:
    check: str
    passed: bool
    severity: str  # ERROR: a failure fails the run (Kestra's execution, Dagster's blocking check); WARN: it warns
    metadata: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CheckSpec:
    name: str
    store: str
    severity: str
    description: str


@dataclass(frozen=True)
class QuirkTolerance:
    """How many rows with a known quirk of the published files a month may hold and still pass."""

    count_key: str  # the count's metadata key, as the load reports it too
    per_million: int  # rows tolerated per million rows of the month
    why: str  # the real figures it is drawn from (shown in the check's description)

    def allowed_rows(self, rows: int) -> int:
        """`per_million` of `rows`, rounded up (integer arithmetic): any month may hold one."""
        return -(-rows * self.per_million // 1_000_000)

    def describe(self) -> str:
        return f"pass up to {self.per_million:,} per million rows (rounded up), warn above: {self.why}"

    def verdict(self, check: str, count: int, rows: int) -> Verdict:
        """Passed within the tolerance, a warning above it; the counts, rate and tolerance either way."""
        allowed = self.allowed_rows(rows)
        return Verdict(
            check,
            count <= allowed,
            WARN,
            {
                self.count_key: count,
                "rows": rows,
                "rate_per_million": round(count * 1_000_000 / rows, 2) if rows else 0.0,
                "tolerance_per_million": self.per_million,
                "allowed_rows": allowed,
            },
        )


# The tolerances, drawn from the real files (the README's Dagster section gives the same figures):
# each is over ten times the worst month measured and far below what a fault produces.
DUPLICATE_ROWS_TOLERANCE = QuirkTolerance(
    "duplicate_rows",
    10,
    "the mirror's yellow 2019-01 holds 4 exact duplicates in 7,667,792 rows (0.5 per million), the TLC's"
    " own Parquet of that month none; a block of the file published twice is thousands per million",
)
OUT_OF_MONTH_TOLERANCE = QuirkTolerance(
    "out_of_month_rows",
    1_000,
    "yellow 2019-01 holds 537 pickups outside its month in 7,696,617 rows (70 per million, in the TLC's"
    " Parquet; the mirror's copy starts with 2018 rows too), recent months a few dozen; a clock off by hours"
    " (UTC read as New York time) thousands; a file mostly of another month never loads (extract refuses it)",
)

SPECS = (
    CheckSpec(
        ROWS_MATCH_FILE, ledger.POSTGRES, ERROR, "The month holds exactly the rows of the file its ledger names."
    ),
    CheckSpec(ROW_IDS_PRESENT, ledger.POSTGRES, ERROR, "Every row has a unique_row_id."),
    CheckSpec(
        DUPLICATE_ROWS_WITHIN_TOLERANCE,
        ledger.POSTGRES,
        WARN,
        "Exact duplicate rows in the file, kept in the table: " + DUPLICATE_ROWS_TOLERANCE.describe(),
    ),
    CheckSpec(
        OUT_OF_MONTH_WITHIN_TOLERANCE,
        ledger.POSTGRES,
        WARN,
        "Rows whose pickup lies outside the file's month, kept in the table: " + OUT_OF_MONTH_TOLERANCE.describe(),
    ),
    CheckSpec(OBJECT_MATCHES_LOCAL, GCS, ERROR, "The object's size and crc32c equal the local Parquet file's."),
    CheckSpec(ROWS_MATCH_FILE, ledger.BIGQUERY, ERROR, "BigQuery holds exactly the rows of the file its ledger names."),
    CheckSpec(
        MATCHES_POSTGRES,
        ledger.BIGQUERY,
        ERROR,
        "When Postgres holds the month from the same file: the same row count and sum of total_amount.",
    ),
)


def specs(store: str) -> list[CheckSpec]:
    return [s for s in SPECS if s.store == store]


def _rows_match_ledger(store: str, rows: int | None, entry: ledger.LoadRecord | None) -> Verdict:
    if entry is None:
        return Verdict(ROWS_MATCH_FILE, False, ERROR, {f"{store}_rows": rows or 0, "ledger": "no load recorded"})
    return Verdict(
        ROWS_MATCH_FILE,
        rows == entry.rows,
        ERROR,
        {f"{store}_rows": rows or 0, "file_data_lines": entry.rows, "file": entry.file, "file_sha256": entry.sha256},
    )


def _loaded_partition(conn, dataset: TaxiDataset, month: Month) -> str | None:
    """The month's Postgres partition, or None if the month is not loaded."""
    partition = partition_name(dataset, month)
    return partition if conn.execute("SELECT to_regclass(%s)", (partition,)).fetchone()[0] else None


def month_profile(conn, dataset: TaxiDataset, month: Month) -> dict[str, int] | None:
    """Counts over the month's partition: rows, null ids, duplicate rows, out-of-month pickups;
    None if the month is not loaded."""
    partition = _loaded_partition(conn, dataset, month)
    if partition is None:
        return None
    pickup = sql.Identifier(dataset.pickup_column.lower())
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE unique_row_id IS NULL),"
            ' count(unique_row_id) - count(DISTINCT unique_row_id COLLATE "C"),'
            " count(*) FILTER (WHERE {p} < %s OR {p} >= %s) FROM {t}"
        ).format(p=pickup, t=sql.Identifier(partition)),
        (month.start, month.end),
    ).fetchone()
    return dict(zip(("rows", "null_row_ids", "duplicate_rows", "out_of_month_rows"), row, strict=True))


def postgres_verdicts(settings: Settings, conn, dataset: TaxiDataset, month: Month) -> list[Verdict]:
    entry = ledger.held(settings, ledger.POSTGRES, dataset, month, conn=conn)
    profile = month_profile(conn, dataset, month) or {
        "rows": 0,
        "null_row_ids": 0,
        "duplicate_rows": 0,
        "out_of_month_rows": 0,
    }
    return [
        _rows_match_ledger("table", profile["rows"], entry),
        Verdict(ROW_IDS_PRESENT, profile["null_row_ids"] == 0, ERROR, {"null_row_ids": profile["null_row_ids"]}),
        DUPLICATE_ROWS_TOLERANCE.verdict(DUPLICATE_ROWS_WITHIN_TOLERANCE, profile["duplicate_rows"], profile["rows"]),
        OUT_OF_MONTH_TOLERANCE.verdict(OUT_OF_MONTH_WITHIN_TOLERANCE, profile["out_of_month_rows"], profile["rows"]),
    ]


def gcs_verdicts(settings: Settings, dataset: TaxiDataset, month: Month) -> list[Verdict]:
    """The object against the month's local Parquet (upload-gcs's conversion of the download)."""
    from taxi_assets.files import local_path, parquet_path
    from taxi_assets.gcp import storage_client

    parquet: Path = parquet_path(local_path(settings, dataset, month))
    blob = storage_client(settings).bucket(settings.gcp_bucket).get_blob(object_name(dataset, month))
    local_crc = crc32c_b64(parquet) if parquet.exists() else None
    size = parquet.stat().st_size if local_crc is not None else None
    passed = blob is not None and local_crc is not None and (blob.crc32c, blob.size) == (local_crc, size)
    return [
        Verdict(
            OBJECT_MATCHES_LOCAL,
            passed,
            ERROR,
            {"object_crc32c": blob.crc32c if blob else "missing", "local_crc32c": local_crc or "missing"},
        )
    ]


def _total_expression(dataset: TaxiDataset) -> str | None:
    return "total_amount" if "total_amount" in dataset.sql_names else None


def month_totals_postgres(conn, dataset: TaxiDataset, month: Month) -> dict | None:
    """Rows and rounded total_amount of the month in Postgres; None if it is not loaded."""
    partition = _loaded_partition(conn, dataset, month)
    if partition is None:
        return None
    total = _total_expression(dataset)
    total_sql = sql.SQL("round(sum({})::numeric, 2)").format(sql.Identifier(total)) if total else sql.SQL("NULL")
    row = conn.execute(sql.SQL("SELECT count(*), {} FROM {}").format(total_sql, sql.Identifier(partition))).fetchone()
    return _totals(row[0], str(row[1]) if row[1] is not None else None, total)


def month_totals_bigquery(settings: Settings, dataset: TaxiDataset, month: Month) -> dict:
    from google.cloud import bigquery as bq

    from taxi_assets.gcp import bigquery_client

    total = _total_expression(dataset)
    job = bigquery_client(settings).query(
        f"SELECT COUNT(*) AS n, {f'ROUND(SUM({total}), 2)' if total else 'NULL'} AS t"
        f" FROM `{table_id(settings, dataset)}` WHERE month = @m",
        job_config=bq.QueryJobConfig(query_parameters=[bq.ScalarQueryParameter("m", "DATE", f"{month}-01")]),
    )
    row = next(iter(job.result()))
    return _totals(row.n, f"{row.t:.2f}" if row.t is not None else None, total)


def _totals(rows: int, total: str | None, column: str | None) -> dict:
    """Without nulls: Kestra's outputs drop them, and the verdicts must read the same in both."""
    return {"rows": rows} | ({"total_amount": total or "0.00"} if column else {})


def bigquery_verdicts(settings: Settings, conn, dataset: TaxiDataset, month: Month) -> list[Verdict]:
    """`conn`: the taxi-data Postgres, for `matches_postgres` (None: not compared)."""
    entry = ledger.held(settings, ledger.BIGQUERY, dataset, month)
    bq = month_totals_bigquery(settings, dataset, month)
    verdicts = [_rows_match_ledger("bigquery", bq["rows"], entry)]
    pg_entry = ledger.held(settings, ledger.POSTGRES, dataset, month, conn=conn) if conn is not None else None
    if conn is None:
        verdicts.append(Verdict(MATCHES_POSTGRES, True, ERROR, {"postgres": "out of reach; not compared"}))
    elif entry is None or pg_entry is None or pg_entry.sha256 != entry.sha256:
        why = "Postgres does not hold the month from the same file; nothing to compare"
        verdicts.append(Verdict(MATCHES_POSTGRES, True, ERROR, {"postgres": why}))
    else:
        pg = month_totals_postgres(conn, dataset, month)
        verdicts.append(Verdict(MATCHES_POSTGRES, pg == bq, ERROR, {"bigquery": bq, "postgres": pg}))
    return verdicts


def run_checks(settings: Settings, store: str, dataset: TaxiDataset, month: Month) -> list[Verdict]:
    """Every check of the month in `store`, in `SPECS` order."""
    import psycopg

    from taxi_assets import database
    from taxi_assets.errors import ConfigError

    if store == GCS:
        return gcs_verdicts(settings, dataset, month)
    if store == ledger.POSTGRES:
        with database.connect(settings) as conn:
            return postgres_verdicts(settings, conn, dataset, month)
    try:  # for matches_postgres only: BigQuery's own checks do not wait on Postgres
        conn = database.connect(settings)
    except (ConfigError, psycopg.Error) as exc:
        log.warning("%s %s: Postgres is out of reach (%s); BigQuery is not compared with it", dataset.name, month, exc)
        return bigquery_verdicts(settings, None, dataset, month)
    with conn:
        return bigquery_verdicts(settings, conn, dataset, month)
