"""The one rule for which month a schedule tick (or a run by hand) loads."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from taxi_assets.months import Month, month_just_ended, parse_instant

NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("instant", "month"),
    [
        ("2019-02-01T09:00-05:00[America/New_York]", "2019-01"),  # Kestra's trigger.date
        ("2020-01-01T11:00-05:00[America/New_York]", "2019-12"),  # the year's turn
        ("2019-04-01T09:00-04:00[America/New_York]", "2019-03"),  # daylight saving time
        ("2021-08-01T02:00:00.123Z", "2021-06"),  # 31 July, 22:00 in New York: July is not over
        ("2021-08-01T04:00:00Z", "2021-07"),  # 1 August, 00:00 in New York
        ("2021-08-01T02:00:00", "2021-06"),  # naive: UTC
    ],
)
def test_the_month_just_ended_in_new_york(instant, month):
    assert month_just_ended(parse_instant(instant)) == Month.parse(month)


def test_a_late_new_york_evening_is_still_that_day():
    """A run by hand on a month's last evening in New York does not take the next month, as
    formatting the instant in UTC would."""
    evening = datetime(2021, 7, 31, 22, 30, tzinfo=NY)
    assert month_just_ended(evening) == Month(2021, 6)
    assert evening.astimezone(ZoneInfo("UTC")).month == 8


def test_text_that_is_no_date_is_refused():
    with pytest.raises(ValueError, match="not an ISO date-time"):
        parse_instant("next tuesday")
