"""The taxi datasets: sources, file names, columns, types. The one place for these facts.

Everything else (download, Postgres DDL, BigQuery schema, Dagster assets, Kestra flows)
derives from the definitions below. Two sources: the DataTalksClub re-publication of the TLC
CSVs (`mirror`, 2019-01 .. 2021-07) and the TLC's own monthly Parquet files (`tlc`, each feed
from its first month to the newest published). A new feed or source is a definition here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taxi_assets import config
from taxi_assets.months import MIRROR_FIRST_MONTH, MIRROR_LAST_MONTH, Month


@dataclass(frozen=True)
class Column:
    """A CSV column and the types it is stored as."""

    name: str  # as the CSV header spells it (matched case-insensitively)
    pg_type: str
    bq_type: str

    @property
    def sql_name(self) -> str:
        """Lower-case unquoted name, as the course's SQL refers to it (`vendorid`)."""
        return self.name.lower()


def _text(name: str) -> Column:
    return Column(name, "text", "STRING")


def _timestamp(name: str) -> Column:
    return Column(name, "timestamp", "TIMESTAMP")


def _integer(name: str) -> Column:
    return Column(name, "integer", "INTEGER")


def _amount(name: str) -> Column:
    return Column(name, "double precision", "NUMERIC")


def _float(name: str) -> Column:
    """A measurement, not money (coordinates): FLOAT64 in BigQuery, not NUMERIC."""
    return Column(name, "double precision", "FLOAT")


@dataclass(frozen=True)
class Source:
    """Where a family of month files is published, and in what format."""

    name: str  # `--source` on the command line
    url_variable: str  # the environment variable for its base URL (`config`, `Settings.base_url`)
    url_pattern: str  # of a file's URL, from `{base}`, `{taxi}` and `{file}`
    format: str  # "csv.gz" or "parquet": how `monthfile.open_month_file(...).read` reads a file
    prefix: str  # of its tables, Dagster keys and folders: "" or "tlc_"
    # What "not published" looks like: the mirror (GitHub releases) answers 404; CloudFront
    # over S3 answers 403 for a key it does not hold.
    not_published_status: int = 404
    # Whether it re-uploads files under the same name: then a local copy is compared with the
    # server's (ETag, size) before it is used, and a changed file is downloaded again.
    republishes: bool = False


MIRROR = Source(
    "mirror",
    config.SOURCE_URL,
    "{base}/{taxi}/{file}",  # release assets live under one tag per taxi type
    "csv.gz",
    "",
)
TLC = Source("tlc", config.TLC_URL, "{base}/{file}", "parquet", "tlc_", 403, republishes=True)
SOURCES: dict[str, Source] = {s.name: s for s in (MIRROR, TLC)}


@dataclass(frozen=True)
class Era:
    """From `first` on (until the next era), the source names of a feed's columns: lower-cased
    published names that differ from the canonical ones, as `{published: canonical}`; and the
    canonical columns its months never had (`absent`: NULL there). A file missing any other
    column is refused: a column dropped by mistake must not load as NULL."""

    first: Month
    renames: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()


# Columns the pipeline adds in front of the CSV columns.
ROW_ID_COLUMN = Column("unique_row_id", "text", "STRING")
FILENAME_COLUMN = Column("filename", "text", "STRING")

# A file with more than this share of its pickups outside its month is another month's file:
# extract refuses it, before any store changes. Real months hold at most ~70 per million outside
# (yellow 2019-01: 537 in 7.7 M, the mirror's copy starting with some 2018 rows; recent months a
# few dozen); a clock off by hours (UTC read as New York time) moves 5 h of 744 out, 0.7 %; a file
# of another month is ~100 % out. A half is thousands of times the real rate and far below a wrong
# file's, so a sample decides it as surely as a full count (the mirror's lines are sampled,
# `monthfile.PickupMonths`) and a tiny generated month (one planted stray in 4 rows, 25 %) passes. A file
# in between (a clock days off, two months in one) loads, and the checks warn of it
# (`OUT_OF_MONTH_TOLERANCE`: above 1,000 per million).
WRONG_MONTH_SHARE = 0.5


