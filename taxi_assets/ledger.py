"""The load ledger: what each store holds for a month, from which file, loaded by whom.

Every load writes one record into the store it loaded, atomically with the rows:

- Postgres: a row of `taxi_loads`, inserted in the transaction that swaps the month in, so a
  reader sees both or neither.
- BigQuery: a row of `{dataset}.taxi_loads`, one per month. On the emulator, replaced inside the
  transaction that replaces the month; on BigQuery, retracted before the partition load job
  and written once the job succeeded and the month's rows are counted, so the ledger never
  claims rows the table does not hold (between the two it claims nothing).

Postgres keeps every load; a month's current record is its newest one. It is the one
memory both orchestrators share: Dagster's catalog sensor, the TLC sensor, Kestra's scheduled
flow (`newest-month`), the checks and `status` all read it through `held` and `holdings`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timezone
from importlib import metadata
from pathlib import Path

import psycopg
from psycopg import sql

from taxi_assets.config import STORE_NAMES
from taxi_assets.datasets import TaxiDataset
from taxi_assets.months import Month
from taxi_assets.redact import redact_url

TABLE = "taxi_loads"
STORES = STORE_NAMES
POSTGRES, BIGQUERY = STORES
# Who loads: "cli" unless the orchestrator says (Dagster passes its run id; Kestra's flows set
# TAXI_LOADED_BY to "kestra:{{ execution.id }}").
LOADED_BY = "TAXI_LOADED_BY"
CLI = "cli"


@dataclass(frozen=True)
class LoadRecord:
    """One load of one month into one store."""

    source: str
    taxi: str
    month: str  # YYYY-MM: the file's month
    table_name: str
    file: str
    url: str
    etag: str
    bytes: int
    sha256: str  # of the downloaded file
    rows: int
    row_ids_sha256: str  # sha256 of the month's row ids in file order: the same rows, the same digest
    code_version: str
    loaded_at: datetime
    loaded_by: str  # "cli", "dagster:<run id>", "kestra:<execution id>"

    @property
    def orchestrator(self) -> str:
        return orchestrator_of(self.loaded_by)

    @property
    def run_id(self) -> str:
        return run_id_of(self.loaded_by)

    def as_dict(self) -> dict:
        return {**asdict(self), "loaded_at": self.loaded_at.isoformat()}


COLUMNS = tuple(f.name for f in fields(LoadRecord))
_PG_TYPES = {"month": "date", "bytes": "bigint", "rows": "bigint", "loaded_at": "timestamptz"}
_BQ_TYPES = {"month": "DATE", "bytes": "INT64", "rows": "INT64", "loaded_at": "TIMESTAMP"}


@functools.cache
def code_version() -> str:
    try:
        return metadata.version("taxi-assets")
    except metadata.PackageNotFoundError:
        return "unknown"


DAGSTER, KESTRA = "dagster", "kestra"


def orchestrator_of(by: str) -> str:
    """The orchestrator in a record's `loaded_by` or `built_by` ("dagster:<run id>": dagster; "cli")."""
    return by.split(":", 1)[0]


def run_id_of(by: str) -> str:
    """The run or execution id in a record's `loaded_by` or `built_by` ("" for the CLI)."""
    return by.partition(":")[2]


def loaded_by() -> str:
    return os.environ.get(LOADED_BY, "").strip() or CLI


def loaded_by_dagster(run_id: str) -> str:
    return f"{DAGSTER}:{run_id}"


def file_of(path: Path, dataset: TaxiDataset, month: Month):
    """extract's record (`FileInfo`) of a month file; for a file loaded without one (a path
    given by hand), what the ledger needs of it, hashed now."""
    from taxi_assets.files import FileInfo, recorded_download

    recorded, _ = recorded_download(path)
    if recorded is not None:
        return recorded
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return FileInfo(dataset.taxi, str(month), str(path), "", path.stat().st_size, digest.hexdigest(), 0, [])


