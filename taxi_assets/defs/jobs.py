"""One partitioned job per taxi type (for `dagster job backfill`) and its monthly schedule."""

from __future__ import annotations

from dagster import AssetSelection, ScheduleDefinition, build_schedule_from_partitioned_job, define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from taxi_assets.datasets import TaxiDataset
from taxi_assets.defs.assets import group
from taxi_assets.defs.partitions import monthly_partitions

# The reference flows run green at 09:00 and yellow at 10:00 on the 1st; fhv follows at 11:00.
SCHEDULE_HOUR = {"green": 9, "yellow": 10, "fhv": 11}


def job_name(dataset: TaxiDataset) -> str:
    return f"{dataset.taxi}_trips_job"


def build_job(dataset: TaxiDataset) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        job_name(dataset),
        selection=AssetSelection.groups(group(dataset)),
        partitions_def=monthly_partitions,
        description=f"Materialize one month of the {dataset.taxi} chain (with its checks).",
        tags={"taxi": dataset.taxi},
    )


def build_schedule(job: UnresolvedAssetJobDefinition, dataset: TaxiDataset) -> ScheduleDefinition:
    """A monthly schedule that requests the month just ended (a plain ScheduleDefinition would
    launch runs without a partition key, which fail). It ticks in the partitions' timezone."""
    return build_schedule_from_partitioned_job(
        job,
        name=f"{dataset.taxi}_trips_monthly",
        day_of_month=1,
        hour_of_day=SCHEDULE_HOUR[dataset.taxi],
    )
