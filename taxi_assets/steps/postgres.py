"""load-postgres: replace one month of a taxi table, atomically, by partition swap.

Each taxi table is LIST-partitioned by `filename`, one partition per month file; a month's
partition is itself split in two by `unique_row_id` (ids 0-7… and 8-f…), so that two sessions
COPY its halves at once: COPY is one core's work in Postgres, and a month is that COPY. A load
streams the month into fresh tables (COPY ... FREEZE, binary rows with their ids: a .csv.gz's lines
transcoded, a Parquet's batches encoded, `pgbinary`), checks them,
and in the main session's transaction swaps them in for the month's old partition. Until that
COMMIT nobody sees the new rows; on any failure the transaction rolls back and the old rows stay
as they were. The second session commits its half, unattached, just before the swap; a half
left by a load killed in between is dropped by the next load of the month. Work is proportional to the month, never to the table. Loads of one month are
serialized by an advisory lock, so Dagster and Kestra cannot interleave. The swap never queues
ahead of readers (a queued ACCESS EXCLUSIVE would stall every later query of the table): it
locks the month's own partition only, each attempt for 50 ms, says whom it waits for, and gives
up after TAXI_LOCK_WAIT seconds. The exact-duplicate
count spills its digests to a nameless file beside the month file (under the state folder), so
a load killed at any point leaves no file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psycopg
from psycopg import sql

from taxi_assets import config, ledger
from taxi_assets.datasets import FILENAME_COLUMN, ROW_ID_COLUMN, TaxiDataset
from taxi_assets.errors import BadFileError, ConfigError, LoadError
from taxi_assets.monthfile import ROW_ID_BYTES, MonthFile, RowIds, open_month_file
from taxi_assets.months import Month
from taxi_assets.rows import DuplicateCounter
from taxi_assets.stores import partition_name
from taxi_assets.threads import wind_down

if TYPE_CHECKING:
    pass

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


def _relkind(conn: psycopg.Connection, name: str) -> str | None:
    """A table's relkind ("p": partitioned, "r": plain), None if there is none. A month's
    partition is "p" (split into halves), "r" in the older one-table layout."""
    found = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (name,)).fetchone()
    return found[0] if found else None


def ensure_table(conn: psycopg.Connection, dataset: TaxiDataset) -> None:
    """Create the partitioned table once; refuse a same-named table of another shape."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (_LOCK_NAMESPACE, dataset.table))
        kind = _relkind(conn, dataset.table)
        if kind is None:
            conn.execute(create_table_sql(dataset))
        elif kind != "p":
            raise LoadError(
                f"table {dataset.table} exists but is not partitioned by filename (another tool made it?); "
                "rename or drop it and load again"
            )
        ledger.ensure_postgres(conn)


def _try_lock_month(conn: psycopg.Connection, partition: str) -> bool:
    """The month's lock for this transaction, if no other load holds it."""
    key = (_LOCK_NAMESPACE, partition)
    return conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s), hashtext(%s))", key).fetchone()[0]


def _lock_month(conn: psycopg.Connection, partition: str) -> None:
    if not _try_lock_month(conn, partition):
        log.warning("another load of %s is running; waiting for it to finish", partition)
        key = (_LOCK_NAMESPACE, partition)
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


_SPLIT_AT = "8"  # ids 0-7… go to the month's first half, 8-f… to its second
_BOUNDS = (("MINVALUE", _SPLIT_AT), (_SPLIT_AT, "MAXVALUE"))


def _half_names(partition: str) -> list[str]:
    return [f"{partition}_{i}" for i in range(len(_BOUNDS))]


def _staging_names(partition: str) -> list[str]:
    return [f"{partition}_loading_{i}" for i in range(len(_BOUNDS))]