def row_ids_digest(path: Path, dataset: TaxiDataset, rows: int) -> str:
    """sha256 of the month's `rows` row ids in file order: extract's row-id file of the download
    at `path` (about 0.2 s per 10 M rows), else the ids hashed now."""
    from taxi_assets.monthfile import open_month_file

    ids = open_month_file(path, dataset).row_ids()
    try:
        digest, left = hashlib.sha256(), rows
        while left:
            n = min(left, 1 << 20)
            digest.update(ids.read(n))
            left -= n
        return digest.hexdigest()
    finally:
        ids.close()


def record(
    dataset: TaxiDataset, month: Month, info, rows: int, row_ids_digest: str, *, by: str | None = None
) -> LoadRecord:
    """The record of loading `rows` rows from `info` (extract's `FileInfo` of the month's file)."""
    return LoadRecord(
        source=dataset.source.name,
        taxi=dataset.taxi,
        month=str(month),
        table_name=dataset.table,
        file=info.filename,
        url=redact_url(info.url),  # a record from before URLs were masked in it
        etag=info.etag,
        bytes=info.bytes,
        sha256=info.sha256,
        rows=rows,
        row_ids_sha256=row_ids_digest,
        code_version=code_version(),
        loaded_at=datetime.now(timezone.utc),
        loaded_by=by or loaded_by(),
    )


def stored_month(value) -> str:
    """A ledger's `month` as read back (a date from Postgres or BigQuery) as YYYY-MM."""
    return f"{value.year:04d}-{value.month:02d}" if isinstance(value, date) else str(value)[:7]


def _from_row(row) -> LoadRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    values["month"] = stored_month(values["month"])
    values["loaded_at"] = values["loaded_at"].astimezone(timezone.utc)  # Postgres: the session's zone
    return LoadRecord(**values)


def create_postgres_table(conn: psycopg.Connection, table: sql.Composable, columns, types: dict) -> None:
    """A ledger table (an identity key, then `columns`, each NOT NULL of its `types` type or
    text), unless it exists; the caller holds the lock that makes its creation one at a time."""
    defs = sql.SQL(", ").join(
        sql.SQL("{} {} NOT NULL").format(sql.Identifier(c), sql.SQL(types.get(c, "text"))) for c in columns
    )
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {c})").format(
            t=table, c=defs
        )
    )


def create_bigquery_table(client, name: str, columns, types: dict) -> None:
    """A ledger table in BigQuery (`columns`, each REQUIRED of its `types` type or STRING), unless it exists."""
    from google.cloud import bigquery

    schema = [bigquery.SchemaField(c, types.get(c, "STRING"), mode="REQUIRED") for c in columns]
    client.create_table(bigquery.Table(name, schema=schema), exists_ok=True)


# --- Postgres ---------------------------------------------------------------------------------


def ensure_postgres(conn: psycopg.Connection) -> None:
    """Create the ledger once (under a lock of its own: two feeds' first loads at once), and take
    in the months loaded before it existed, from their partitions' comments."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('taxi_assets'), hashtext(%s))", (TABLE,))
    if conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0] is not None:
        return
    create_postgres_table(conn, sql.Identifier(TABLE), COLUMNS, _PG_TYPES)
    conn.execute(
        sql.SQL("CREATE INDEX {i} ON {t} (source, taxi, month, id)").format(
            i=sql.Identifier(f"{TABLE}_month"), t=sql.Identifier(TABLE)
        )
    )
    for entry in _from_partition_comments(conn):
        write_postgres(conn, entry)


MIGRATED = "migrated"  # loaded_by of a month loaded before the ledger (its partition's comment)


def _from_partition_comments(conn: psycopg.Connection) -> list[LoadRecord]:
    """The months that earlier versions recorded only as a JSON comment on their partition."""
    from taxi_assets.datasets import ALL_DATASETS

    found = []
    for ds in ALL_DATASETS:
        rows = conn.execute(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            (ds.table,),
        ).fetchall()
        for name, comment in rows:
            try:
                origin = json.loads(comment) if comment else None
                month = Month(int(name[-7:-3]), int(name[-2:]))
            except ValueError:
                continue
            if not isinstance(origin, dict) or not origin.get("sha256"):
                continue
            found.append(
                LoadRecord(
                    ds.source.name,
                    ds.taxi,
                    str(month),
                    ds.table,
                    origin.get("file", ""),
                    "",
                    origin.get("etag", ""),
                    int(origin.get("bytes") or 0),
                    origin["sha256"],
                    int(origin.get("rows") or 0),
                    "",
                    "unknown",
                    datetime.now(timezone.utc),
                    MIGRATED,
                )  # fmt: skip
            )
    return found


def write_postgres(conn: psycopg.Connection, entry: LoadRecord) -> None:
    """Insert `entry`; call inside the load's transaction."""
    values = {**asdict(entry), "month": date.fromisoformat(entry.month + "-01")}
    conn.execute(
        sql.SQL("INSERT INTO {t} ({c}) VALUES ({v})").format(
            t=sql.Identifier(TABLE),
            c=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            v=sql.SQL(", ").join(sql.Placeholder(c) for c in COLUMNS),
        ),
        values,
    )


