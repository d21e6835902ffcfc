"""load-bigquery: replace one month of `{dataset}.{taxi}_tripdata` from the Parquet in GCS.

The table is partitioned by `month` (the file's month, not the pickup date: files hold rows
from other months) and clustered on pickup time and zones. A load job writes the month's
partition through its decorator (`table$YYYYMM`) with WRITE_TRUNCATE: BigQuery swaps that one
partition atomically, so a re-run never duplicates, a failed load leaves the previous rows,
no scratch table is made and the work is proportional to the month. A column-partitioned
table takes only rows whose `month` falls in the decorator's partition: a Parquet of another
month fails the job and the partition keeps its rows.

Errors passed on from BigQuery are one line, without local paths (`api_error_text`).

Every request and job is awaited with bounds of our own (`_wait`): a BigQuery that does not
answer fails the step within ANSWER_DEADLINE, a job within TAXI_BIGQUERY_TIMEOUT, with a line
while waiting, and Ctrl-C or SIGTERM end the wait at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import bigquery

from taxi_assets import ledger
from taxi_assets.config import BIGQUERY_TIMEOUT, Settings
from taxi_assets.datasets import FILENAME_COLUMN, ROW_ID_COLUMN, TaxiDataset
from taxi_assets.errors import ConfigError, LoadError
from taxi_assets.files import FileInfo
from taxi_assets.gcp import bigquery_client, storage_client
from taxi_assets.months import Month
from taxi_assets.parquet import MONTH_COLUMN
from taxi_assets.steps.gcs import converted_from
from taxi_assets.stores import object_name, table_id

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


# --- Bounded waits ----------------------------------------------------------------------------

# A BigQuery that refuses or drops connections, or answers no request, for this long is down,
# not busy: the step fails instead of retrying for the client's default of 10 minutes (twice,
# when a job's result is awaited). Readers of the ledger give up sooner (ledger.READ_DEADLINE).
ANSWER_DEADLINE = 120.0
HEARTBEAT = 15.0  # seconds between lines while waiting


class _WaitError(Exception):
    """A wait for BigQuery that ran out; `swap`: while the month was being replaced."""

    def __init__(self, text: str, swap: bool):
        super().__init__(text)
        self.swap = swap


def _answer_deadline(settings: Settings) -> float:
    return min(ANSWER_DEADLINE, settings.bigquery_timeout)  # a small job bound (tests) shortens it too


def _backstop(settings: Settings) -> float:
    """The client's own timeout for a job's requests: past the job bound, so `_wait` gives up
    first with its clearer message; it only ends the abandoned thread."""
    return settings.bigquery_timeout + _answer_deadline(settings)


def _where(settings: Settings) -> str:
    return f"BigQuery at {settings.bigquery_emulator}" if settings.bigquery_emulator else "BigQuery"


def _cause(exc: BaseException | None) -> str:
    """Why a request failed, in a few words rather than urllib3's paragraph."""
    text = str(exc).lower()
    for words, cause in (("refused", "connection refused"), ("timed out", "no reply"), ("reset", "connection reset")):
        if words in text:
            return cause
    if "closed" in text or "aborted" in text:
        return "connection closed"
    return api_error_text(exc) if isinstance(exc, gexc.GoogleAPIError) else type(exc).__name__


def _retry(settings: Settings) -> Retry:
    """The client's own retry (connection errors, 5xx, rate limits) for at most the answer
    deadline, saying so when the endpoint fails (then at most every HEARTBEAT s)."""
    deadline, said = _answer_deadline(settings), [-HEARTBEAT]

    def failed(exc: Exception) -> None:
        if time.monotonic() - said[0] >= HEARTBEAT:
            said[0] = time.monotonic()
            log.warning("%s does not answer (%s); trying again for up to %g s", _where(settings), _cause(exc), deadline)

    return Retry(predicate=bigquery.DEFAULT_RETRY._predicate, timeout=deadline, on_error=failed)


