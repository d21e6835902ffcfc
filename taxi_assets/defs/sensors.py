"""New and re-published TLC months, noticed by asking the source (HEAD), not by the calendar.

The TLC publishes a month about two months after it ends, on no fixed day, and sometimes
uploads files again. Per feed, a sensor asks CloudFront for the month after the newest one
loaded into both Postgres and BigQuery (with none loaded: the newest published) and requests
its run once it answers 200, one month per tick (older history is a backfill's job). It also
compares the ETag and size of months already loaded with the file their loads recorded in the
stores' ledgers (whoever loaded them: Dagster, Kestra or the CLI), and requests a month again
when the server now has another file. Run keys carry the ETag, so a
file is requested once however often the sensor ticks.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone

from dagster import (
    AssetMaterialization,
    DagsterRunStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from taxi_assets import ledger
from taxi_assets.config import POSTGRES_DSN, Settings
from taxi_assets.datasets import TaxiDataset
from taxi_assets.datasets import dataset as find_dataset
from taxi_assets.defs.assets import bigquery_key, file_origin, postgres_key
from taxi_assets.defs.resources import TaxiBigQueryResource, TaxiPostgresResource, TaxiSourceResource
from taxi_assets.errors import DownloadError
from taxi_assets.months import TIMEZONE, Month, month_just_ended
from taxi_assets.redact import redact_url
from taxi_assets.source import Remote, newest_published, remote_file

MAX_ATTEMPTS = 3  # runs per file of a month before the sensor stops asking
DATASET_TAG, ETAG_TAG, REASON_TAG = "taxi_assets/dataset", "taxi_assets/etag", "taxi_assets/reason"

# Loaded months whose file is compared with the server's per tick: the newest ones every time
# (re-uploads come in batches of recent files), and as many older ones in turn (the cursor).
RECENT_MONTHS = 6
OLDER_MONTHS_PER_TICK = 6


def loaded_files(
    postgres: TaxiPostgresResource, bigquery: Settings | None, dataset: TaxiDataset
) -> dict[Month, tuple[str, int | None]]:
    """From the ledgers, whoever loaded them: the months Postgres and BigQuery both hold from
    the same file, with that file's (ETag, size); a month the two hold from different files
    counts as loaded from neither (its ETag is then "", which any server ETag differs from).
    Without BigQuery to read (`bigquery` None): none."""
    both = ledger.loaded_in_both(postgres.settings(), bigquery, dataset).items()
    return {key[2]: (entry.etag, entry.bytes) if entry else ("", None) for key, entry in both}


def _request(instance, dataset: TaxiDataset, month: Month, remote: Remote, reason: str) -> RunRequest | str:
    """The run for this file of the month, or why none. Dagster starts a run key once, whatever
    became of its run: a run that failed (a passing fault, a bug since fixed) is requested again
    under a new key, up to `MAX_ATTEMPTS` runs per file, one tick (an hour) apart."""
    tags = {DATASET_TAG: dataset.name, ETAG_TAG: remote.etag}
    runs = instance.get_runs(RunsFilter(tags={**tags, "dagster/partition": str(month)}))
    failed = sum(run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED) for run in runs)
    if failed >= MAX_ATTEMPTS:
        return f"{month} failed {failed} times for this file; waiting for someone to look (or a new file)"
    return RunRequest(
        run_key=f"{month}:{remote.etag}:{remote.bytes}" + (f":retry{failed}" if failed else ""),
        partition_key=str(month),
        tags={**tags, REASON_TAG: reason if not failed else f"{reason}, retry {failed}"},
    )


def build_new_month_sensor(job, dataset: TaxiDataset):
    """The feed's sensor; `job` is its job from `jobs.build_job`. Stopped until turned on (it
    asks the real CloudFront host every hour once running)."""

    @sensor(
        name=f"{dataset.name}_published_months",
        job=job,
        minimum_interval_seconds=3600,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Requests a run for each {dataset.taxi} month the TLC publishes, and again for a month"
        " whose file the TLC re-uploaded (new ETag or size).",
    )
    def published_months(
        context: SensorEvaluationContext,
        source: TaxiSourceResource,
        postgres: TaxiPostgresResource,
        bigquery: TaxiBigQueryResource,
    ):
        settings = source.settings()
        newest_possible = month_just_ended(datetime.now(timezone.utc))
        # BigQuery not reachable without starting its emulator: it holds nothing loaded, as far as
        # the sensor knows (the run it requests starts it).
        loaded = loaded_files(postgres, ledger.bigquery_available(bigquery.settings(start=False)), dataset)
        requests: list[RunRequest | str] = []
        notes: list[str] = []
        try:
            if loaded:  # one month per tick: history is a backfill's job, not a sensor's
                month = max(loaded).next()
                remote = remote_file(settings, dataset, month, retries=0) if month <= newest_possible else None
                if remote is not None:
                    requests.append(_request(context.instance, dataset, month, remote, "published"))
                else:
                    notes.append(f"{month} is not published yet")
            elif found := newest_published(settings, dataset, newest_possible.next(), retries=0):
                requests.append(_request(context.instance, dataset, *found, "published"))
            else:
                notes.append(f"nothing published in the months before {TIMEZONE}'s {newest_possible.next()}")
            # Months already loaded: the newest every tick, older ones in turn.
            months = sorted(loaded, reverse=True)
            recent, older = months[:RECENT_MONTHS], months[RECENT_MONTHS:]
            start = Month.parse(context.cursor) if context.cursor else None
            rest = [m for m in older if start is None or m < start] or older
            checked = recent + rest[:OLDER_MONTHS_PER_TICK]
            for month in checked:
                remote = remote_file(settings, dataset, month, retries=0)
                if remote is not None and not remote.is_file(*loaded[month]):
                    requests.append(_request(context.instance, dataset, month, remote, "re-published"))
            # Where the next tick goes on: below the last month checked, or (the walk done) from
            # the top again; a cursor of None or "" would keep the old one.
            walked = len(rest) <= OLDER_MONTHS_PER_TICK
            cursor = str(newest_possible.next() if walked else rest[OLDER_MONTHS_PER_TICK - 1])
        except DownloadError as exc:
            return SkipReason(f"could not ask the source: {exc}")
        notes += [r for r in requests if isinstance(r, str)]
        runs = [r for r in requests if isinstance(r, RunRequest)]
        if not runs:
            return SensorResult(skip_reason=SkipReason("; ".join(notes) or "nothing new"), cursor=cursor)
        return SensorResult(run_requests=runs, cursor=cursor)

    return published_months


def _event(entry: ledger.LoadRecord, store: str) -> AssetMaterialization | None:
    """The materialization a load by Kestra or the CLI stands for in Dagster's catalog."""
    try:
        ds = find_dataset(entry.taxi, entry.source)
    except ValueError:
        return None  # a feed this code location does not define
    key = postgres_key(ds) if store == ledger.POSTGRES else bigquery_key(ds)
    return AssetMaterialization(
        asset_key=key,
        partition=entry.month,
        description=f"loaded by {entry.loaded_by} (reported from the {store} ledger)",
        metadata={
            "dagster/row_count": entry.rows,
            "loaded_by": entry.loaded_by,
            "orchestrator": entry.orchestrator,
            "run_id": entry.run_id,
            "loaded_at": entry.loaded_at.isoformat(),
            "file": entry.file,
            "url": MetadataValue.url(redact_url(entry.url)) if entry.url else "",  # rows from before masking
            **file_origin(entry),  # the keys Dagster's own loads use
            "row_ids_sha256": entry.row_ids_sha256,
            "code_version": entry.code_version,
        },
    )