def postgres_records(
    conn: psycopg.Connection, dataset: TaxiDataset | None = None, *, after_id: int = 0
) -> list[tuple[int, LoadRecord]]:
    """(id, record) of every load after `after_id`, oldest first; of one dataset if given."""
    if conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0] is None:
        return []
    where, params = [sql.SQL("id > %s")], [after_id]
    if dataset is not None:
        where.append(sql.SQL("source = %s AND taxi = %s"))
        params += [dataset.source.name, dataset.taxi]
    rows = conn.execute(
        sql.SQL("SELECT id, {c} FROM {t} WHERE {w} ORDER BY id").format(
            c=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            t=sql.Identifier(TABLE),
            w=sql.SQL(" AND ").join(where),
        ),
        params,
    ).fetchall()
    return [(row[0], _from_row(row[1:])) for row in rows]


# --- BigQuery ---------------------------------------------------------------------------------


def bigquery_table(settings) -> str:
    return f"{settings.gcp_project}.{settings.gcp_dataset}.{TABLE}"


def ensure_bigquery(client, settings) -> None:
    create_bigquery_table(client, bigquery_table(settings), COLUMNS, _BQ_TYPES)


def bigquery_literal(value) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat()}'"
    text = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 else "\\" + c if c in "\\'" else c for c in str(value)
    )  # quotes and backslashes escaped, control characters (a CR in an ETag) as \uXXXX
    return f"'{text}'"


def bigquery_insert_sql(settings, entry: LoadRecord) -> str:
    """The INSERT of `entry`, as a statement of the load's own script (literals: the emulator
    takes no parameters inside a multi-statement transaction)."""
    values = [f"DATE '{entry.month}-01'" if c == "month" else bigquery_literal(getattr(entry, c)) for c in COLUMNS]
    return f"INSERT INTO `{bigquery_table(settings)}` ({', '.join(COLUMNS)}) VALUES ({', '.join(values)})"


def bigquery_retract_sql(settings, dataset: TaxiDataset, month: Month) -> str:
    return (
        f"DELETE FROM `{bigquery_table(settings)}` WHERE source = {bigquery_literal(dataset.source.name)}"
        f" AND taxi = {bigquery_literal(dataset.taxi)} AND month = DATE '{month}-01'"
    )


# A reader (a sensor tick, `status`) gives up on a BigQuery that does not answer after this long,
# rather than the client's default of 10 minutes of retries.
READ_DEADLINE = 15.0


def bigquery_available(settings):
    """BigQuery's settings when it is configured (a project, an emulator host) or the embedded
    emulator already runs; else None: a reader must not start an emulator (GBs of memory)."""
    from taxi_assets.emulators import running_emulators, with_local_cloud

    if settings.gcp_configured or settings.bigquery_emulator:
        return with_local_cloud(settings)
    if any(e.name == "bqemulator" for e in running_emulators(settings)):
        return with_local_cloud(settings)
    return None