def _wait(settings: Settings, what: str, call, *, job: bool = False, swap: bool = False, bound: float | None = None):
    """`call()`'s result. A job (`job`) may run for TAXI_BIGQUERY_TIMEOUT, any other request must
    be answered within the answer deadline (or `bound`); a line every HEARTBEAT s says what is
    awaited. The request runs in a daemon thread and this one only waits on an Event, so Ctrl-C
    or SIGTERM (the CLI's KeyboardInterrupt) end the step at once, even where the client blocks
    in a request (bqemulator answers a load's jobs.insert only when the load is done)."""
    if bound is None:
        bound = settings.bigquery_timeout if job else _answer_deadline(settings)
    done, outcome = threading.Event(), {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"bigquery {what}", daemon=True).start()
    started = time.monotonic()
    while not done.wait(min(HEARTBEAT, max(0.0, started + bound - time.monotonic()))):
        elapsed = time.monotonic() - started
        if elapsed >= bound and job:
            raise _WaitError(f"the BigQuery {what} did not finish within {bound:g} s ({BIGQUERY_TIMEOUT})", swap)
        if elapsed >= bound:
            raise _WaitError(f"{_where(settings)} did not answer ({what}) within {bound:g} s", swap)
        log.info("waiting for BigQuery: %s (%d s)", what, elapsed)
    error = outcome.get("error")
    if isinstance(error, gexc.RetryError):
        raise _WaitError(
            f"{_where(settings)} did not answer for {_answer_deadline(settings):g} s ({_cause(error.cause)})", swap
        ) from None
    if error is not None:
        raise error
    return outcome["value"]


def _query(client: bigquery.Client, settings: Settings, what: str, sql: str, *, swap: bool = False, **kwargs):
    """Run a query job and wait for its rows, within the bounds of `_wait`."""
    retry = _retry(settings)
    job = _wait(
        settings,
        what,
        lambda: client.query(sql, retry=retry, job_retry=None, timeout=_backstop(settings), **kwargs),
        job=True,
        swap=swap,
    )
    return _await_job(settings, what, job, retry, swap=swap)


def _await_job(settings: Settings, what: str, job, retry: Retry, *, swap: bool = False):
    """A started job's result (a query's rows), within the job bound of `_wait`; `retry`: the one
    the job was started with (its lines while the endpoint fails are spaced as one)."""
    return _wait(settings, what, lambda: job.result(retry=retry, timeout=_backstop(settings)), job=True, swap=swap)


def schema(dataset: TaxiDataset) -> list[bigquery.SchemaField]:
    """Same order as the Parquet columns (see `parquet.arrow_schema`)."""
    return [
        bigquery.SchemaField(ROW_ID_COLUMN.sql_name, "STRING", mode="REQUIRED"),
        bigquery.SchemaField(FILENAME_COLUMN.sql_name, "STRING", mode="REQUIRED"),
        bigquery.SchemaField(MONTH_COLUMN, "DATE", mode="REQUIRED"),
        *(bigquery.SchemaField(c.sql_name, c.bq_type) for c in dataset.columns),
    ]


def partitioning() -> bigquery.TimePartitioning:
    """One partition per file month, on the `month` column."""
    return bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.MONTH, field=MONTH_COLUMN)


def ensure_table(client: bigquery.Client, settings: Settings, dataset: TaxiDataset) -> None:
    table = bigquery.Table(table_id(settings, dataset), schema=schema(dataset))
    table.time_partitioning = partitioning()
    table.clustering_fields = [dataset.pickup_column.lower(), "pulocationid", "dolocationid"]
    retry, timeout = _retry(settings), _answer_deadline(settings)
    _wait(
        settings, "creating the table", lambda: client.create_table(table, exists_ok=True, retry=retry, timeout=timeout)
    )


def month_rows(client: bigquery.Client, settings: Settings, dataset: TaxiDataset, month: Month) -> int:
    rows = _query(
        client,
        settings,
        "counting the month's rows",
        f"SELECT COUNT(*) AS n FROM `{table_id(settings, dataset)}` WHERE {MONTH_COLUMN} = @m",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("m", "DATE", date(month.year, month.month, 1))]
        ),
    )
    return next(iter(rows)).n


