"""load-postgres: replace one month of a taxi table, atomically, by partition swap.

Each taxi table is LIST-partitioned by `filename`, one partition per month file. A load
streams the .csv.gz into a fresh table (COPY ... FREEZE, row ids computed on the way), checks
it, and in the same transaction swaps it in for the month's old partition. Until COMMIT nobody
sees the new rows; on any failure the transaction rolls back and the old rows stay as they
were. Work is proportional to the month, never to the table. Loads of one month are
serialized by an advisory lock, so Dagster and Kestra cannot interleave. The exact-duplicate
count spills its digests to a nameless file beside the month file (under the state folder), so
a load killed at any point leaves no file behind.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from taxi_assets.datasets import FILENAME_COLUMN, ROW_ID_COLUMN, TaxiDataset
from taxi_assets.errors import BadFileError, LoadError
from taxi_assets.months import Month
from taxi_assets.rows import DuplicateCounter, data_lines, with_row_ids
from taxi_assets.steps.extract import row_ids

log = logging.getLogger(__name__)

_LOCK_NAMESPACE = "taxi_assets"


@dataclass
class LoadReport:
    taxi: str
    month: str
    table: str
    partition: str
    filename: str
    rows_loaded: int
    duplicate_rows: int
    out_of_month_rows: int
    null_keys: dict[str, int] = field(default_factory=dict)
    replaced_previous: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def partition_name(dataset: TaxiDataset, month: Month) -> str:
    return f"{dataset.table}_{month.year:04d}_{month.month:02d}"


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def _column_defs(dataset: TaxiDataset) -> sql.Composed:
    columns = [ROW_ID_COLUMN, FILENAME_COLUMN, *dataset.columns]
    return sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(
            _ident(c.sql_name), sql.SQL(c.pg_type), sql.SQL(" NOT NULL" if c is FILENAME_COLUMN else "")
        )
        for c in columns
    )


def create_table_sql(dataset: TaxiDataset) -> sql.Composed:
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}) PARTITION BY LIST (filename)").format(
        _ident(dataset.table), _column_defs(dataset)
    )


def ensure_table(conn: psycopg.Connection, dataset: TaxiDataset) -> None:
    """Create the partitioned table once; refuse a same-named table of another shape."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (_LOCK_NAMESPACE, dataset.table))
        kind = conn.execute(
            "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)", (dataset.table,)
        ).fetchone()
        if kind is None:
            conn.execute(create_table_sql(dataset))
        elif kind[0] != "p":
            raise LoadError(
                f"table {dataset.table} exists but is not partitioned by filename (another tool made it?); "
                "rename or drop it and load again"
            )


def _lock_month(conn: psycopg.Connection, partition: str) -> None:
    key = (_LOCK_NAMESPACE, partition)
    if not conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s), hashtext(%s))", key).fetchone()[0]:
        log.warning("another load of %s is running; waiting for it to finish", partition)
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", key)


def _month_stats(conn: psycopg.Connection, dataset: TaxiDataset, month: Month, table: str) -> tuple[int, dict]:
    pickup = _ident(dataset.pickup_column.lower())
    nulls = [sql.SQL("count(*) FILTER (WHERE {} IS NULL)").format(_ident(k.lower())) for k in dataset.key_columns]
    row = conn.execute(
        sql.SQL("SELECT count(*) FILTER (WHERE {p} < %s OR {p} >= %s), {n} FROM {t}").format(
            p=pickup, n=sql.SQL(", ").join(nulls), t=_ident(table)
        ),
        (month.start, month.end),
    ).fetchone()
    return row[0], dict(zip((k.lower() for k in dataset.key_columns), row[1:], strict=True))


def _create_staging(
    conn: psycopg.Connection, dataset: TaxiDataset, staging: str, partition: str, filename: str
) -> None:
    # From the column definitions, not LIKE: LIKE would hold a lock on the parent for the
    # whole COPY, and two months swapping in at once would deadlock on it.
    conn.execute(sql.SQL("CREATE TABLE {s} ({c})").format(s=_ident(staging), c=_column_defs(dataset)))
    # The filename is a constant of the partition: a default, not bytes sent per row.
    # The CHECK lets ATTACH PARTITION skip its validation scan.
    conn.execute(
        sql.SQL(
            "ALTER TABLE {s} ALTER COLUMN filename SET DEFAULT {f}, ADD CONSTRAINT {c} CHECK (filename = {f})"
        ).format(s=_ident(staging), f=sql.Literal(filename), c=_ident(f"{partition}_filename"))
    )


def _swap_in(conn: psycopg.Connection, dataset: TaxiDataset, staging: str, partition: str, filename: str) -> bool:
    """Replace the month's partition by the staging table; True if there was one before."""
    table = _ident(dataset.table)
    # Take the lock DETACH needs up front: swaps of different months queue here, briefly.
    conn.execute(sql.SQL("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE").format(t=table))
    replaced = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (partition,)).fetchone()[0]
    if replaced:
        conn.execute(sql.SQL("ALTER TABLE {t} DETACH PARTITION {p}").format(t=table, p=_ident(partition)))
        conn.execute(sql.SQL("DROP TABLE {p}").format(p=_ident(partition)))
    conn.execute(sql.SQL("ALTER TABLE {s} RENAME TO {p}").format(s=_ident(staging), p=_ident(partition)))
    conn.execute(
        sql.SQL("ALTER TABLE {t} ATTACH PARTITION {p} FOR VALUES IN ({f})").format(
            t=table, p=_ident(partition), f=sql.Literal(filename)
        )
    )
    return replaced