def bigquery_records(client, settings, dataset: TaxiDataset | None = None) -> list[LoadRecord]:
    """Every load recorded in the dataset's ledger, oldest first; of one dataset if given."""
    from google.api_core import exceptions as gexc
    from google.cloud.bigquery import DEFAULT_RETRY

    where = ""
    if dataset is not None:
        where = f" WHERE source = {bigquery_literal(dataset.source.name)} AND taxi = {bigquery_literal(dataset.taxi)}"
    try:
        query = f"SELECT {', '.join(COLUMNS)} FROM `{bigquery_table(settings)}`{where}"
        retry = DEFAULT_RETRY.with_deadline(READ_DEADLINE)
        rows = client.query(query, retry=retry, job_retry=None).result(retry=retry, timeout=READ_DEADLINE)
    except gexc.NotFound:
        return []
    found = [_from_row([row[c] for c in COLUMNS]) for row in rows]
    return sorted(found, key=lambda r: r.loaded_at)


# --- Readers ----------------------------------------------------------------------------------

Key = tuple[str, str, Month]  # (source, taxi, month)


def current(records) -> dict[Key, LoadRecord]:
    """Each month's newest record, from records oldest first."""
    return {(r.source, r.taxi, Month.parse(r.month)): r for r in records}


def holdings(settings, store: str, dataset: TaxiDataset | None = None, *, conn=None) -> dict[Key, LoadRecord]:
    """What `store` holds: each month's current record (of one dataset if given). Postgres is
    read through `conn` when given, else a connection of its own."""
    if store == POSTGRES:
        from taxi_assets import database

        if conn is not None:
            return current(r for _, r in postgres_records(conn, dataset))
        with database.connect(settings) as own:
            return current(r for _, r in postgres_records(own, dataset))
    if store == BIGQUERY:
        from taxi_assets.gcp import bigquery_client

        return current(bigquery_records(bigquery_client(settings), settings, dataset))
    raise ValueError(f"unknown store {store!r}")


def held(settings, store: str, dataset: TaxiDataset, month: Month, *, conn=None) -> LoadRecord | None:
    """What `store` holds for the month, from which file; None if no load is recorded."""
    return holdings(settings, store, dataset, conn=conn).get((dataset.source.name, dataset.taxi, month))


def in_both(postgres: dict[Key, LoadRecord], bigquery: dict[Key, LoadRecord]) -> dict[Key, LoadRecord | None]:
    """The months both stores hold: each with Postgres's record when the two loaded the same
    file (sha256), None when they hold different files."""
    return {
        key: entry if bigquery[key].sha256 == entry.sha256 else None
        for key, entry in postgres.items()
        if key in bigquery
    }


def loaded_in_both(postgres_settings, bigquery_settings, dataset: TaxiDataset) -> dict[Key, LoadRecord | None]:
    """`in_both` of what the two ledgers hold of `dataset`: what "loaded" means for the TLC
    sensor and for `newest-month` alike. No BigQuery to read (`bigquery_settings` None): none."""
    postgres = holdings(postgres_settings, POSTGRES, dataset)
    bigquery = holdings(bigquery_settings, BIGQUERY, dataset) if bigquery_settings is not None else {}
    return in_both(postgres, bigquery)


def not_holding(settings, stores, dataset: TaxiDataset, month: Month, sha256: str) -> dict[str, str]:
    """Of `stores`, those whose ledger does not record the month loaded from the file `sha256`,
    each with why: no load recorded, another file, or a ledger that cannot be read (a BigQuery
    not configured and no emulator running: none is started for this). Empty: all hold it."""
    missing = {}
    for store in stores:
        try:
            where = settings if store == POSTGRES else bigquery_available(settings)
            entry = None if where is None else held(where, store, dataset, month)
        except Exception as exc:  # whatever keeps the ledger from answering: it holds nothing we know of
            missing[store] = (
                f"its ledger cannot be read: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            )
            continue
        if where is None:
            missing[store] = "its ledger cannot be read: no BigQuery configured and no emulator running"
        elif entry is None:
            missing[store] = "no load recorded"
        elif entry.sha256 != sha256:
            missing[store] = (
                f"it holds another file (sha256 {entry.sha256[:12]}…, loaded {entry.loaded_at:%Y-%m-%d %H:%M})"
            )
    return missing