def partition_load(settings: Settings, dataset: TaxiDataset, month: Month) -> tuple[str, bigquery.LoadJobConfig]:
    """The load job BigQuery runs for a month: its destination and configuration.

    The destination is the month's partition (`table$YYYYMM`) and WRITE_TRUNCATE replaces that
    partition only, in one atomic job. The table is partitioned on the `month` column, so
    BigQuery rejects the whole job if any row's `month` lies outside that partition: a Parquet
    of another month cannot replace this one. Schema and partitioning are stated in full (they
    must equal the table's, which `ensure_table` creates from the same functions).
    """
    destination = f"{table_id(settings, dataset)}${month.year:04d}{month.month:02d}"
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,  # this partition only
        schema=schema(dataset),
        time_partitioning=partitioning(),
    )
    return destination, config


_CHECK = "taxi-assets scratch check"
_CHECK_RESULT = re.compile(_CHECK + r": rows=(\d+) of_file=(\d+) files=([^,;]*)")


def _scratch_check_sql(scratch: str, filename: str, first_day: str, expected_rows: int | None) -> str:
    """A statement that fails (BigQuery's ERROR()) unless the scratch table is exactly this file:
    every row carries its month and file name, and there are `expected_rows` of them."""
    of_file = f"COUNTIF({MONTH_COLUMN} = DATE '{first_day}' AND {FILENAME_COLUMN.sql_name} = '{filename}')"
    count_ok = "COUNT(*) > 0" if expected_rows is None else f"COUNT(*) = {int(expected_rows)}"
    others = (
        f"STRING_AGG(DISTINCT IF({FILENAME_COLUMN.sql_name} = '{filename}', NULL, {FILENAME_COLUMN.sql_name}), ' ')"
    )
    return (
        f"SELECT IF({count_ok} AND {of_file} = COUNT(*), 0, ERROR(CONCAT('{_CHECK}: rows=', CAST(COUNT(*) AS STRING),"
        f" ' of_file=', CAST({of_file} AS STRING), ' files=', IFNULL({others}, '')))) FROM `{scratch}`"
    )


def _scratch_mismatch(
    exc: gexc.GoogleAPIError, dataset: TaxiDataset, month: Month, uri: str, expected_rows: int | None
) -> LoadError | None:
    """The clear error for a failed scratch check, or None when `exc` is another failure."""
    found = _CHECK_RESULT.search(api_error_text(exc))
    if found is None:
        return None
    rows, of_file, files = int(found[1]), int(found[2]), found[3].split()
    where = f"{dataset.name} {month}: {uri}"
    again = f"previous rows kept; run upload-gcs for {dataset.name} {month} again"
    if of_file != rows:
        other = ", ".join(files) if files else "another month"
        return LoadError(
            f"{where} holds rows of {other} ({rows - of_file} of its {rows} rows), not of {dataset.file_name(month)};"
            f" {again}"
        )
    if expected_rows is None:
        return LoadError(f"{where} holds no rows; {again}")
    return LoadError(f"{where} holds {rows} rows but the file has {expected_rows} data lines; {again}")


# Who made a scratch table, and by when its load will have ended one way or the other: labels of
# the table, so that a later load of the month tells a dead load's leftovers from a live one's.
_HOST, _PID, _UNTIL = "taxi_assets_host", "taxi_assets_pid", "taxi_assets_until"


def _this_host() -> str:
    return re.sub(r"[^a-z0-9_-]", "-", socket.gethostname().lower())[:63]  # a label value's alphabet


def _scratch_lifetime(settings: Settings) -> float:
    """The longest a load keeps its scratch table: its load job and its swap, each within the job
    bound, and its few other requests, each within the answer deadline."""
    return 2 * settings.bigquery_timeout + 8 * _answer_deadline(settings)