@dataclass(frozen=True)
class TaxiDataset:
    """One taxi type: where its monthly files live and what they hold."""

    taxi: str
    columns: tuple[Column, ...]
    pickup_column: str
    dropoff_column: str
    # Columns whose NULLs the load reports (a trip without them is hard to use).
    key_columns: tuple[str, ...]
    # Integer-valued columns that some re-issued files print as `1.0`; loaded as `1`.
    integer_float_columns: tuple[str, ...] = ()
    source: Source = MIRROR
    first_month: Month = MIRROR_FIRST_MONTH
    last_month: Month | None = MIRROR_LAST_MONTH  # None: open-ended, the newest month the source publishes
    eras: tuple[Era, ...] = ()  # Parquet sources: how older months name their columns
    dropped_columns: tuple[str, ...] = ()  # published columns that are no data (pandas' index)

    @property
    def name(self) -> str:
        """`yellow`, `tlc_yellow`: the dataset's name in tables, Dagster keys and folders."""
        return f"{self.source.prefix}{self.taxi}"

    @property
    def table(self) -> str:
        return f"{self.name}_tripdata"

    @property
    def folder(self) -> str:
        """Its folder under the download folder, and its prefix in the bucket."""
        return self.taxi if self.source is MIRROR else f"{self.source.name}/{self.taxi}"

    def era(self, month: Month) -> Era:
        """The era `month` belongs to (the canonical names when there are none)."""
        return next((e for e in reversed(self.eras) if e.first <= month), Era(self.first_month))

    def published(self, month: Month) -> bool | None:
        """True/False when the range is fixed; None when only the source can tell (it is open)."""
        if month < self.first_month:
            return False
        return None if self.last_month is None else month <= self.last_month

    def published_range(self) -> str:
        return f"{self.first_month}..{self.last_month or 'the newest published'}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def sql_names(self) -> tuple[str, ...]:
        return tuple(c.sql_name for c in self.columns)

    @property
    def pickup_index(self) -> int:
        return self.column_index(self.pickup_column)

    def column_index(self, name: str) -> int:
        return self.sql_names.index(name.lower())

    def file_name(self, month: Month) -> str:
        """`green_tripdata_2019-01.csv.gz`: the published name, also the `filename` column."""
        return f"{self.taxi}_tripdata_{month}.{self.source.format}"

    def url(self, base_url: str, month: Month) -> str:
        return self.source.url_pattern.format(base=base_url.rstrip("/"), taxi=self.taxi, file=self.file_name(month))

    def header_problem(self, header: list[str]) -> str | None:
        """Why `header` is not this dataset's header, or None when it is (case-insensitive)."""
        got = [h.strip().lower() for h in header]
        want = list(self.sql_names)
        if got == want:
            return None
        missing = [c for c in want if c not in got]
        extra = [c for c in got if c not in want]
        if not missing and not extra:
            return f"columns in an unexpected order: {','.join(header)}"
        return f"missing {missing or 'nothing'}, unexpected {extra or 'nothing'}"


YELLOW = TaxiDataset(
    taxi="yellow",
    columns=(
        _text("VendorID"),
        _timestamp("tpep_pickup_datetime"),
        _timestamp("tpep_dropoff_datetime"),
        _integer("passenger_count"),
        _amount("trip_distance"),
        _text("RatecodeID"),
        _text("store_and_fwd_flag"),
        _text("PULocationID"),
        _text("DOLocationID"),
        _integer("payment_type"),
        _amount("fare_amount"),
        _amount("extra"),
        _amount("mta_tax"),
        _amount("tip_amount"),
        _amount("tolls_amount"),
        _amount("improvement_surcharge"),
        _amount("total_amount"),
        _amount("congestion_surcharge"),
    ),
    pickup_column="tpep_pickup_datetime",
    dropoff_column="tpep_dropoff_datetime",
    key_columns=("tpep_pickup_datetime", "tpep_dropoff_datetime", "PULocationID", "DOLocationID"),
)

GREEN = TaxiDataset(
    taxi="green",
    columns=(
        _text("VendorID"),
        _timestamp("lpep_pickup_datetime"),
        _timestamp("lpep_dropoff_datetime"),
        _text("store_and_fwd_flag"),
        _text("RatecodeID"),
        _text("PULocationID"),
        _text("DOLocationID"),
        _integer("passenger_count"),
        _amount("trip_distance"),
        _amount("fare_amount"),
        _amount("extra"),
        _amount("mta_tax"),
        _amount("tip_amount"),
        _amount("tolls_amount"),
        _amount("ehail_fee"),
        _amount("improvement_surcharge"),
        _amount("total_amount"),
        _integer("payment_type"),
        _integer("trip_type"),
        _amount("congestion_surcharge"),
    ),
    pickup_column="lpep_pickup_datetime",
    dropoff_column="lpep_dropoff_datetime",
    key_columns=("lpep_pickup_datetime", "lpep_dropoff_datetime", "PULocationID", "DOLocationID"),
)