def _create_staging(conn: psycopg.Connection, dataset: TaxiDataset, staging: str, half: int, filename: str) -> None:
    # A half left by a load killed between its two commits: dropped by the session that needs the
    # name (the main session holds the month's lock: no other load of the month runs).
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {s}").format(s=_ident(staging)))
    # From the column definitions, not LIKE: LIKE would hold a lock on the parent for the
    # whole COPY, and two months swapping in at once would deadlock on it.
    conn.execute(sql.SQL("CREATE TABLE {s} ({c})").format(s=_ident(staging), c=_column_defs(dataset)))
    # The filename is a constant of the partition: a default, not bytes sent per row. The
    # CHECKs let ATTACH PARTITION skip its validation scans (the month's, the half's).
    low, high = _BOUNDS[half]
    in_half = [sql.SQL("unique_row_id IS NOT NULL")]
    in_half += [] if low == "MINVALUE" else [sql.SQL('unique_row_id COLLATE "C" >= {}').format(sql.Literal(low))]
    in_half += [] if high == "MAXVALUE" else [sql.SQL('unique_row_id COLLATE "C" < {}').format(sql.Literal(high))]
    conn.execute(
        sql.SQL(
            "ALTER TABLE {s} ALTER COLUMN filename SET DEFAULT {f}, ADD CHECK (filename = {f}), ADD CHECK ({h})"
        ).format(s=_ident(staging), f=sql.Literal(filename), h=sql.SQL(" AND ").join(in_half))
    )


def _drop_halves(conn: psycopg.Connection, partition: str) -> None:
    """Drop the staging halves of a load whose swap did not happen (one may be committed)."""
    for name in _staging_names(partition):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(name)))


LOCK_WAIT_DEFAULT = 300.0  # seconds: a long report is outwaited; a session left open is named, not waited on forever
_LOCK_TRY = "50ms"  # the longest one attempt queues ahead of readers (and so holds them up)
_LOG_EVERY = 10.0
# Lock modes that conflict with SHARE UPDATE EXCLUSIVE (ACCESS EXCLUSIVE conflicts with all).
_CONFLICTS_SUE = [
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
]


def lock_wait() -> float:
    """TAXI_LOCK_WAIT from the environment: the CLI's and Dagster's processes both have it."""
    seconds = config._float(config.LOCK_WAIT, LOCK_WAIT_DEFAULT, os.environ)
    if seconds < 0:
        raise ConfigError(f"{config.LOCK_WAIT} must be 0 or more seconds, got {seconds:g}")
    return seconds


def _holders(conn: psycopg.Connection, tables: list[str], modes: list[str] | None) -> str:
    """Who holds (or queues ahead for) a lock in `modes` (None: any) on one of `tables`."""
    rows = conn.execute(
        r"""
        SELECT DISTINCT ON (pid) pid, coalesce(nullif(a.application_name, ''), a.usename::text, '?'), a.state,
               round(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start)))::int,
               left(regexp_replace(a.query, '\s+', ' ', 'g'), 80)
        FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.relation = ANY(%s::regclass[])
          AND pid <> pg_backend_pid() AND (%s::text[] IS NULL OR l.mode = ANY(%s::text[]))
        ORDER BY pid
        """,
        (tables, modes, modes),
    ).fetchall()
    if not rows:
        return "a session that has just let go"
    return "; ".join(
        f"pid {pid} ({app}, {state}, transaction open {age} s: {query})" for pid, app, state, age, query in rows
    )


def _lock_politely(
    conn: psycopg.Connection,
    statements: list[sql.Composable],
    tables: list[str],
    modes: list[str] | None,
    bound: float,
) -> None:
    """Run the LOCK `statements` in this transaction without ever sitting in the lock queue.

    A waiting ACCESS EXCLUSIVE request queues every later reader behind it, even an instant
    count(*) of another month; so each attempt waits at most _LOCK_TRY, a failed one is rolled back
    (its savepoint: locks of the attempt included) and retried after a pause. While it waits, a
    line every _LOG_EVERY seconds names the sessions in the way; after `bound` seconds, LoadError.
    """
    previous = conn.execute("SHOW lock_timeout").fetchone()[0]
    started, pause, next_line = time.monotonic(), 0.05, 0.0
    deadline = started + bound
    while True:
        try:
            with conn.transaction():  # a savepoint: the attempt's set_config and locks go with it
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (_LOCK_TRY,))
                for statement in statements:
                    conn.execute(statement)
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))
            if next_line:  # it had said it waits
                log.info("%s: got the lock after %.1f s", tables[0], time.monotonic() - started)
            return
        except psycopg.errors.LockNotAvailable:
            pass
        now = time.monotonic()
        if now >= deadline:
            raise LoadError(
                f"gave up after waiting {bound:g} s ({config.LOCK_WAIT}) for a lock on {tables[0]}, held by"
                f" {_holders(conn, tables, modes)}; end that session, or load again later"
            )
        if now >= next_line:
            log.warning(
                "%s: the swap waits for %s; other months stay readable; giving up in %.0f s (%s)",
                tables[0],
                _holders(conn, tables, modes),
                deadline - now,
                config.LOCK_WAIT,
            )
            next_line = now + _LOG_EVERY
        time.sleep(min(pause, max(deadline - now, 0)))
        pause = min(pause * 2, 1.0)


