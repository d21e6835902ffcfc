"""New and re-published TLC months, noticed by asking the source (HEAD), not by the calendar.

The TLC publishes a month about two months after it ends, on no fixed day, and sometimes
uploads files again. Per feed, a sensor asks CloudFront for the month after the newest one
loaded into both Postgres and BigQuery (with none loaded: the newest published) and requests
its run once it answers 200, one month per tick (older history is a backfill's job). It also
compares the ETag and size of months already loaded with the file their loads recorded, and
requests a month again when the server now has another file. Run keys carry the ETag, so a
file is requested once however often the sensor ticks.
"""

from __future__ import annotations

from datetime import datetime, timezone

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from taxi_assets.datasets import TaxiDataset
from taxi_assets.defs.assets import FILE_ETAG, FILE_SIZE, bigquery_key, postgres_key
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.errors import DownloadError
from taxi_assets.months import TIMEZONE, Month, month_just_ended
from taxi_assets.steps.extract import Remote, newest_published, remote_file

MAX_ATTEMPTS = 3  # runs per file of a month before the sensor stops asking
DATASET_TAG, ETAG_TAG, REASON_TAG = "taxi_assets/dataset", "taxi_assets/etag", "taxi_assets/reason"

# Loaded months whose file is compared with the server's per tick: the newest ones every time
# (re-uploads come in batches of recent files), and as many older ones in turn (the cursor).
RECENT_MONTHS = 6
OLDER_MONTHS_PER_TICK = 6


def _latest_origins(instance, key: str) -> dict[Month, tuple[str, int | None]]:
    """Each materialized month of an asset: the file (ETag, size) its latest materialization
    says it loaded from."""
    found: dict[Month, tuple[str, int | None]] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(key)), limit=500, cursor=cursor)
        for record in result.records:  # newest first: the first seen per month is its latest
            materialization = record.asset_materialization
            if materialization is None or materialization.partition is None:
                continue
            month = Month.parse(materialization.partition)
            if month not in found:
                meta = materialization.metadata
                etag = meta[FILE_ETAG].value if FILE_ETAG in meta else ""
                size = meta[FILE_SIZE].value if FILE_SIZE in meta else None
                found[month] = (etag, size)
        if not result.has_more:
            return found
        cursor = result.cursor


def loaded_files(instance, dataset: TaxiDataset) -> dict[Month, tuple[str, int | None]]:
    """The months loaded into both Postgres and BigQuery, with the file (ETag, size) they were
    loaded from; a month the two loaded from different files counts as loaded from neither
    (its ETag is then "", which any server ETag differs from)."""
    postgres = _latest_origins(instance, postgres_key(dataset))
    bigquery = _latest_origins(instance, bigquery_key(dataset))
    return {m: origin if bigquery[m] == origin else ("", None) for m, origin in postgres.items() if m in bigquery}


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
    def published_months(context: SensorEvaluationContext, source: TaxiSourceResource):
        settings = source.settings()
        newest_possible = month_just_ended(datetime.now(timezone.utc))
        loaded = loaded_files(context.instance, dataset)
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
