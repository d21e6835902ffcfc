"""Months: the partition unit. Keys are `YYYY-MM`, the published range is fixed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

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


# Every taxi type is published for exactly these months (2021-08 and later 404).
FIRST_MONTH = Month(2019, 1)
LAST_MONTH = Month(2021, 7)


def published_months() -> list[Month]:
    months, m = [], FIRST_MONTH
    while m <= LAST_MONTH:
        months.append(m)
        m = m.next()
    return months


def published_range() -> str:
    return f"{FIRST_MONTH}..{LAST_MONTH}"
