"""One partitioned job per taxi type (for `dagster job backfill`) and its monthly schedule."""

from __future__ import annotations

from datetime import datetime, timezone

from dagster import (
    AssetSelection,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
)

from taxi_assets.datasets import TaxiDataset
from taxi_assets.defs.assets import group
from taxi_assets.defs.partitions import partitions_for
from taxi_assets.months import TIMEZONE, mirror_months, mirror_range, month_just_ended

# The reference flows run green at 09:00 and yellow at 10:00 on the 1st; fhv follows at 11:00.
SCHEDULE_HOUR = {"green": 9, "yellow": 10, "fhv": 11}


def job_name(dataset: TaxiDataset) -> str:
    return f"{dataset.name}_trips_job"


def build_job(dataset: TaxiDataset):
    """The taxi type's asset job (what `define_asset_job` returns: Dagster exports no public name
    for that type, and nothing here imports from `dagster._core`)."""
    return define_asset_job(
        job_name(dataset),
        selection=AssetSelection.groups(group(dataset)),
        partitions_def=partitions_for(dataset),
        # One process per run, not one per step: the steps' own work is seconds, and starting a
        # process that loads the code location for each of a month's 7 steps cost 30 s per run.
        # Runs still go two at a time (dagster_home/dagster.yaml); the work itself is in Postgres,
        # pyarrow and the cloud, not in this process.
        executor_def=in_process_executor,
        description=f"Materialize one month of the {dataset.name} chain (with its checks).",
        tags={"taxi": dataset.taxi, "source": dataset.source.name},
    )


def build_schedule(job, dataset: TaxiDataset) -> ScheduleDefinition:
    """On the 1st of each month, New York time, the month just ended: the rule the Kestra flows
    follow too (taxi_assets.months.month_just_ended). Dagster's own partitioned schedule would
    request the last partition forever after the published range; this one skips, saying why.
    `job` is the taxi type's job from `build_job`."""

    @schedule(
        name=f"{dataset.taxi}_trips_monthly",
        cron_schedule=f"0 {SCHEDULE_HOUR[dataset.taxi]} 1 * *",
        execution_timezone=TIMEZONE,
        job=job,
        description=f"The {dataset.taxi} month just ended, on the 1st at {SCHEDULE_HOUR[dataset.taxi]}:00 New York time.",
    )
    def monthly(context: ScheduleEvaluationContext):
        tick = context.scheduled_execution_time or datetime.now(timezone.utc)
        month = month_just_ended(tick)
        if month not in mirror_months():
            return SkipReason(f"{dataset.taxi} {month} is not published (months available {mirror_range()})")
        return RunRequest(run_key=str(month), partition_key=str(month))

    return monthly