FHV = TaxiDataset(
    taxi="fhv",
    columns=(
        _text("dispatching_base_num"),
        _timestamp("pickup_datetime"),
        _timestamp("dropoff_datetime"),  # `dropOff_datetime` in 2019 files
        _text("PULocationID"),  # `PUlocationID` in 2019 files
        _text("DOLocationID"),
        _integer("SR_Flag"),
        _text("Affiliated_base_number"),
    ),
    pickup_column="pickup_datetime",
    dropoff_column="dropoff_datetime",
    key_columns=("dispatching_base_num", "pickup_datetime", "PULocationID", "DOLocationID"),
    integer_float_columns=("PULocationID", "DOLocationID", "SR_Flag"),
)

MIRROR_DATASETS: dict[str, TaxiDataset] = {d.taxi: d for d in (GREEN, YELLOW, FHV)}
TAXI_TYPES: tuple[str, ...] = tuple(MIRROR_DATASETS)


# The TLC's own Parquet files (`tlc`). Each feed's columns are its newest era's, lower-cased,
# with stable types; every older month is cast into them (`taxi_assets.tlc`): names compared
# lower-cased (`Airport_fee`, `dropOff_datetime`, `PUlocationID` need no rename), columns its
# era never had loaded as NULL, integers stored as integers whatever width or float a month used.


def _tlc_feed(**definition) -> TaxiDataset:
    """A TLC feed: published from its `first_month` to the newest month, open-ended."""
    return TaxiDataset(source=TLC, last_month=None, **definition)


_TLC_AMOUNTS = ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount")
# Yellow 2009-2010 have coordinates and no zone ids; their vendor and payment are codes in
# words (`VTS`, `CASH`), kept as text beside the integer codes of later years (NULL then).
_YELLOW_2009_2010_COLUMNS = (
    _text("vendor_name"),
    _text("payment_type_name"),
    _float("pickup_longitude"),
    _float("pickup_latitude"),
    _float("dropoff_longitude"),
    _float("dropoff_latitude"),
)
_YELLOW_2009_2010_NAMES = tuple(c.sql_name for c in _YELLOW_2009_2010_COLUMNS)
# What yellow 2009-2010 lack: zone ids, integer codes and the later surcharges.
_YELLOW_2009_2010_ABSENT = (
    "vendorid",
    "pulocationid",
    "dolocationid",
    "payment_type",
    "improvement_surcharge",
    "congestion_surcharge",
    "airport_fee",
    "cbd_congestion_fee",
    "request_source",
)
_YELLOW_2010 = {
    "vendor_id": "vendor_name",
    "pickup_datetime": "tpep_pickup_datetime",
    "dropoff_datetime": "tpep_dropoff_datetime",
    "rate_code": "ratecodeid",
    "payment_type": "payment_type_name",
    "surcharge": "extra",
}

TLC_YELLOW = _tlc_feed(
    taxi="yellow",
    columns=(
        _integer("vendorid"),
        _timestamp("tpep_pickup_datetime"),
        _timestamp("tpep_dropoff_datetime"),
        _integer("passenger_count"),
        _amount("trip_distance"),
        _integer("ratecodeid"),
        _text("store_and_fwd_flag"),
        _integer("pulocationid"),
        _integer("dolocationid"),
        _integer("payment_type"),
        *(_amount(n) for n in _TLC_AMOUNTS),
        _amount("improvement_surcharge"),
        _amount("total_amount"),
        _amount("congestion_surcharge"),
        _amount("airport_fee"),  # `Airport_fee` from 2023-02
        _amount("cbd_congestion_fee"),
        _text("request_source"),
        *_YELLOW_2009_2010_COLUMNS,
    ),
    pickup_column="tpep_pickup_datetime",
    dropoff_column="tpep_dropoff_datetime",
    key_columns=("tpep_pickup_datetime", "tpep_dropoff_datetime", "pulocationid", "dolocationid"),
    first_month=Month(2009, 1),
    eras=(
        Era(
            Month(2009, 1),
            {
                "trip_pickup_datetime": "tpep_pickup_datetime",
                "trip_dropoff_datetime": "tpep_dropoff_datetime",
                "start_lon": "pickup_longitude",
                "start_lat": "pickup_latitude",
                "end_lon": "dropoff_longitude",
                "end_lat": "dropoff_latitude",
                "rate_code": "ratecodeid",
                "store_and_forward": "store_and_fwd_flag",
                "payment_type": "payment_type_name",
                "fare_amt": "fare_amount",
                "surcharge": "extra",
                "tip_amt": "tip_amount",
                "tolls_amt": "tolls_amount",
                "total_amt": "total_amount",
            },
            _YELLOW_2009_2010_ABSENT,
        ),
        Era(Month(2010, 1), _YELLOW_2010, _YELLOW_2009_2010_ABSENT),
        Era(Month(2011, 1), absent=(*_YELLOW_2009_2010_NAMES, "cbd_congestion_fee", "request_source")),
        Era(Month(2025, 1), absent=(*_YELLOW_2009_2010_NAMES, "request_source")),
        Era(Month(2026, 6), absent=_YELLOW_2009_2010_NAMES),
    ),
    dropped_columns=("__index_level_0__",),  # pandas' index, written into 2010-02 and 2010-03
)