def _running_since(pid: int, created: datetime) -> bool:
    """Whether process `pid` runs and started before `created` (not a later one given its pid)."""
    import psutil

    try:
        return psutil.Process(pid).create_time() <= created.timestamp() + 1
    except (psutil.Error, ValueError):
        return False


def _drop_dead_scratch(client: bigquery.Client, settings: Settings, dataset: TaxiDataset, month: Month) -> None:
    """Drop the scratch tables of this month's loads that died before dropping their own (a
    SIGKILL, the emulator's death): made by a process of this host that is gone, or past the
    time their load would have given up by (their `until` label; without labels, made by an
    earlier version: their creation plus our own lifetime). Loads of a month are not serialized,
    so a live load's scratch table, here or on another host, is left to it."""
    retry, timeout = _retry(settings), _answer_deadline(settings)
    prefix = f"{dataset.table}__load_{month.year:04d}{month.month:02d}_"
    listed = _wait(
        settings,
        "listing tables",
        lambda: list(
            client.list_tables(f"{settings.gcp_project}.{settings.gcp_dataset}", retry=retry, timeout=timeout)
        ),
    )
    for item in (t for t in listed if t.table_id.startswith(prefix)):
        table = _wait(
            settings, "reading a table", lambda r=item.reference: client.get_table(r, retry=retry, timeout=timeout)
        )
        labels, created = table.labels or {}, table.created or datetime.now(timezone.utc)
        try:
            until = float(labels.get(_UNTIL) or created.timestamp() + _scratch_lifetime(settings))
            pid = int(labels.get(_PID) or 0)
        except ValueError:  # labels someone else wrote: judged by age alone
            until, pid = created.timestamp() + _scratch_lifetime(settings), 0
        owner_gone = labels.get(_HOST) == _this_host() and not _running_since(pid, created)
        if owner_gone or time.time() > until:
            log.info("dropping %s, left by a load of %s that did not finish", table.table_id, month)
            _wait(
                settings,
                "dropping a table",
                lambda r=item.reference: client.delete_table(r, not_found_ok=True, retry=retry, timeout=timeout),
            )


def _emulator_replace_month(
    client: bigquery.Client,
    settings: Settings,
    dataset: TaxiDataset,
    month: Month,
    uri: str,
    expected_rows: int | None,
    entry: ledger.LoadRecord,
) -> None:
    """Emulator only: bqemulator rejects partition decorators (`Invalid table id`).

    So: load into a scratch table, then in one transaction check the scratch rows (all of this
    file's month and name, as many as `expected_rows`) and only then swap the month and replace
    its ledger record (`entry`), then drop the scratch table. Where BigQuery refuses rows outside the decorator's partition, the check
    refuses them here: a wrong or stale object fails with LoadError and the month keeps its
    rows. BigQuery itself always takes the decorator path. A load that dies before dropping its
    scratch table (SIGKILL, the emulator's death) leaves it to the month's next load.
    """
    retry, timeout = _retry(settings), _answer_deadline(settings)
    target = table_id(settings, dataset)
    _drop_dead_scratch(client, settings, dataset, month)
    scratch = f"{target}__load_{month.year:04d}{month.month:02d}_{uuid.uuid4().hex[:8]}"  # one per run
    first_day = f"{month}-01"
    table = bigquery.Table(scratch, schema=schema(dataset))
    table.labels = {
        _HOST: _this_host(),
        _PID: str(os.getpid()),
        _UNTIL: str(int(time.time() + _scratch_lifetime(settings))),
    }
    _wait(
        settings,
        "creating the scratch table",
        lambda: client.create_table(table, exists_ok=True, retry=retry, timeout=timeout),
    )
    try:
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET, write_disposition="WRITE_TRUNCATE")
        job = _wait(
            settings,
            "load job",
            lambda: client.load_table_from_uri(
                uri, scratch, job_config=config, retry=retry, timeout=_backstop(settings)
            ),
            job=True,
        )
        _await_job(settings, "load job", job, retry)
        check = _scratch_check_sql(scratch, dataset.file_name(month), first_day, expected_rows)
        try:
            _query(
                client,
                settings,
                "swap of the month",
                f"BEGIN TRANSACTION; {check};"
                f" DELETE FROM `{target}` WHERE {MONTH_COLUMN} = DATE '{first_day}';"
                f" INSERT INTO `{target}` SELECT * FROM `{scratch}`;"
                f" {ledger.bigquery_retract_sql(settings, dataset, month)};"
                f" {ledger.bigquery_insert_sql(settings, entry)}; COMMIT TRANSACTION;",
                swap=True,
            )
        except gexc.GoogleAPIError as exc:
            mismatch = _scratch_mismatch(exc, dataset, month, uri, expected_rows)
            if mismatch is None:
                raise
            raise mismatch from None
    except BaseException:
        # Failing or interrupted: one short try, not another wait on a BigQuery that may be
        # gone; whatever stays is dropped by the month's next load.
        with contextlib.suppress(Exception):
            _wait(
                settings,
                "dropping the scratch table",
                lambda: client.delete_table(scratch, not_found_ok=True, retry=None, timeout=5),
                bound=5,
            )
        raise
    _wait(
        settings,
        "dropping the scratch table",
        lambda: client.delete_table(scratch, not_found_ok=True, retry=retry, timeout=timeout),
    )


