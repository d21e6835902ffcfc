"""Months: the partition unit. Keys are `YYYY-MM`, the published range is fixed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

_KEY = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, key: str) -> Month:
        m = _KEY.match(key.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise ValueError(f"month must look like YYYY-MM (e.g. 2019-01), got {key!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1)

    @property
    def end(self) -> datetime:
        """First instant of the next month (exclusive bound)."""
        return self.next().start

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)


# Every taxi type is published for exactly these months (2021-08 and later 404).
MIRROR_FIRST_MONTH = Month(2019, 1)
MIRROR_LAST_MONTH = Month(2021, 7)


def months_between(first: Month, last: Month) -> list[Month]:
    """`first` to `last`, both included (empty when `last` comes first)."""
    months, month = [], first
    while month <= last:
        months.append(month)
        month = month.next()
    return months


def mirror_months() -> list[Month]:
    return months_between(MIRROR_FIRST_MONTH, MIRROR_LAST_MONTH)


def mirror_range() -> str:
    return f"{MIRROR_FIRST_MONTH}..{MIRROR_LAST_MONTH}"


# The city's clock: both orchestrators' schedules tick in it, and a month is a New York month.
TIMEZONE = "America/New_York"
_ZONE_SUFFIX = re.compile(r"\[[^\]]+\]$")  # Java's ZonedDateTime text ends in "[America/New_York]"


def parse_instant(text: str) -> datetime:
    """ISO text as Kestra renders dates: `2019-03-01T09:00-05:00[America/New_York]` (a trigger
    date) or `2026-11-30T10:00:00.123Z` (an execution's start). A naive time is taken as UTC."""
    iso = _ZONE_SUFFIX.sub("", text.strip())
    iso = re.sub(r"(\.\d{6})\d+", r"\1", iso.replace("Z", "+00:00"))  # Python 3.10's fromisoformat
    try:
        instant = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"not an ISO date-time: {text!r}") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=ZoneInfo("UTC"))


def month_just_ended(instant: datetime) -> Month:
    """The month a schedule tick (or a run by hand) at `instant` loads: the last month that had
    ended in New York by then. A month's file can only exist once the month is over, and this is
    what Dagster's monthly partitioned schedule requests; Kestra's flows ask the CLI the same."""
    local = instant.astimezone(ZoneInfo(TIMEZONE))
    return Month(local.year, local.month).previous()