TLC_GREEN = _tlc_feed(
    taxi="green",
    columns=(
        _integer("vendorid"),
        _timestamp("lpep_pickup_datetime"),
        _timestamp("lpep_dropoff_datetime"),
        _text("store_and_fwd_flag"),
        _integer("ratecodeid"),
        _integer("pulocationid"),
        _integer("dolocationid"),
        _integer("passenger_count"),
        _amount("trip_distance"),
        *(_amount(n) for n in _TLC_AMOUNTS),
        _amount("ehail_fee"),
        _amount("improvement_surcharge"),
        _amount("total_amount"),
        _integer("payment_type"),
        _integer("trip_type"),
        _amount("congestion_surcharge"),
        _amount("cbd_congestion_fee"),
        _text("request_source"),
    ),
    pickup_column="lpep_pickup_datetime",
    dropoff_column="lpep_dropoff_datetime",
    key_columns=("lpep_pickup_datetime", "lpep_dropoff_datetime", "pulocationid", "dolocationid"),
    first_month=Month(2014, 1),
    eras=(
        Era(Month(2014, 1), absent=("cbd_congestion_fee", "request_source")),
        Era(Month(2025, 1), absent=("request_source",)),
        Era(Month(2026, 6)),
    ),
)

TLC_FHV = _tlc_feed(
    taxi="fhv",
    columns=(
        _text("dispatching_base_num"),
        _timestamp("pickup_datetime"),
        _timestamp("dropoff_datetime"),  # published `dropOff_datetime`
        _integer("pulocationid"),  # `PUlocationID`; a double before 2023-02
        _integer("dolocationid"),
        _integer("sr_flag"),
        _text("affiliated_base_number"),
    ),
    pickup_column="pickup_datetime",
    dropoff_column="dropoff_datetime",
    key_columns=("dispatching_base_num", "pickup_datetime", "pulocationid", "dolocationid"),
    first_month=Month(2015, 1),
)

TLC_FHVHV = _tlc_feed(
    taxi="fhvhv",
    columns=(
        _text("hvfhs_license_num"),
        _text("dispatching_base_num"),
        _text("originating_base_num"),
        _timestamp("request_datetime"),
        _timestamp("on_scene_datetime"),
        _timestamp("pickup_datetime"),
        _timestamp("dropoff_datetime"),
        _integer("pulocationid"),
        _integer("dolocationid"),
        _amount("trip_miles"),
        _integer("trip_time"),
        _amount("base_passenger_fare"),
        _amount("tolls"),
        _amount("bcf"),
        _amount("sales_tax"),
        _amount("congestion_surcharge"),
        _amount("airport_fee"),
        _amount("tips"),
        _amount("driver_pay"),
        _text("shared_request_flag"),
        _text("shared_match_flag"),
        _text("access_a_ride_flag"),
        _text("wav_request_flag"),
        _text("wav_match_flag"),
        _amount("cbd_congestion_fee"),
    ),
    pickup_column="pickup_datetime",
    dropoff_column="dropoff_datetime",
    key_columns=("hvfhs_license_num", "pickup_datetime", "pulocationid", "dolocationid"),
    first_month=Month(2019, 2),
    eras=(Era(Month(2019, 2), absent=("cbd_congestion_fee",)), Era(Month(2025, 1))),
)

TLC_DATASETS: dict[str, TaxiDataset] = {d.taxi: d for d in (TLC_YELLOW, TLC_GREEN, TLC_FHV, TLC_FHVHV)}
DATASETS_BY_SOURCE: dict[str, dict[str, TaxiDataset]] = {MIRROR.name: MIRROR_DATASETS, TLC.name: TLC_DATASETS}
ALL_DATASETS: tuple[TaxiDataset, ...] = (*MIRROR_DATASETS.values(), *TLC_DATASETS.values())


def dataset(taxi: str, source: str = MIRROR.name) -> TaxiDataset:
    by_taxi = DATASETS_BY_SOURCE.get(source)
    if by_taxi is None:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    try:
        return by_taxi[taxi]
    except KeyError:
        raise ValueError(
            f"unknown taxi type {taxi!r} for source {source}; choose one of {', '.join(by_taxi)}"
        ) from None