def _swap_locks(conn: psycopg.Connection, dataset: TaxiDataset, partition: str, kind: str | None, bound: float) -> None:
    """The locks `_swap_in` needs, taken politely. A month already loaded keeps its partition and
    swaps the halves inside it: ACCESS EXCLUSIVE on that partition only (DETACH takes it), nothing
    on the table but the ACCESS SHARE any query takes, so readers of other months never wait. A
    new month is attached to the table under SHARE UPDATE EXCLUSIVE, which no reader conflicts
    with. A month of the older one-table layout leaves the table under ACCESS EXCLUSIVE."""
    lock = sql.SQL("LOCK TABLE {} IN {} MODE")
    if kind == "p":  # LOCK TABLE takes its halves too, as DETACH needs
        statements, modes = [lock.format(_ident(partition), sql.SQL("ACCESS EXCLUSIVE"))], None
        tables = [partition, *_children(conn, partition)]
    elif kind is None:
        statements = [sql.SQL("LOCK TABLE ONLY {} IN SHARE UPDATE EXCLUSIVE MODE").format(_ident(dataset.table))]
        tables, modes = [dataset.table], _CONFLICTS_SUE
    else:
        statements = [
            sql.SQL("LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE").format(_ident(dataset.table)),
            lock.format(_ident(partition), sql.SQL("ACCESS EXCLUSIVE")),
        ]
        tables, modes = [partition, dataset.table], None
    _lock_politely(conn, statements, tables, modes, bound)


def _children(conn: psycopg.Connection, partition: str) -> list[str]:
    rows = conn.execute("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass", (partition,))
    return [name for (name,) in rows.fetchall()]


def _attach_halves(conn: psycopg.Connection, partition: str) -> None:
    for staging, half, (low, high) in zip(_staging_names(partition), _half_names(partition), _BOUNDS, strict=True):
        conn.execute(sql.SQL("ALTER TABLE {s} RENAME TO {h}").format(s=_ident(staging), h=_ident(half)))
        conn.execute(
            sql.SQL("ALTER TABLE {p} ATTACH PARTITION {h} FOR VALUES FROM ({lo}) TO ({hi})").format(
                p=_ident(partition),
                h=_ident(half),
                lo=sql.SQL(low) if low == "MINVALUE" else sql.Literal(low),
                hi=sql.SQL(high) if high == "MAXVALUE" else sql.Literal(high),
            )
        )


def _swap_in(conn: psycopg.Connection, dataset: TaxiDataset, partition: str, kind: str | None, filename: str) -> bool:
    """Replace the month's rows by the staging halves; True if there were rows before. The caller
    holds the locks (`_swap_locks`, taken before the second half's commit) for the partition of
    this `kind` (`_relkind`: stable under the month's lock)."""
    table = _ident(dataset.table)
    if kind == "p":  # the month's partition stays; its halves are replaced
        for half in _children(conn, partition):
            conn.execute(sql.SQL("ALTER TABLE {p} DETACH PARTITION {h}").format(p=_ident(partition), h=sql.SQL(half)))
            conn.execute(sql.SQL("DROP TABLE {h}").format(h=sql.SQL(half)))
        _attach_halves(conn, partition)
        return True
    if kind is not None:  # loaded before the months had halves: out of the table
        conn.execute(sql.SQL("ALTER TABLE {t} DETACH PARTITION {p}").format(t=table, p=_ident(partition)))
        conn.execute(sql.SQL("DROP TABLE {p}").format(p=_ident(partition)))
    conn.execute(
        sql.SQL('CREATE TABLE {p} ({c}) PARTITION BY RANGE (unique_row_id COLLATE "C")').format(
            p=_ident(partition), c=_column_defs(dataset)
        )
    )
    _attach_halves(conn, partition)
    conn.execute(
        sql.SQL("ALTER TABLE {t} ATTACH PARTITION {p} FOR VALUES IN ({f})").format(
            t=table, p=_ident(partition), f=sql.Literal(filename)
        )
    )
    return kind is not None


