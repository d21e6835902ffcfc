from dagster import MonthlyPartitionsDefinition

from taxi_assets.datasets import TaxiDataset
from taxi_assets.months import MIRROR_FIRST_MONTH, MIRROR_LAST_MONTH, TIMEZONE, Month


def _monthly(first: Month, last: Month | None) -> MonthlyPartitionsDefinition:
    """Keys `YYYY-MM` from `first` to `last` (None: to the month just ended, one more each month)."""
    return MonthlyPartitionsDefinition(
        start_date=str(first),
        end_date=None if last is None else str(last.next()),  # exclusive
        fmt="%Y-%m",
        timezone=TIMEZONE,  # the data's own clock; schedules tick in it too
    )


# Keys `2019-01` ... `2021-07`: the months every mirror taxi type is published for.
monthly_partitions = _monthly(MIRROR_FIRST_MONTH, MIRROR_LAST_MONTH)
_by_range = {(MIRROR_FIRST_MONTH, MIRROR_LAST_MONTH): monthly_partitions}  # one definition per range, reused


def partitions_for(dataset: TaxiDataset) -> MonthlyPartitionsDefinition:
    """The dataset's months: the mirror's fixed range, or (an open range: the TLC's) every month
    from the feed's first to the month just ended in New York, the newest that can exist."""
    key = (dataset.first_month, dataset.last_month)
    if key not in _by_range:
        _by_range[key] = _monthly(*key)
    return _by_range[key]
