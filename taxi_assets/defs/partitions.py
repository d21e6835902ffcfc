from dagster import MonthlyPartitionsDefinition

from taxi_assets.datasets import TaxiDataset
from taxi_assets.months import FIRST_MONTH, LAST_MONTH, TIMEZONE

# Keys `2019-01` ... `2021-07` (end exclusive): the months every mirror taxi type is published for.
monthly_partitions = MonthlyPartitionsDefinition(
    start_date=str(FIRST_MONTH),
    end_date=str(LAST_MONTH.next()),
    fmt="%Y-%m",
    timezone=TIMEZONE,  # the data's own clock; schedules tick in it too
)

_open_ended: dict[str, MonthlyPartitionsDefinition] = {}


def partitions_for(dataset: TaxiDataset) -> MonthlyPartitionsDefinition:
    """The mirror's fixed months, or (an open range: the TLC's) every month from the feed's first
    to the month just ended in New York, one more each month: the newest that can exist."""
    if dataset.last_month == LAST_MONTH and dataset.first_month == FIRST_MONTH:
        return monthly_partitions
    if dataset.name not in _open_ended:
        _open_ended[dataset.name] = MonthlyPartitionsDefinition(
            start_date=str(dataset.first_month),
            end_date=None if dataset.last_month is None else str(dataset.last_month.next()),
            fmt="%Y-%m",
            timezone=TIMEZONE,
        )
    return _open_ended[dataset.name]