# An absolute local path (a file under /tmp, the state folder, the emulator's storage root), or
# one under ~: not after a word character, ':' or '/', so URLs and gs:// URIs are left alone.
_LOCAL_PATH = re.compile(r"(?<![\w:/.~-])~?/[^\s'\"`]+")


def api_error_text(exc: Exception, uri: str | None = None) -> str:
    """What a Google API error says, as one line without local filesystem paths.

    A failed job's own message (not the client's "Location / Job ID" trailer, nor the
    emulator's SQL excerpt on the following lines); a local path of the object at `uri` becomes
    `uri`, any other local path its file name.
    """
    errors = getattr(exc, "errors", None) or [{}]
    first = errors[0] if isinstance(errors[0], dict) else {}
    text = str(first.get("message") or getattr(exc, "message", None) or exc)
    text = next((line.strip() for line in text.splitlines() if line.strip()), "")
    suffix = uri.removeprefix("gs://") if uri and uri.startswith("gs://") else None

    def local(found: re.Match) -> str:
        path = found[0].rstrip(".,;:)]}")
        tail = found[0][len(path) :]
        if suffix and path.endswith("/" + suffix):
            return uri + tail
        return (path.rstrip("/").rsplit("/", 1)[-1] or "/") + tail

    return _LOCAL_PATH.sub(local, text) or type(exc).__name__


def _replace_month_recorded(
    client: bigquery.Client,
    settings: Settings,
    dataset: TaxiDataset,
    month: Month,
    uri: str,
    entry: ledger.LoadRecord,
) -> None:
    """BigQuery: the month's ledger record is retracted, the partition replaced (one atomic load
    job) and its rows counted, and only then the new record written, so the ledger never claims
    rows the partition does not hold. A load job that failed on the server left the old rows:
    their record is put back. One whose outcome is unknown (interrupted while waiting) leaves
    the month unrecorded until its next load."""
    target, config = partition_load(settings, dataset, month)
    key = (dataset.source.name, dataset.taxi, month)
    retry = _retry(settings)
    records = _wait(settings, "reading the ledger", lambda: ledger.bigquery_records(client, settings, dataset))
    previous = ledger.current(records).get(key)
    _query(client, settings, "retracting the ledger record", ledger.bigquery_retract_sql(settings, dataset, month))
    job = _wait(
        settings,
        "load job",
        lambda: client.load_table_from_uri(
            uri, target, job_config=config, retry=retry, timeout=_answer_deadline(settings)
        ),
        job=True,
        swap=True,
    )
    try:
        _await_job(settings, "load job", job, retry, swap=True)
    except BaseException:
        failed = False
        with contextlib.suppress(Exception):  # one short look: BigQuery may be gone, or we interrupted
            _wait(settings, "reading the load job", lambda: job.reload(retry=None, timeout=5), bound=5)
            failed = job.state == "DONE" and job.error_result is not None
        if previous is not None and failed:
            try:
                _query(
                    client, settings, "putting back the ledger record", ledger.bigquery_insert_sql(settings, previous)
                )
            except Exception:  # the load's own error is the one to report
                log.warning("%s %s: could not put back the month's ledger record", dataset.name, month)
        elif previous is not None:
            log.warning("%s %s: the load job's outcome is unknown; the month is unrecorded", dataset.name, month)
        raise
    rows = month_rows(client, settings, dataset, month)
    if rows != entry.rows:
        raise LoadError(
            f"{dataset.name} {month}: BigQuery now holds {rows} rows for the month but the file has {entry.rows}"
            " (left unrecorded in the ledger); load it again"
        )
    _query(client, settings, "recording the load", ledger.bigquery_insert_sql(settings, entry))


