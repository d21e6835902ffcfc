from dagster import MonthlyPartitionsDefinition

from taxi_assets.months import FIRST_MONTH, LAST_MONTH, TIMEZONE

# Keys `2019-01` ... `2021-07` (end exclusive): the months every taxi type is published for.
monthly_partitions = MonthlyPartitionsDefinition(
    start_date=str(FIRST_MONTH),
    end_date=str(LAST_MONTH.next()),
    fmt="%Y-%m",
    timezone=TIMEZONE,  # the data's own clock; schedules tick in it too
)