_interval_lock = threading.Lock()
_interval_users = 0
_DEFAULT_INTERVAL = sys.getswitchinterval()


def _short_switch_interval(on: bool) -> None:
    """Reference-counted: concurrent loads in one process must not leave it short."""
    global _interval_users
    with _interval_lock:
        _interval_users += 1 if on else -1
        sys.setswitchinterval(0.0005 if _interval_users else _DEFAULT_INTERVAL)


def _stream(copy: psycopg.Copy, payloads) -> int:
    """Feed COPY from a writer thread while this thread hashes the next blocks.

    Sending blocks (socket I/O, GIL released) overlaps with hashing (Python), so Postgres
    parses while Python works instead of the two taking turns. The queue bounds memory to a
    few blocks. A short GIL switch interval lets the writer hand Postgres each 128 KB piece
    promptly instead of once per default 5 ms slice.
    """
    pending: queue.Queue = queue.Queue(maxsize=4)
    failure: list[BaseException] = []
    stop = threading.Event()  # set when the producer failed: send nothing more

    def write() -> None:
        try:
            while (payload := pending.get()) is not None:
                if not stop.is_set():
                    copy.write(payload)
        except BaseException as exc:  # handed to the hashing thread, which stops and re-raises
            failure.append(exc)
            while pending.get() is not None:  # drain so the producer never blocks forever
                pass

    writer = threading.Thread(target=write, name="taxi-copy-writer", daemon=True)
    _short_switch_interval(True)
    rows = 0
    try:
        writer.start()
        for payload, n in payloads:
            if failure:
                break
            pending.put(payload)
            rows += n
    except BaseException:
        stop.set()
        raise
    finally:
        try:
            pending.put(None)
            writer.join()
        finally:
            _short_switch_interval(False)
    if failure:
        raise failure[0]
    return rows


def load_postgres(
    conn: psycopg.Connection,
    dataset: TaxiDataset,
    month: Month,
    path: Path,
    *,
    expected_rows: int | None = None,
) -> LoadReport:
    """Replace `month` of `dataset`'s table with the rows of the .csv.gz at `path`."""
    started = time.monotonic()
    filename = dataset.file_name(month)
    if path.name != filename:
        raise LoadError(f"{path.name} is not the {dataset.taxi} {month} file ({filename})")
    ensure_table(conn, dataset)
    partition = partition_name(dataset, month)
    staging = f"{partition}_loading"
    columns = sql.SQL(", ").join(_ident(c) for c in (ROW_ID_COLUMN.sql_name, *dataset.sql_names))
    duplicates = DuplicateCounter(spill_dir=path.parent)  # beside the download: under the state folder
    ids = row_ids(path)  # computed by extract; None: hash the lines here
    try:
        with conn.transaction(), ThreadPoolExecutor(max_workers=1) as background:
            _lock_month(conn, partition)
            _create_staging(conn, dataset, staging, partition, filename)
            _, blocks = data_lines(path, dataset)
            copy_sql = sql.SQL("COPY {s} ({c}) FROM STDIN (FORMAT csv, FREEZE true)").format(
                s=_ident(staging), c=columns
            )
            payloads = with_row_ids(
                blocks,
                normalize_integer_floats=bool(dataset.integer_float_columns),
                duplicates=duplicates,
                row_ids=ids,
            )
            with conn.cursor().copy(copy_sql) as copy:
                rows = _stream(copy, payloads)
            if rows == 0:
                raise BadFileError(f"{path.name} has a header but no rows; the month's rows are kept")
            if expected_rows is not None and rows != expected_rows:
                raise BadFileError(f"{path.name} has {rows} data lines, its download record says {expected_rows}")
            duplicate_rows = background.submit(duplicates.duplicates)  # numpy sorts while Postgres scans
            out_of_month, null_keys = _month_stats(conn, dataset, month, staging)
            replaced = _swap_in(conn, dataset, staging, partition, filename)
            duplicate_rows = duplicate_rows.result()
    except psycopg.Error as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LoadError(f"{dataset.taxi} {month}: load rolled back, previous rows untouched: {message}") from exc
    except BadFileError as exc:
        raise BadFileError(f"{dataset.taxi} {month}: load rolled back, previous rows untouched: {exc}") from exc
    finally:
        duplicates.close()  # the spill file has no name: closing it frees its space
        if ids is not None:
            ids.close()
    report = LoadReport(
        taxi=dataset.taxi,
        month=str(month),
        table=dataset.table,
        partition=partition,
        filename=filename,
        rows_loaded=rows,
        duplicate_rows=duplicate_rows,
        out_of_month_rows=out_of_month,
        null_keys=null_keys,
        replaced_previous=replaced,
        seconds=round(time.monotonic() - started, 3),
    )
    log.info(
        "loaded %d rows into %s (%s); %d exact duplicates, %d outside the month",
        rows,
        dataset.table,
        partition,
        report.duplicate_rows,
        out_of_month,
    )
    return report
