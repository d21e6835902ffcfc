"""Generated month files in the published format, for tests, benchmarks and offline demos.

The real files cannot always be reached (CI, air-gapped laptops). These have the real
header and the real quirks: TLC decimals (`.80`, `2.10`), empty fields, CRLF or LF,
rows outside the month, exact duplicate rows, negative (refund) amounts, and, for fhv,
the 2019 header casing and integers printed as `1.0`.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from taxi_assets.datasets import TaxiDataset
from taxi_assets.months import Month

# fhv files of 2019 spell three columns differently; the loader must not care.
_FHV_2019_HEADER = {
    "dropoff_datetime": "dropOff_datetime",
    "PULocationID": "PUlocationID",
    "DOLocationID": "DOlocationID",
}


@dataclass(frozen=True)
class SampleSummary:
    """What a generated file holds, so tests can compare a load's report with the truth."""

    rows: int
    duplicate_rows: int  # rows that repeat an earlier row exactly
    out_of_month_rows: int
    null_key_rows: int  # rows with at least one empty key column
    negative_fare_rows: int


def _decimal(cents: int) -> str:
    """TLC style: `.80`, `-.50`, `2.10`, `12.00`."""
    text = f"{abs(cents) / 100:.2f}"
    if text.startswith("0."):
        text = text[1:]
    return f"-{text}" if cents < 0 else text


def header(dataset: TaxiDataset, month: Month) -> list[str]:
    names = list(dataset.column_names)
    if dataset.taxi == "fhv" and month.year == 2019:
        names = [_FHV_2019_HEADER.get(n, n) for n in names]
    return names


def _rows(dataset: TaxiDataset, month: Month, rows: int, seed: int) -> Iterator[tuple[list[str], dict]]:
    """Yield (fields, flags) for `rows` synthetic trips."""
    rnd = random.Random(seed)
    seconds_in_month = int((month.end - month.start).total_seconds())
    names = [c.name for c in dataset.columns]
    kinds = [c.pg_type for c in dataset.columns]
    pickup_i, dropoff_i = dataset.pickup_index, dataset.column_index(dataset.dropoff_column)
    key_i = [dataset.column_index(k) for k in dataset.key_columns]
    int_floats = {dataset.column_index(c) for c in dataset.integer_float_columns}
    previous: tuple[list[str], dict] | None = None
    for n in range(rows):
        if previous is not None and n % 997 == 500:  # an exact duplicate of the previous row
            yield list(previous[0]), {**previous[1], "duplicate": True}
            continue
        flags: dict = {}
        if n % 1009 == 3:  # a late report from the previous month (cf. yellow 2019-01)
            pickup = month.start - timedelta(seconds=rnd.randrange(1, 40 * 86400))
            flags["out_of_month"] = True
        else:
            pickup = month.start + timedelta(seconds=rnd.randrange(seconds_in_month))
        dropoff = pickup + timedelta(seconds=rnd.randrange(60, 3600))
        refund = n % 211 == 7
        fields = []
        for i, (name, kind) in enumerate(zip(names, kinds, strict=True)):
            lname = name.lower()
            if i == pickup_i:
                value = pickup.strftime("%Y-%m-%d %H:%M:%S")
            elif i == dropoff_i:
                value = dropoff.strftime("%Y-%m-%d %H:%M:%S")
            elif lname.endswith("locationid"):
                value = str(rnd.randint(1, 265))
            elif lname == "vendorid":
                value = "" if n % 53 == 1 else str(rnd.randint(1, 2))
            elif lname == "store_and_fwd_flag":
                value = "Y" if n % 101 == 0 else "N"
            elif lname in ("dispatching_base_num", "affiliated_base_number"):
                value = f"B{rnd.randint(1, 3200):05d}"
            elif lname == "ehail_fee":
                value = ""  # always empty in the published files
            elif lname == "congestion_surcharge":
                value = "" if rnd.random() < 0.63 else _decimal(250)
            elif kind == "integer" or lname == "ratecodeid":
                value = (
                    ""
                    if lname == "sr_flag" and n % 7
                    else str(rnd.randint(0, 6) if "passenger" in lname else rnd.randint(1, 4))
                )
            else:  # an amount
                cents = (
                    rnd.randint(1, 6000)
                    if lname in ("fare_amount", "trip_distance", "total_amount")
                    else rnd.choice((0, 30, 50, 80, 250))
                )
                value = _decimal(-cents if refund and lname != "trip_distance" else cents)
            if i in int_floats and value and n % 3 == 0:
                value += ".0"  # the fhv re-issue prints some integers as floats
            fields.append(value)
        if n % 499 == 11:  # a trip without its drop-off zone
            fields[key_i[-1]] = ""
            flags["null_key"] = True
        flags["negative_fare"] = refund
        previous = fields, flags
        yield fields, flags


def write_month(
    path: Path,
    dataset: TaxiDataset,
    month: Month,
    rows: int,
    *,
    crlf: bool = True,
    seed: int = 0,
    compresslevel: int = 6,
) -> SampleSummary:
    """Write a gzipped month file like the published one and say what it holds."""
    eol = "\r\n" if crlf else "\n"
    counts = dict(duplicate=0, out_of_month=0, null_key=0, negative_fare=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=compresslevel) as out:
        out.write((",".join(header(dataset, month)) + eol).encode())
        batch: list[str] = []
        for fields, flags in _rows(dataset, month, rows, seed):
            for flag in counts:
                counts[flag] += bool(flags.get(flag))
            batch.append(",".join(fields))
            if len(batch) == 50_000:
                out.write((eol.join(batch) + eol).encode())
                batch.clear()
        out.write((eol.join(batch) + eol).encode() if batch else b"")
    return SampleSummary(
        rows=rows,
        duplicate_rows=counts["duplicate"],
        out_of_month_rows=counts["out_of_month"],
        null_key_rows=counts["null_key"],
        negative_fare_rows=counts["negative_fare"],
    )