def _second_session(conn: psycopg.Connection) -> psycopg.Connection:
    """A connection to where `conn` is connected, as the same user (its password included), with
    its search_path: both halves must be made in the schema the swap will find them in."""
    password = conn.pgconn.password
    search_path = conn.execute("SHOW search_path").fetchone()[0]
    conn.rollback()  # SHOW opened a transaction; the load needs the connection idle
    other = psycopg.connect(conn.info.dsn, password=password.decode() if password else None, connect_timeout=15)
    other.execute("SELECT set_config('search_path', %s, false)", (search_path,))
    other.commit()
    return other


_interval_lock = threading.Lock()
_interval_users = 0
_DEFAULT_INTERVAL = sys.getswitchinterval()


def _short_switch_interval(on: bool) -> None:
    """Reference-counted: concurrent loads in one process must not leave it short."""
    global _interval_users
    with _interval_lock:
        _interval_users += 1 if on else -1
        sys.setswitchinterval(0.0005 if _interval_users else _DEFAULT_INTERVAL)


def _stream(copies: list[psycopg.Copy], payloads: Iterator[tuple[list[bytes], int]]) -> int:
    """Feed each COPY from a writer thread of its own while this thread prepares the next blocks.

    Sending (socket I/O, GIL released) overlaps with the Python work, so Postgres parses while
    Python works instead of the two taking turns. The queues bound memory to a few blocks. A
    short GIL switch interval lets the writers hand Postgres each 128 KB piece promptly instead
    of once per default 5 ms slice.
    """
    # Two blocks a session: what a writer sends next (a fhvhv block's half is ~2.7 MB; four
    # put the TLC load's peak RSS 25 MB higher, at 394 MB, for no speed).
    queues: list[queue.Queue] = [queue.Queue(maxsize=2) for _ in copies]
    failure: list[BaseException] = []
    stop = threading.Event()  # set when the producer failed: send nothing more

    def write(copy: psycopg.Copy, pending: queue.Queue) -> None:
        try:
            while (payload := pending.get()) is not None:
                if payload and not stop.is_set():
                    copy.write(payload)
        except BaseException as exc:  # handed to the producing thread, which stops and re-raises
            failure.append(exc)
            while pending.get() is not None:  # drain so the producer never blocks forever
                pass

    writers = [
        threading.Thread(target=write, args=(copy, pending), name=f"taxi-copy-writer-{i}", daemon=True)
        for i, (copy, pending) in enumerate(zip(copies, queues, strict=True))
    ]
    _short_switch_interval(True)
    rows = 0
    try:
        for writer in writers:
            writer.start()
        for parts, n in payloads:
            if failure:
                break
            for pending, payload in zip(queues, parts, strict=True):
                pending.put(payload)
            rows += n
    except BaseException:
        stop.set()
        raise
    finally:
        ended = [False] * len(queues)

        def writers_ended() -> bool:
            for i, pending in enumerate(queues):
                if not ended[i]:
                    pending.put(None)
                    ended[i] = True
            for writer in writers:
                if writer.is_alive():
                    writer.join(0.1)
            return not any(writer.is_alive() for writer in writers)

        try:
            wind_down(writers_ended)  # before the COPYs end: a writer must not outlive its COPY
        finally:
            _short_switch_interval(False)
    if failure:
        raise failure[0]
    return rows


def _second_half(digests: bytes) -> np.ndarray:
    """Which rows go to the month's second half: those whose id's first hex digit is
    `_SPLIT_AT` or more (the first digest byte's high nibble)."""
    return np.frombuffer(digests, np.uint8)[::ROW_ID_BYTES] >= int(_SPLIT_AT, 16) << 4