def load_bigquery(
    settings: Settings,
    dataset: TaxiDataset,
    month: Month,
    info: FileInfo,
    *,
    loaded_by: str | None = None,
) -> BigQueryReport:
    """Replace `month` in the BigQuery table with the Parquet object upload-gcs put in the bucket
    from the download `info` (extract's record), and record the load in the dataset's ledger.
    An object converted from another download of the month (its metadata says which) is
    refused: the month's file was re-published since the upload."""
    started = time.monotonic()
    expected_rows, download_sha256 = info.data_lines, info.sha256
    client = bigquery_client(settings)
    uri = f"gs://{settings.gcp_bucket}/{object_name(dataset, month)}"
    target, _ = partition_load(settings, dataset, month)
    try:
        blob = storage_client(settings).bucket(settings.gcp_bucket).get_blob(object_name(dataset, month))
        if blob is None:
            raise ConfigError(f"{uri} does not exist; run upload-gcs for {dataset.name} {month} first")
        source_sha256 = converted_from(blob)
        if download_sha256 and source_sha256 and source_sha256 != download_sha256:
            raise LoadError(
                f"{dataset.name} {month}: {uri} was converted from another download of the month (sha256"
                f" {source_sha256[:12]}…, the local one is {download_sha256[:12]}…); run upload-gcs again."
                " Previous rows kept"
            )
        ensure_table(client, settings, dataset)
        _wait(settings, "creating the ledger table", lambda: ledger.ensure_bigquery(client, settings))
        digest = ledger.row_ids_digest(Path(info.path), dataset, expected_rows)
        entry = ledger.record(dataset, month, info, expected_rows, digest, by=loaded_by)
        if settings.bigquery_emulator:
            _emulator_replace_month(client, settings, dataset, month, uri, expected_rows, entry)
        else:
            _replace_month_recorded(client, settings, dataset, month, uri, entry)
        rows = month_rows(client, settings, dataset, month)
    except _WaitError as exc:
        kept = "whether the month was replaced is unknown; load it again" if exc.swap else "previous rows kept"
        raise LoadError(f"{dataset.name} {month}: {exc}; {kept}") from None
    except gexc.NotFound as exc:
        raise ConfigError(
            f"{uri} or dataset {settings.gcp_dataset} not found ({api_error_text(exc, uri)});"
            " run gcp-setup and upload-gcs first"
        ) from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise ConfigError(f"not allowed to load {target}: {api_error_text(exc, uri)}") from None
    except gexc.GoogleAPIError as exc:
        raise LoadError(
            f"{dataset.name} {month}: BigQuery load failed, previous rows kept: {api_error_text(exc, uri)}"
        ) from None
    if expected_rows is not None and rows != expected_rows:
        raise LoadError(
            f"{dataset.name} {month}: BigQuery now holds {rows} rows for the month but the file has {expected_rows};"
            " load it again"
        )
    report = BigQueryReport(table_id(settings, dataset), str(month), uri, rows, round(time.monotonic() - started, 3))
    log.info("loaded %d rows into %s for %s", rows, report.table, month)
    return report
