"""A local stand-in for the TLC's own trip files on CloudFront, which this machine cannot reach.

The TLC publishes `https://d37ci6vzurychx.cloudfront.net/trip-data/{feed}_tripdata_{YYYY-MM}.parquet`
for the feeds yellow (from 2009-01), green (2014-01), fhv (2015-01) and fhvhv (2019-02), up to
about two months ago. This module fakes both halves, following the TLC's published facts (docs/tlc.md):

- `write_tlc_month` writes a month file whose Parquet schema is exactly that of the real feed in
  that month's era: column names and order (`vendor_name` in 2009, `vendor_id` in 2010,
  `Airport_fee` from 2023-02, `dropOff_datetime` and `PUlocationID` in fhv), physical types and
  their drift (double ids and counts before 2023-02, int32 ids / int64 counts / large_string
  after, whole columns typed Null in some months, string timestamps in 2009, nanosecond
  timestamps in yellow 2024-03..05, pandas' `__index_level_0__` in yellow 2010-02/03), and the
  real quirks: rows outside the month (years 2001 to 2088), negative amounts, an extreme fare,
  and the yellow "null block" with `payment_type` 0. `tlc_era_schema` says what it writes.
- `TlcServer` serves them the way CloudFront over S3 does: `GET`/`HEAD` with `ETag` (the
  quoted md5 of the file), `Last-Modified`, `Content-Length`, `Accept-Ranges` (and ranges), and
  **403** AccessDenied, never 404, for anything not published. A published month's file is
  generated on its first request. Hooks let a test re-publish a month (new bytes, ETag, size and
  Last-Modified), answer the next GETs with errors, or cut the next body short.

    python -m taxi_assets.samples.tlc --dir /tmp/tlc-source --port 8766 --rows 20000
    TAXI_TLC_URL=http://127.0.0.1:8766/trip-data python -m taxi_assets ...

Values are plausible, not real: only the names, types and quirks are meant to be exact.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from taxi_assets.datasets import TLC_DATASETS
from taxi_assets.months import Month

TLC_FEEDS: tuple[str, ...] = ("yellow", "green", "fhv", "fhvhv")


def _first_month(feed: str) -> Month:
    if feed not in TLC_FEEDS:
        raise ValueError(f"unknown TLC feed {feed!r}; choose one of {', '.join(TLC_FEEDS)}")
    return TLC_DATASETS[feed].first_month


def _months(first: str, last: str) -> frozenset[Month]:
    """`first`..`last` inclusive, as a set to test membership with `in`."""
    out, m, end = set(), Month.parse(first), Month.parse(last)
    while m <= end:
        out.add(m)
        m = m.next()
    return frozenset(out)


# ---------------------------------------------------------------------------------------------
# Eras: what the real files hold, month by month (tlc.md, "Schemas" and "Types drift").

_NEW_TYPES = Month(2023, 2)  # int32 ids, int64 counts, large_string; yellow `Airport_fee`
_CBD = Month(2025, 1)  # `cbd_congestion_fee` appended (yellow, green, fhvhv)
_REQUEST_SOURCE = Month(2026, 6)  # `request_source` appended (yellow, green)
# Whole columns typed Null (Parquet INT32, logical type Null) in these months.
_NULL_TYPED: dict[tuple[str, str], frozenset[Month]] = {
    ("yellow", "congestion_surcharge"): _months("2015-01", "2016-12"),
    ("yellow", "airport_fee"): _months("2019-01", "2020-07") | _months("2020-10", "2020-10"),
    ("green", "ehail_fee"): _months("2019-09", "2023-01"),
    ("fhv", "SR_Flag"): _months("2019-03", "2023-01"),
    ("fhvhv", "airport_fee"): _months("2019-02", "2019-06")
    | _months("2020-04", "2020-04")
    | _months("2020-10", "2020-10"),
    ("fhvhv", "wav_match_flag"): _months("2019-02", "2019-03"),
}
# Months whose timestamps are written in nanoseconds ("some tools report ns for part of 2024").
_NS_MONTHS: dict[str, frozenset[Month]] = {"yellow": _months("2024-03", "2024-05")}
_FHV_INT64_IDS = _months("2019-05", "2019-06")  # fhv location ids: double before 2023-02, but these
_YELLOW_INDEX_COLUMN = _months("2010-02", "2010-03")  # pandas' index written as a column

_F64, _I64, _I32, _STR, _LSTR = pa.float64(), pa.int64(), pa.int32(), pa.string(), pa.large_string()

_YELLOW_2009 = (
    ("vendor_name", _STR),
    ("Trip_Pickup_DateTime", _STR),  # "2009-01-04 02:52:00": text, not a timestamp
    ("Trip_Dropoff_DateTime", _STR),
    ("Passenger_Count", _I64),
    ("Trip_Distance", _F64),
    ("Start_Lon", _F64),
    ("Start_Lat", _F64),
    ("Rate_Code", _F64),
    ("store_and_forward", _F64),
    ("End_Lon", _F64),
    ("End_Lat", _F64),
    ("Payment_Type", _STR),
    ("Fare_Amt", _F64),
    ("surcharge", _F64),
    ("mta_tax", _F64),
    ("Tip_Amt", _F64),
    ("Tolls_Amt", _F64),
    ("Total_Amt", _F64),
)
_YELLOW_2010 = (
    ("vendor_id", _STR),
    ("pickup_datetime", "ts"),
    ("dropoff_datetime", "ts"),
    ("passenger_count", _I64),
    ("trip_distance", _F64),
    ("pickup_longitude", _F64),
    ("pickup_latitude", _F64),
    ("rate_code", _I64),
    ("store_and_fwd_flag", _STR),
    ("dropoff_longitude", _F64),
    ("dropoff_latitude", _F64),
    ("payment_type", _STR),
    ("fare_amount", _F64),
    ("surcharge", _F64),
    ("mta_tax", _F64),
    ("tip_amount", _F64),
    ("tolls_amount", _F64),
    ("total_amount", _F64),
)
# Types as (before 2023-02, from 2023-02); "ts" is the month's timestamp type, "str" its string type.
_YELLOW = (
    ("VendorID", _I64, _I32),
    ("tpep_pickup_datetime", "ts", "ts"),
    ("tpep_dropoff_datetime", "ts", "ts"),
    ("passenger_count", _F64, _I64),
    ("trip_distance", _F64, _F64),
    ("RatecodeID", _F64, _I64),
    ("store_and_fwd_flag", "str", "str"),
    ("PULocationID", _I64, _I32),
    ("DOLocationID", _I64, _I32),
    ("payment_type", _I64, _I64),
    ("fare_amount", _F64, _F64),
    ("extra", _F64, _F64),
    ("mta_tax", _F64, _F64),
    ("tip_amount", _F64, _F64),
    ("tolls_amount", _F64, _F64),
    ("improvement_surcharge", _F64, _F64),
    ("total_amount", _F64, _F64),
    ("congestion_surcharge", _F64, _F64),
    ("airport_fee", _F64, _F64),  # `Airport_fee` from 2023-02
)
_GREEN = (
    ("VendorID", _I64, _I32),
    ("lpep_pickup_datetime", "ts", "ts"),
    ("lpep_dropoff_datetime", "ts", "ts"),
    ("store_and_fwd_flag", "str", "str"),
    ("RatecodeID", _F64, _I64),
    ("PULocationID", _I64, _I32),
    ("DOLocationID", _I64, _I32),
    ("passenger_count", _F64, _I64),
    ("trip_distance", _F64, _F64),
    ("fare_amount", _F64, _F64),
    ("extra", _F64, _F64),
    ("mta_tax", _F64, _F64),
    ("tip_amount", _F64, _F64),
    ("tolls_amount", _F64, _F64),
    ("ehail_fee", _F64, _F64),  # always empty
    ("improvement_surcharge", _F64, _F64),
    ("total_amount", _F64, _F64),
    ("payment_type", _F64, _I64),
    ("trip_type", _F64, _I64),
    ("congestion_surcharge", _F64, _F64),
)
_FHV = (
    ("dispatching_base_num", "str", "str"),
    ("pickup_datetime", "ts", "ts"),
    ("dropOff_datetime", "ts", "ts"),
    ("PUlocationID", _F64, _I64),  # int64 also in 2019-05/06 (see `tlc_era_schema`)
    ("DOlocationID", _F64, _I64),
    ("SR_Flag", _I32, _I32),
    ("Affiliated_base_number", "str", "str"),
)
_FHVHV = (
    ("hvfhs_license_num", "str", "str"),
    ("dispatching_base_num", "str", "str"),
    ("originating_base_num", "str", "str"),
    ("request_datetime", "ts", "ts"),
    ("on_scene_datetime", "ts", "ts"),
    ("pickup_datetime", "ts", "ts"),
    ("dropoff_datetime", "ts", "ts"),
    ("PULocationID", _I64, _I32),
    ("DOLocationID", _I64, _I32),
    ("trip_miles", _F64, _F64),
    ("trip_time", _I64, _I64),
    ("base_passenger_fare", _F64, _F64),
    ("tolls", _F64, _F64),
    ("bcf", _F64, _F64),
    ("sales_tax", _F64, _F64),
    ("congestion_surcharge", _F64, _F64),
    ("airport_fee", _F64, _F64),
    ("tips", _F64, _F64),
    ("driver_pay", _F64, _F64),
    ("shared_request_flag", "str", "str"),
    ("shared_match_flag", "str", "str"),
    ("access_a_ride_flag", "str", "str"),
    ("wav_request_flag", "str", "str"),
    ("wav_match_flag", "str", "str"),
)
_MODERN = {"yellow": _YELLOW, "green": _GREEN, "fhv": _FHV, "fhvhv": _FHVHV}


def tlc_era_schema(feed: str, month: Month) -> pa.Schema:
    """The Arrow schema of the real `{feed}_tripdata_{month}.parquet` (and of `write_tlc_month`'s)."""
    if month < _first_month(feed):
        raise ValueError(f"{feed} is published from {_first_month(feed)}, not {month}")
    ts = pa.timestamp("ns") if month in _NS_MONTHS.get(feed, ()) else pa.timestamp("us")
    if feed == "yellow" and month.year == 2009:
        return pa.schema([pa.field(n, t) for n, t in _YELLOW_2009])
    if feed == "yellow" and month.year == 2010:
        fields = [pa.field(n, ts if t == "ts" else t) for n, t in _YELLOW_2010]
        if month in _YELLOW_INDEX_COLUMN:
            fields.append(pa.field("__index_level_0__", _I64))
        return pa.schema(fields)
    new = month >= _NEW_TYPES
    fields = []
    for name, old_type, new_type in _MODERN[feed]:
        kind = new_type if new else old_type
        if kind == "ts":
            kind = ts
        elif kind == "str":
            kind = _LSTR if new else _STR
        if feed == "fhv" and name.endswith("locationID") and month in _FHV_INT64_IDS:
            kind = _I64
        if month in _NULL_TYPED.get((feed, name), ()):
            kind = pa.null()
        if feed == "yellow" and name == "airport_fee" and new:
            name = "Airport_fee"
        fields.append(pa.field(name, kind))
    if month >= _CBD and feed != "fhv":
        fields.append(pa.field("cbd_congestion_fee", _F64))
    if month >= _REQUEST_SOURCE and feed in ("yellow", "green"):
        fields.append(pa.field("request_source", _LSTR))
    return pa.schema(fields)


# ---------------------------------------------------------------------------------------------
# Values: one row group at a time, with numpy's Generator (20 M rows must stay cheap).

_EPOCH = datetime(1970, 1, 1)
_US = 1_000_000
_OUTSIDE_FROM = int((datetime(2001, 1, 1) - _EPOCH).total_seconds())  # tlc.md: years 2001 to 2088
_OUTSIDE_TO = int((datetime(2089, 1, 1) - _EPOCH).total_seconds())


@dataclass
class _Batch:
    """The shared facts of one row group: its size, random source, times and special rows."""

    month: Month
    n: int
    first_row: int  # index in the file of the batch's first row
    rng: np.random.Generator
    pickup: np.ndarray  # seconds since 1970, New York wall clock (naive)
    dropoff: np.ndarray
    refund: np.ndarray  # bool: negative amounts
    extreme: np.ndarray  # bool: an absurd fare (tlc.md: up to 863,372)

    def choice(self, values, p=None) -> np.ndarray:
        if p is not None:
            p = np.asarray(p, dtype=float)
            p = p / p.sum()
        return self.rng.choice(np.asarray(values), self.n, p=p)

    def chance(self, p: float) -> np.ndarray:
        return self.rng.random(self.n) < p

    def text(self, values, p=None, null: float | np.ndarray = 0.0) -> pa.Array:
        """Strings drawn from `values`, null with probability `null` (or where a mask says)."""
        index = self.choice(np.arange(len(values)), p)
        mask = self.chance(null) if isinstance(null, float) else null
        return pa.array(list(values), _STR).take(pa.array(index, mask=mask if mask.any() else None))

    def money(self, values) -> np.ndarray:
        return np.round(np.asarray(values, dtype=float), 2)

    def signed(self, values) -> np.ndarray:
        """Amounts, negated on refund rows."""
        return np.where(self.refund, -values, values)


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array((seconds * _US).view("datetime64[us]"))


def _text_timestamps(seconds: np.ndarray) -> pa.Array:
    """`2009-01-04 02:52:00`, as the 2009 yellow files store their times."""
    return pa.array(seconds.view("datetime64[s]")).cast(_STR)


def _zones(b: _Batch) -> np.ndarray:
    return b.rng.integers(1, 266, b.n)  # 265 zones, 264/265 the unknowns


def _coordinates(b: _Batch, center: float, spread: float) -> np.ndarray:
    values = np.round(center + b.rng.normal(0, spread, b.n), 6)
    return np.where(b.chance(0.02), 0.0, values)  # the GPS zeros of the early years


def _trip(b: _Batch, per_mile: float, per_minute: float, flag: float = 3.0):
    """(distance in miles, base fare) roughly consistent with the trip's duration."""
    minutes = (b.dropoff - b.pickup) / 60
    miles = b.money(minutes / 60 * b.rng.uniform(6, 18, b.n))
    fare = b.money(flag + per_mile * miles + per_minute * minutes)
    fare = np.where(b.extreme, b.money(b.rng.uniform(5_000, 863_372, b.n)), fare)
    return miles, fare


def _yellow_2009_2010(b: _Batch, year2009: bool) -> dict:
    miles, fare = _trip(b, 2.0, 0.2, 2.5)
    tip = b.money(np.where(b.chance(0.3), fare * b.rng.uniform(0.1, 0.25, b.n), 0.0))
    tolls = np.where(b.chance(0.04), 4.15, 0.0)
    surcharge = b.choice([0.0, 0.5, 1.0], [0.6, 0.3, 0.1])
    mta_tax = np.full(b.n, 0.5) if b.month >= Month(2009, 10) else np.full(b.n, np.nan)
    total = b.money(fare + tip + tolls + surcharge + np.nan_to_num(mta_tax))
    mta_mask = np.isnan(mta_tax)
    values = {
        "passenger_count": b.choice(np.arange(7), [1, 70, 14, 4, 3, 5, 3]),
        "trip_distance": miles,
        "pickup_longitude": _coordinates(b, -73.98, 0.04),
        "pickup_latitude": _coordinates(b, 40.75, 0.03),
        "dropoff_longitude": _coordinates(b, -73.97, 0.05),
        "dropoff_latitude": _coordinates(b, 40.75, 0.04),
        "fare_amount": b.signed(fare),
        "surcharge": b.signed(surcharge),
        "mta_tax": (b.signed(np.nan_to_num(mta_tax)), mta_mask if mta_mask.any() else None),
        "tip_amount": tip,
        "tolls_amount": tolls,
        "total_amount": b.signed(total),
    }
    if year2009:
        rare = b.chance(0.999)  # these two are almost always empty in 2009
        return {
            "vendor_name": b.text(["VTS", "CMT", "DDS"], [48, 47, 5]),
            "Trip_Pickup_DateTime": _text_timestamps(b.pickup),
            "Trip_Dropoff_DateTime": _text_timestamps(b.dropoff),
            "Passenger_Count": values["passenger_count"],
            "Trip_Distance": miles,
            "Start_Lon": values["pickup_longitude"],
            "Start_Lat": values["pickup_latitude"],
            "Rate_Code": (b.choice([1.0, 2.0, 5.0], [90, 5, 5]), rare),
            "store_and_forward": (b.choice([0.0, 1.0], [95, 5]), b.chance(0.999)),
            "End_Lon": values["dropoff_longitude"],
            "End_Lat": values["dropoff_latitude"],
            "Payment_Type": b.text(
                ["CASH", "Credit", "CREDIT", "Cash", "No Charge", "Dispute"], [50, 20, 10, 18, 1, 1]
            ),
            "Fare_Amt": values["fare_amount"],
            "surcharge": values["surcharge"],
            "mta_tax": values["mta_tax"],
            "Tip_Amt": tip,
            "Tolls_Amt": tolls,
            "Total_Amt": values["total_amount"],
        }
    return values | {
        "vendor_id": b.text(["VTS", "CMT"], [52, 48]),
        "pickup_datetime": _timestamps(b.pickup),
        "dropoff_datetime": _timestamps(b.dropoff),
        "rate_code": b.choice([1, 2, 3, 4, 5], [95, 2, 1, 1, 1]),
        "store_and_fwd_flag": b.text(["N", "Y"], [90, 10], null=0.99),
        "payment_type": b.text(["CAS", "CRE", "NOC", "DIS"], [60, 38, 1, 1]),
        "__index_level_0__": b.first_row + np.arange(b.n, dtype=np.int64),
    }


def _yellow(b: _Batch) -> dict:
    if b.month.year == 2009:
        return _yellow_2009_2010(b, True)
    if b.month.year == 2010:
        return _yellow_2009_2010(b, False)
    m = b.month
    new = m >= _NEW_TYPES
    # tlc.md: 9-26 % of recent rows have the null block, with payment_type 0.
    block = b.chance(0.10) if new else np.zeros(b.n, dtype=bool)
    miles, fare = _trip(b, 2.5, 0.35)
    payment = np.where(block, 0, b.choice([1, 2, 3, 4], [72, 25, 2, 1]))
    tip = b.money(np.where(payment == 1, fare * b.rng.uniform(0.1, 0.3, b.n), 0.0))
    tolls = np.where(b.chance(0.05), 6.94, 0.0)
    extra = b.choice([0.0, 0.5, 1.0, 2.5], [40, 30, 20, 10])
    improvement = 1.0 if m >= Month(2022, 10) else 0.3 if m >= Month(2015, 1) else 0.0
    congestion = np.where(b.chance(0.08), 0.0, 2.5) if m >= Month(2019, 2) else None
    airport = np.where(b.chance(0.06), 1.75 if m >= Month(2022, 4) else 1.25, 0.0) if m >= Month(2020, 8) else None
    cbd = np.where(b.chance(0.3), 0.0, 0.75)
    total = b.money(fare + extra + 0.5 + tip + tolls + improvement)
    total += np.nan_to_num(congestion if congestion is not None else 0.0)
    total += np.nan_to_num(airport if airport is not None else 0.0)
    total = b.money(total + (cbd if m >= _CBD else 0.0))
    vendors = ([1, 2, 6, 7], [26, 72, 1, 1]) if new else ([1, 2], [45, 55])
    return {
        "VendorID": b.choice(*vendors),
        "tpep_pickup_datetime": _timestamps(b.pickup),
        "tpep_dropoff_datetime": _timestamps(b.dropoff),
        "passenger_count": (b.choice(np.arange(7), [2, 70, 14, 4, 3, 4, 3]), block),
        "trip_distance": miles,
        "RatecodeID": (b.choice([1, 2, 3, 4, 5, 6, 99], [930, 30, 5, 5, 25, 1, 4]), block),
        "store_and_fwd_flag": b.text(["N", "Y"], [99, 1], null=block),
        "PULocationID": _zones(b),
        "DOLocationID": _zones(b),
        "payment_type": payment,
        "fare_amount": b.signed(fare),
        "extra": b.signed(extra),
        "mta_tax": b.signed(np.full(b.n, 0.5)),
        "tip_amount": tip,
        "tolls_amount": tolls,
        "improvement_surcharge": b.signed(np.full(b.n, improvement)),
        "total_amount": b.signed(total),
        "congestion_surcharge": None if congestion is None else (b.signed(congestion), block),
        "airport_fee": None if airport is None else (airport, block),
        "Airport_fee": None if airport is None else (airport, block),
        "cbd_congestion_fee": b.signed(cbd),
        "request_source": b.text(["Street-hail", "App", "Dispatch"], [80, 15, 5], null=block),
    }


def _green(b: _Batch) -> dict:
    m = b.month
    miles, fare = _trip(b, 2.5, 0.35)
    payment = b.choice([1, 2, 3, 4, 5], [60, 37, 2, 1, 0.1])
    tip = b.money(np.where(payment == 1, fare * b.rng.uniform(0.1, 0.25, b.n), 0.0))
    tolls = np.where(b.chance(0.03), 6.94, 0.0)
    extra = b.choice([0.0, 0.5, 1.0], [50, 35, 15])
    improvement = 1.0 if m >= Month(2022, 10) else 0.3 if m >= Month(2015, 1) else 0.0
    congestion = np.where(b.chance(0.7), 0.0, 2.75) if m >= Month(2019, 2) else None
    cbd = np.where(b.chance(0.9), 0.0, 0.75)
    total = fare + extra + 0.5 + tip + tolls + improvement + (0.0 if congestion is None else congestion)
    total = b.money(total + (cbd if m >= _CBD else 0.0))
    return {
        "VendorID": b.choice([1, 2], [15, 85]),
        "lpep_pickup_datetime": _timestamps(b.pickup),
        "lpep_dropoff_datetime": _timestamps(b.dropoff),
        "store_and_fwd_flag": b.text(["N", "Y"], [99, 1]),
        "RatecodeID": b.choice([1, 2, 3, 4, 5, 99], [930, 10, 5, 5, 48, 2]),
        "PULocationID": _zones(b),
        "DOLocationID": _zones(b),
        "passenger_count": b.choice(np.arange(7), [1, 80, 9, 3, 2, 3, 2]),
        "trip_distance": miles,
        "fare_amount": b.signed(fare),
        "extra": b.signed(extra),
        "mta_tax": b.signed(np.full(b.n, 0.5)),
        "tip_amount": tip,
        "tolls_amount": tolls,
        "ehail_fee": None,
        "improvement_surcharge": b.signed(np.full(b.n, improvement)),
        "total_amount": b.signed(total),
        "payment_type": payment,
        "trip_type": b.choice([1, 2], [97, 3]),
        "congestion_surcharge": None if congestion is None else b.signed(congestion),
        "cbd_congestion_fee": b.signed(cbd),
        "request_source": b.text(["Street-hail", "App", "Dispatch"], [90, 7, 3]),
    }


_FHV_BASES = [f"B{n:05d}" for n in range(2000, 3300, 7)]


def _fhv(b: _Batch) -> dict:
    dispatching = b.choice(np.arange(len(_FHV_BASES)))
    affiliated = np.where(b.chance(0.15), b.choice(np.arange(len(_FHV_BASES))), dispatching)
    bases = pa.array(_FHV_BASES, _STR)
    no_dropoff_zone = 0.95 if b.month.year < 2017 else 0.15
    return {
        "dispatching_base_num": bases.take(pa.array(dispatching)),
        "pickup_datetime": _timestamps(b.pickup),
        "dropOff_datetime": _timestamps(b.dropoff),
        "PUlocationID": (_zones(b).astype(float), b.chance(0.2)),
        "DOlocationID": (_zones(b).astype(float), b.chance(no_dropoff_zone)),
        "SR_Flag": (np.ones(b.n, dtype=np.int32), b.chance(0.9)),
        "Affiliated_base_number": bases.take(pa.array(affiliated, mask=b.chance(0.05))),
    }


# hvfhs_license_num -> its dispatching bases (Juno, Uber, Via, Lyft).
_HV_BASES = {
    "HV0002": ["B02907", "B02908", "B02914"],
    "HV0003": ["B02764", "B02765", "B02682", "B02869", "B02870", "B02871", "B02872", "B02875", "B02876", "B02877"],
    "HV0004": ["B02800"],
    "HV0005": ["B02510", "B02844"],
}


def _fhvhv(b: _Batch) -> dict:
    m = b.month
    if m < Month(2020, 1):
        licenses = [("HV0002", 2), ("HV0003", 68), ("HV0004", 3), ("HV0005", 27)]
    elif m < Month(2022, 1):
        licenses = [("HV0003", 72), ("HV0004", 1), ("HV0005", 27)]
    else:
        licenses = [("HV0003", 74), ("HV0005", 26)]
    names = [name for name, _ in licenses]
    license_index = b.choice(np.arange(len(names)), [w for _, w in licenses])
    # One flat list of bases; each row picks a base of its own license.
    flat = [base for name in names for base in _HV_BASES[name]]
    offsets = np.cumsum([0] + [len(_HV_BASES[name]) for name in names])
    sizes = np.diff(offsets)
    base_index = offsets[license_index] + (b.rng.random(b.n) * sizes[license_index]).astype(np.int64)
    uber = np.array([name == "HV0003" for name in names])[license_index]
    bases = pa.array(flat, _STR)
    request = b.pickup - b.rng.integers(30, 900, b.n)
    on_scene = b.pickup - b.rng.integers(0, 180, b.n)
    trip_time = b.dropoff - b.pickup
    miles, fare = _trip(b, 1.3, 0.45, 2.5)
    shared_request = b.chance(0.02)
    return {
        "hvfhs_license_num": pa.array(names, _STR).take(pa.array(license_index)),
        "dispatching_base_num": bases.take(pa.array(base_index)),
        "originating_base_num": bases.take(pa.array(base_index, mask=~uber | b.chance(0.03))),
        "request_datetime": _timestamps(request),
        "on_scene_datetime": pa.array((on_scene * _US).view("datetime64[us]"), mask=~uber),
        "pickup_datetime": _timestamps(b.pickup),
        "dropoff_datetime": _timestamps(b.dropoff),
        "PULocationID": _zones(b),
        "DOLocationID": _zones(b),
        "trip_miles": miles,
        "trip_time": trip_time.astype(np.int64),
        "base_passenger_fare": b.signed(fare),
        "tolls": np.where(b.chance(0.04), 6.94, 0.0),
        "bcf": b.signed(b.money(fare * 0.0275)),
        "sales_tax": b.signed(b.money(fare * 0.08875)),
        "congestion_surcharge": np.where(b.chance(0.35), 0.0, 2.75),
        "airport_fee": np.where(b.chance(0.05), 2.5, 0.0),
        "tips": b.money(np.where(b.chance(0.15), b.rng.uniform(1, 10, b.n), 0.0)),
        "driver_pay": b.money(np.maximum(fare * b.rng.uniform(0.55, 0.85, b.n), 0.0)),
        "shared_request_flag": pa.array(np.where(shared_request, "Y", "N")),
        "shared_match_flag": pa.array(np.where(shared_request & b.chance(0.5), "Y", "N")),
        "access_a_ride_flag": b.text(["N", "Y"], [999, 1], null=0.01),
        "wav_request_flag": b.text(["N", "Y"], [995, 5]),
        "wav_match_flag": b.text(["N", "Y"], [93, 7], null=0.001),
        "cbd_congestion_fee": np.where(b.chance(0.7), 0.0, 1.5),
    }


_VALUES: dict[str, Callable[[_Batch], dict]] = {"yellow": _yellow, "green": _green, "fhv": _fhv, "fhvhv": _fhvhv}
_DURATION = {"yellow": (720, 0.7), "green": (660, 0.7), "fhv": (1100, 0.6), "fhvhv": (1000, 0.6)}  # median s, sigma


def _array(field: pa.Field, value, n: int) -> pa.Array:
    """`value` (an Arrow array, numpy values, `(values, null mask)` or None) as `field`'s type."""
    if pa.types.is_null(field.type) or value is None:
        return pa.nulls(n, field.type)
    if isinstance(value, tuple):
        values, mask = value
        value = pa.array(values, mask=mask if mask is not None and mask.any() else None)
    elif not isinstance(value, pa.Array):
        value = pa.array(value)
    return value if value.type == field.type else value.cast(field.type)


def _seed(*parts: int) -> list[int]:
    return [p & 0xFFFF_FFFF_FFFF_FFFF for p in parts]


def _special_rows(total: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers (sorted) of the rows outside the month (~1 in 10,000, at least one from 100
    rows) and of the one absurd fare (from 1,000 rows)."""
    outside = max(1, round(total / 10_000)) if total >= 100 else 0
    outside_rows = np.unique(rng.integers(0, total, outside)) if outside else np.empty(0, np.int64)
    extreme_rows = rng.integers(0, total, 1) if total >= 1_000 else np.empty(0, np.int64)
    return outside_rows, extreme_rows


def _batch(feed: str, month: Month, first_row: int, n: int, rng, outside_rows, extreme_rows) -> _Batch:
    start = int((month.start - _EPOCH).total_seconds())
    span = int((month.end - month.start).total_seconds())
    pickup = start + rng.integers(0, span, n)
    outside = outside_rows[(outside_rows >= first_row) & (outside_rows < first_row + n)] - first_row
    if outside.size:  # half late reports from the month before, half clock garbage (2001..2088)
        late = start - rng.integers(1, 40 * 86_400, outside.size)
        far = rng.integers(_OUTSIDE_FROM, _OUTSIDE_TO, outside.size)
        far = np.where((far >= start) & (far < start + span), far - span, far)  # never inside
        pickup[outside] = np.where(np.arange(outside.size) % 2 == 0, late, far)
    median, sigma = _DURATION[feed]
    duration = np.minimum(rng.lognormal(np.log(median), sigma, n), 4 * 3600).astype(np.int64)
    extreme = np.zeros(n, dtype=bool)
    extreme[extreme_rows[(extreme_rows >= first_row) & (extreme_rows < first_row + n)] - first_row] = True
    return _Batch(month, n, first_row, rng, pickup, pickup + 60 + duration, rng.random(n) < 0.005, extreme)


def write_tlc_month(
    path: Path,
    feed: str,
    month: Month,
    rows: int,
    seed: int = 0,
    *,
    row_group_rows: int = 1_048_576,
    variant: int = 0,
) -> None:
    """Write `{feed}_tripdata_{month}.parquet` as the TLC would: its era's exact schema
    (`tlc_era_schema`), snappy, row groups of `row_group_rows`, `rows` (+ `variant`) rows.

    Deterministic in (feed, month, rows, seed, variant); `variant` != 0 stands for a re-published
    file (other values, other bytes, `variant` more rows). Written row group by row group: memory
    stays bounded whatever `rows` is. Not atomic: write to a temporary name and rename.
    """
    schema = tlc_era_schema(feed, month)
    total = max(0, rows + variant)
    row_group_rows = max(1, row_group_rows)
    key = (seed, variant, TLC_FEEDS.index(feed), month.year, month.month)
    outside_rows, extreme_rows = _special_rows(total, np.random.default_rng(_seed(*key, 1 << 40)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Format 2.6 keeps nanosecond timestamps (yellow 2024-03..05); the others are written as micros.
    with pq.ParquetWriter(path, schema, compression="snappy", version="2.6") as writer:
        for group, first_row in enumerate(range(0, total, row_group_rows)):
            n = min(row_group_rows, total - first_row)
            rng = np.random.default_rng(_seed(*key, group))
            batch = _batch(feed, month, first_row, n, rng, outside_rows, extreme_rows)
            values = _VALUES[feed](batch)
            arrays = [_array(f, values.get(f.name), n) for f in schema]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=row_group_rows)
            del batch, values, arrays


# ---------------------------------------------------------------------------------------------
# The server: CloudFront in front of an S3 bucket.

_PATH = re.compile(r"^/trip-data/([A-Za-z0-9]+)_tripdata_(\d{4}-\d{2})\.parquet$")
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
)
_ERRORS = {  # what S3/CloudFront answer for the statuses a test may inject
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


def default_latest(now: datetime | None = None) -> Month:
    """Two months before the current month: the TLC publishes "with two months delay"."""
    now = now or datetime.now()
    return Month(now.year, now.month).previous().previous()


@dataclass
class _Served:
    """A generated file and what its headers say, cached until its mtime or size changes."""

    path: Path
    stamp: tuple[int, int]  # (mtime_ns, size)
    etag: str
    last_modified: str
    size: int


class TlcServer(ThreadingHTTPServer):
    """`{url}/{feed}_tripdata_{YYYY-MM}.parquet` like the TLC's CloudFront distribution.

    Published: `TLC_DATASETS[feed].first_month <= month <= latest[feed]`; anything else is a 403
    with S3's AccessDenied XML. Files are generated into `root` on first request.
    Test hooks: `publish`, `republish`, `break_next` (or `fail_next` / `truncate_next` directly);
    `requests` lists every (method, path) received.
    """

    daemon_threads = True

    def __init__(
        self,
        root: Path,
        rows: int | dict[str, int] = 2000,
        latest: Month | dict[str, Month] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.rows = (
            {f: rows.get(f, 2000) for f in TLC_FEEDS} if isinstance(rows, dict) else dict.fromkeys(TLC_FEEDS, rows)
        )
        fallback = default_latest()
        if isinstance(latest, dict):
            self.latest = {f: latest.get(f, fallback) for f in TLC_FEEDS}
        else:
            self.latest = dict.fromkeys(TLC_FEEDS, latest or fallback)
        self.fail_next: dict[str, list[int]] = {}  # file name -> statuses for its next GETs
        self.truncate_next: set[str] = set()  # file names whose next GET stops half-way
        self.requests: list[tuple[str, str]] = []
        self._variants: dict[str, int] = {}
        self._served: dict[str, _Served] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._hooks_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """The base URL, for `TAXI_TLC_URL`."""
        return f"http://{self.server_address[0]}:{self.server_address[1]}/trip-data"

    @staticmethod
    def file_name(feed: str, month: Month) -> str:
        return f"{feed}_tripdata_{month}.parquet"

    def published(self, feed: str, month: Month) -> bool:
        return feed in TLC_FEEDS and _first_month(feed) <= month <= self.latest[feed]

    def publish(self, feed: str, month: Month) -> None:
        """Publish every month of `feed` up to `month` (never un-publishes)."""
        _first_month(feed)
        self.latest[feed] = max(self.latest[feed], month)

    def republish(self, feed: str, month: Month, variant: int = 1) -> None:
        """Re-upload a published month: new values (`variant`), size, ETag and Last-Modified."""
        if not self.published(feed, month):
            raise ValueError(f"{self.file_name(feed, month)} is not published; publish it first")
        name = self.file_name(feed, month)
        with self._lock(name):
            old = self.root / name
            previous = old.stat().st_mtime if old.exists() else 0.0
            self._variants[name] = variant
            self._generate(feed, month, name)
            stamp = max(time.time(), previous + 1.0)  # Last-Modified has whole seconds
            os.utime(self.root / name, (stamp, stamp))
            self._served.pop(name, None)

    def break_next(self, name: str, status_or_action: int | str) -> None:
        """Spoil the next GET of file `name`: a status to answer (e.g. 503), or "truncate"."""
        with self._hooks_lock:
            if status_or_action == "truncate":
                self.truncate_next.add(name)
            else:
                self.fail_next.setdefault(name, []).append(int(status_or_action))

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

    def _generate(self, feed: str, month: Month, name: str) -> None:
        tmp = self.root / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            write_tlc_month(
                tmp,
                feed,
                month,
                self.rows[feed],
                seed=month.year * 100 + month.month,
                variant=self._variants.get(name, 0),
            )
            tmp.replace(self.root / name)
        finally:
            tmp.unlink(missing_ok=True)

    def served(self, url_path: str) -> _Served | None:
        """The file behind `url_path` (generated if need be), or None when it is not published."""
        m = _PATH.match(url_path)
        if not m or m.group(1) not in TLC_FEEDS:
            return None
        feed, month = m.group(1), Month.parse(m.group(2))
        if not self.published(feed, month):
            return None
        name = self.file_name(feed, month)
        path = self.root / name
        with self._lock(name):
            if not path.exists():
                self._generate(feed, month, name)
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = self._served.get(name)
            if cached is None or cached.stamp != stamp:
                digest = hashlib.md5(usedforsecurity=False)
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        digest.update(chunk)
                cached = _Served(
                    path, stamp, f'"{digest.hexdigest()}"', formatdate(stat.st_mtime, usegmt=True), stat.st_size
                )
                self._served[name] = cached
            return cached

    def take_hook(self, name: str) -> int | str | None:
        """The spoiler for this GET of `name`, if any: a status, or "truncate"."""
        with self._hooks_lock:
            statuses = self.fail_next.get(name)
            if statuses:
                status = statuses.pop(0)
                if not statuses:
                    del self.fail_next[name]
                return status
            if name in self.truncate_next:
                self.truncate_next.discard(name)
                return "truncate"
        return None

    def start(self) -> TlcServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="tlc-sample-server")
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._thread is not None:
            super().shutdown()
            self._thread = None
        self.server_close()


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server: TlcServer
    protocol_version = "HTTP/1.1"  # keep-alive, as CloudFront; every answer has a Content-Length

    def version_string(self) -> str:
        return "AmazonS3"

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = urlsplit(self.path).path
        self.server.requests.append((self.command, path))
        name = path.rsplit("/", 1)[-1]
        hook = self.server.take_hook(name) if body else None
        if isinstance(hook, int):
            code, message = _ERRORS.get(hook, ("ServiceUnavailable", "Service Unavailable"))
            xml = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
            )
            self._small(hook, "application/xml", xml.encode(), body)
            return
        served = self.server.served(path)
        if served is None:
            self._small(403, "application/xml", ACCESS_DENIED, body)
            return
        if self._not_modified(served):
            self.send_response(304)
            self._file_headers(served)
            self.end_headers()
            return
        start, end, status = 0, served.size - 1, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range.strip() in (served.etag, served.last_modified)):
            span = _byte_range(wanted, served.size)
            if span == "unsatisfiable":
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{served.size}")
                self._small_rest("application/xml", b"", body)
                return
            if span is not None:
                start, end, status = span[0], span[1], 206
        length = end - start + 1
        self.send_response(status)
        self._file_headers(served)
        self.send_header("Content-Type", "binary/octet-stream")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{served.size}")
        self.end_headers()
        if not body:
            return
        send = length // 2 if hook == "truncate" else length
        with open(served.path, "rb") as f:
            f.seek(start)
            _copy(f, self.wfile, send)
        if hook == "truncate":
            self.wfile.flush()
            self.close_connection = True

    def _file_headers(self, served: _Served) -> None:
        self.send_header("ETag", served.etag)
        self.send_header("Last-Modified", served.last_modified)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Cache", "Miss from cloudfront")

    def _not_modified(self, served: _Served) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            return served.etag in [t.strip() for t in if_none_match.split(",")] or if_none_match.strip() == "*"
        since = self.headers.get("If-Modified-Since")
        if since:
            try:
                return parsedate_to_datetime(since).timestamp() >= int(served.stamp[0] // 1_000_000_000)
            except (TypeError, ValueError):
                return False
        return False

    def _small(self, status: int, content_type: str, payload: bytes, body: bool) -> None:
        self.send_response(status)
        self._small_rest(content_type, payload, body)

    def _small_rest(self, content_type: str, payload: bytes, body: bool) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # quiet: tests read their own output
        pass


def _byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One `bytes=a-b`, `bytes=a-` or `bytes=-n` range, clipped to the file; "unsatisfiable"
    (a 416); or None when the header is not one range (S3 then ignores it and sends it all)."""
    m = _RANGE.match(header.strip())
    if not m or not (m.group(1) or m.group(2)):
        return None
    if not m.group(1):
        suffix = int(m.group(2))
        return (max(0, size - suffix), size - 1) if suffix else "unsatisfiable"
    first = int(m.group(1))
    last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if m.group(2) and int(m.group(2)) < first:
        return None  # an invalid range is ignored
    return (first, last) if first < size else "unsatisfiable"


def _copy(source, target, length: int) -> None:
    left = length
    while left > 0:
        chunk = source.read(min(left, 1 << 20))
        if not chunk:
            break
        target.write(chunk)
        left -= len(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="folder of month files (created)")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--rows", type=int, default=20_000, help="rows in each generated month")
    parser.add_argument("--latest", type=Month.parse, default=None, help="newest published month (YYYY-MM)")
    args = parser.parse_args()
    server = TlcServer(args.dir, args.rows, args.latest, host=args.host, port=args.port)
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