def _copy_rows(
    month_file: MonthFile, ids: RowIds, duplicates: DuplicateCounter | None
) -> Iterator[tuple[list[memoryview], bytes]]:
    """The month's rows as binary COPY rows, a block at a time, one payload per half (by the first
    hex digit of their id), with their 16-byte digests. The load's, and `_copy_error`'s again."""
    for halves, digests in month_file.copy_halves(ids, _second_half):
        if duplicates is not None:
            duplicates.add(digests)
        yield halves, digests


def _payloads(month_file: MonthFile, ids: RowIds, duplicates: DuplicateCounter):
    """The month's rows as the two sessions' payloads, each stream starting with the format's header."""
    from taxi_assets import pgbinary

    yield [pgbinary.HEADER, pgbinary.HEADER], 0
    for halves, digests in _copy_rows(month_file, ids, duplicates):
        yield halves, len(digests) // ROW_ID_BYTES


_COPY_CONTEXT = re.compile(r"COPY \S+_loading_(\d+), line (\d+)(?:, column (\w+))?")


def _copy_error(exc: psycopg.Error, month_file: MonthFile) -> str | None:
    """A COPY's error at its place in the file: `line 1,234 of <file>, column fare_amount: <why>`.

    Each session COPYs the rows of one half, so a COPY's line is the n-th row of its half, not the
    file's: the file is read again (only on failure) to find that row. None: not a COPY's error.
    """
    context = _COPY_CONTEXT.search(exc.diag.context or "")
    if context is None:
        return None
    half, nth, column = int(context[1]), int(context[2]), context[3]
    name = month_file.name
    where, ids = f"row {nth:,} of {name}'s half {half}", None  # if the file cannot be read again
    try:
        ids = month_file.row_ids()
        seen, before = 0, 0
        for _, digests in _copy_rows(month_file, ids, None):
            mine = np.flatnonzero(_second_half(digests) == bool(half))
            if seen + len(mine) >= nth:
                where = month_file.place(before + int(mine[nth - seen - 1]) + 1)  # 1-based, among the data rows
                break
            seen, before = seen + len(mine), before + len(digests) // ROW_ID_BYTES
    except Exception:  # the COPY's own error matters more than where it was
        log.debug("could not place the COPY error in %s", name, exc_info=True)
    finally:
        if ids is not None:
            ids.close()
    return f"{where}{f', column {column}' if column else ''}: {exc.diag.message_primary}"


