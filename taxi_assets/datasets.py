"""The taxi datasets: file names, CSV headers, column types. The one place for these facts.

Everything else (download, Postgres DDL, BigQuery schema, Dagster assets, Kestra flows)
derives from the definitions below. Facts: the DataTalksClub re-publication of the TLC CSVs.
"""

from __future__ import annotations

from dataclasses import dataclass

from taxi_assets.months import Month


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


# Columns the pipeline adds in front of the CSV columns.
ROW_ID_COLUMN = Column("unique_row_id", "text", "STRING")
FILENAME_COLUMN = Column("filename", "text", "STRING")


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

    @property
    def table(self) -> str:
        return f"{self.taxi}_tripdata"

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
        return f"{self.taxi}_tripdata_{month}.csv.gz"

    def url(self, base_url: str, month: Month) -> str:
        """Release assets live under one tag per taxi type: `{base}/{taxi}/{file}`."""
        return f"{base_url.rstrip('/')}/{self.taxi}/{self.file_name(month)}"

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

DATASETS: dict[str, TaxiDataset] = {d.taxi: d for d in (GREEN, YELLOW, FHV)}
TAXI_TYPES: tuple[str, ...] = tuple(DATASETS)


def dataset(taxi: str) -> TaxiDataset:
    try:
        return DATASETS[taxi]
    except KeyError:
        raise ValueError(f"unknown taxi type {taxi!r}; choose one of {', '.join(TAXI_TYPES)}") from None