def _fingerprint(store: str, entry: ledger.LoadRecord) -> str:
    """A month's current record in a store, in a few characters (the cursor holds one per month)."""
    what = f"{store}|{entry.source}|{entry.taxi}|{entry.month}|{entry.loaded_at.isoformat()}|{entry.loaded_by}"
    return hashlib.sha256(what.encode()).hexdigest()[:12]


def build_ledger_sensor():
    """Dagster's catalog shows every load: each month's current record in a ledger that a Dagster
    run did not make (Kestra's, the CLI's) becomes a runless materialization of its partition,
    with who loaded it and from which file. Each tick compares the current records with those it
    reported before (the cursor: a fingerprint per month), so the order loads commit in, a
    record older than the newest seen, or a sensor stopped for a while loses none, and a month
    loaded twice meanwhile shows its newest load only. Running by default where a taxi-data
    Postgres is configured (the stack); on a machine with nothing configured each tick would
    start the embedded one."""

    @sensor(
        name="loads_from_the_ledgers",
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING if os.environ.get(POSTGRES_DSN) else DefaultSensorStatus.STOPPED,
        description="Reports the loads Kestra and the CLI recorded in the stores' ledgers as materializations.",
    )
    def loads_from_the_ledgers(
        context: SensorEvaluationContext, postgres: TaxiPostgresResource, bigquery: TaxiBigQueryResource
    ):
        reported = set(json.loads(context.cursor)) if context.cursor else set()
        with postgres.connect() as conn:
            current = {ledger.POSTGRES: ledger.holdings(postgres.settings(), ledger.POSTGRES, conn=conn)}
        notes = []
        if (bq := ledger.bigquery_available(bigquery.settings(start=False))) is None:
            notes.append("BigQuery is not configured and its emulator is not running: its ledger is not read")
        else:
            current[ledger.BIGQUERY] = ledger.holdings(bq, ledger.BIGQUERY)
        events, seen = [], set()
        for store, held in current.items():
            for entry in held.values():
                seen.add(mark := _fingerprint(store, entry))
                if mark not in reported and entry.orchestrator != ledger.DAGSTER and (event := _event(entry, store)):
                    events.append(event)
        if ledger.BIGQUERY not in current:  # not read this tick: what was reported of it stays reported
            seen |= reported
        cursor = json.dumps(sorted(seen))
        if not events:
            return SensorResult(skip_reason=SkipReason("; ".join(["no new loads", *notes])), cursor=cursor)
        return SensorResult(asset_events=events, cursor=cursor)

    return loads_from_the_ledgers