def load_postgres(
    conn: psycopg.Connection,
    dataset: TaxiDataset,
    month: Month,
    path: Path,
    *,
    expected_rows: int | None = None,
    loaded_by: str | None = None,
) -> LoadReport:
    """Replace `month` of `dataset`'s table with the rows of the month file at `path`, and record
    the load in the ledger in the same transaction (`loaded_by`: default `ledger.loaded_by()`)."""
    started = time.monotonic()
    filename = dataset.file_name(month)
    if path.name != filename:
        raise LoadError(f"{path.name} is not the {dataset.name} {month} file ({filename})")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        # The second session's half is committed for this load's own transaction to attach.
        raise LoadError("load_postgres needs a connection outside a transaction: it commits the month itself")
    bound = lock_wait()  # before any work: a bad value is a configuration error, not a failed load
    ensure_table(conn, dataset)
    partition = partition_name(dataset, month)
    staging = _staging_names(partition)
    columns = sql.SQL(", ").join(_ident(c) for c in (ROW_ID_COLUMN.sql_name, *dataset.sql_names))
    duplicates = DuplicateCounter(spill_dir=path.parent)  # beside the download: under the state folder
    month_file = open_month_file(path, dataset)
    recorded = ledger.file_of(path, dataset, month)
    other, committed, swapped, ids = None, False, False, None  # the second session; its half committed; swap done
    swap_failed: BaseException | None = None
    try:
        ids = month_file.row_ids()  # extract's, else hashed now (binary rows are no lines to hash)
        other = _second_session(conn)
        with conn.transaction(), ThreadPoolExecutor(max_workers=3) as background:
            _lock_month(conn, partition)
            sessions = [conn, other]
            for half, session in enumerate(sessions):
                _create_staging(session, dataset, staging[half], half, filename)
            with contextlib.ExitStack() as copying:
                copies = [
                    copying.enter_context(
                        session.cursor().copy(
                            sql.SQL("COPY {s} ({c}) FROM STDIN (FORMAT binary, FREEZE true)").format(
                                s=_ident(staging[half]), c=columns
                            )
                        )
                    )
                    for half, session in enumerate(sessions)
                ]
                loaded = _stream(copies, _payloads(month_file, ids, duplicates))
            if loaded == 0:
                raise BadFileError(f"{path.name} has a header but no rows; the month's rows are kept")
            if expected_rows is not None and loaded != expected_rows:
                raise BadFileError(f"{path.name} has {loaded} data lines, its download record says {expected_rows}")
            # The second half's scan first, so it never queues behind the numpy work: both sessions
            # scan at once (at 7.7 M rows the work after the COPYs went from 1.2 s to 0.95 s).
            other_stats = background.submit(_month_stats, other, dataset, month, staging[1])
            duplicate_rows = background.submit(duplicates.duplicates)
            digest = background.submit(ledger.row_ids_digest, path, dataset, loaded)
            out_of_month, null_keys = _month_stats(conn, dataset, month, staging[0])
            more_out, more_nulls = other_stats.result()
            out_of_month += more_out
            null_keys = {k: n + more_nulls[k] for k, n in null_keys.items()}
            # The locks the swap needs, taken before the second half is committed, so nothing waits
            # between that commit and this transaction's: a kill leaving the half for the next load
            # of the month has milliseconds to land. Never queued ahead of readers (_lock_politely).
            kind = _relkind(conn, partition)  # under the month's lock: no other load changes it
            _swap_locks(conn, dataset, partition, kind, bound)
            committed = True  # set first: an interrupt in the commit may still have committed it
            other.commit()  # its half, unattached and unseen, for this transaction to attach
            try:
                with conn.transaction():  # a savepoint: a failed swap is undone, the month's lock kept
                    replaced = _swap_in(conn, dataset, partition, kind, filename)
                    # The file's data lines as extract counted them (the checks compare the table with
                    # them); a file loaded without a record: the rows loaded.
                    rows = recorded.data_lines or loaded
                    entry = ledger.record(dataset, month, recorded, rows, digest.result(), by=loaded_by)
                    ledger.write_postgres(conn, entry)  # in the swap's commit: both or neither
            except BaseException as exc:
                _drop_halves(conn, partition)  # under the month's lock, committed with this transaction
                swap_failed = exc
            else:
                duplicate_rows = duplicate_rows.result()
        if swap_failed is not None:
            raise swap_failed
        swapped = True
    except psycopg.Error as exc:
        message = _copy_error(exc, month_file) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LoadError(f"{dataset.name} {month}: load rolled back, previous rows untouched: {message}") from exc
    except LoadError as exc:  # the swap's locks were not to be had
        raise LoadError(f"{dataset.name} {month}: load rolled back, previous rows untouched: {exc}") from exc
    except BadFileError as exc:
        raise BadFileError(f"{dataset.name} {month}: load rolled back, previous rows untouched: {exc}") from exc
    finally:
        duplicates.close()  # the spill file has no name: closing it frees its space
        if ids is not None:
            ids.close()
        if other is not None:
            other.close()  # an uncommitted half goes with its session
        if committed and not swapped and swap_failed is None and not conn.closed:
            # The transaction itself failed after the commit (its halves were not dropped in it):
            # best effort, with the month's lock again, never waiting behind another load.
            with contextlib.suppress(psycopg.Error), conn.transaction():
                if _try_lock_month(conn, partition):
                    _drop_halves(conn, partition)
    report = LoadReport(
        taxi=dataset.taxi,
        month=str(month),
        table=dataset.table,
        partition=partition,
        filename=filename,
        rows_loaded=loaded,
        duplicate_rows=duplicate_rows,
        out_of_month_rows=out_of_month,
        null_keys=null_keys,
        replaced_previous=replaced,
        seconds=round(time.monotonic() - started, 3),
    )
    log.info(
        "loaded %d rows into %s (%s); %d exact duplicates, %d outside the month",
        loaded,
        dataset.table,
        partition,
        report.duplicate_rows,
        out_of_month,
    )
    return report
