"""A month file as typed Parquet: the object the cloud half uploads and BigQuery loads.

Parquet rather than the published CSV.gz: BigQuery splits Parquet and loads it in parallel
(a gzipped CSV is read by one worker), the schema travels with the data (no CSV guessing),
and the file carries `unique_row_id`, `filename` and `month` computed by this project's own
code, so the BigQuery table holds exactly the ids the Postgres table holds.
"""

from __future__ import annotations

import hashlib
import io
import os
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from taxi_assets.datasets import FILENAME_COLUMN, ROW_ID_COLUMN, TaxiDataset
from taxi_assets.errors import BadFileError
from taxi_assets.months import Month
from taxi_assets.rows import data_lines, with_row_ids
from taxi_assets.steps.extract import temp_path

MONTH_COLUMN = "month"  # DATE, first day of the file's month: the BigQuery partition column

# The layout `write_parquet` produces. Bump it whenever the Parquet it writes changes (columns,
# types, row ids, values, compression): upload-gcs records it with every upload and converts and
# uploads again a month whose object an older conversion made (see `steps/gcs.py`).
CONVERSION_VERSION = 1

_ARROW_TYPES = {
    "STRING": pa.string(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),  # naive NY wall-clock times, labelled UTC as BigQuery does
    "INTEGER": pa.int64(),
    "NUMERIC": pa.decimal128(38, 9),  # BigQuery NUMERIC
}


def arrow_schema(dataset: TaxiDataset) -> pa.Schema:
    """Column order of the BigQuery table: id, filename, month, then the CSV columns."""
    fields = [
        pa.field(ROW_ID_COLUMN.sql_name, pa.string(), nullable=False),
        pa.field(FILENAME_COLUMN.sql_name, pa.string(), nullable=False),
        pa.field(MONTH_COLUMN, pa.date32(), nullable=False),
    ]
    fields += [pa.field(c.sql_name, _ARROW_TYPES[c.bq_type]) for c in dataset.columns]
    return pa.schema(fields)


def conversion_id(dataset: TaxiDataset) -> str:
    """What made a month's Parquet: `CONVERSION_VERSION` and a digest of the dataset's Arrow
    schema, so a column changed in `datasets.py` counts even where the version was not bumped."""
    schema = hashlib.sha256(arrow_schema(dataset).to_string().encode()).hexdigest()[:12]
    return f"v{CONVERSION_VERSION}-{schema}"


def _parse_type(target: pa.DataType) -> pa.DataType:
    """How a column is parsed from the CSV before its final cast.

    Timestamps parse naive (the cast labels them UTC without shifting them); amounts parse as
    float64 and are rounded to NUMERIC's 9 decimals, so a value like 0.30000000000000004 loads
    (as Postgres's double precision does) instead of failing the month.
    """
    if pa.types.is_timestamp(target):
        return pa.timestamp("us")
    if pa.types.is_decimal(target):
        return pa.float64()
    return target


def _to_decimals(table: pa.Table, schema: pa.Schema, source: Path) -> pa.Table:
    for i, name in enumerate(table.column_names):
        target = schema.field(name).type
        if pa.types.is_decimal(target):
            try:
                table = table.set_column(i, name, pc.round(table.column(i), 9).cast(target))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise BadFileError(f"{source.name}: {name} has a value NUMERIC cannot hold: {exc}") from None
    return table


def write_parquet(source: Path, dest: Path, dataset: TaxiDataset, month: Month) -> int:
    """Convert a verified .csv.gz into Parquet at `dest` (atomically); return the row count."""
    schema = arrow_schema(dataset)
    names = [ROW_ID_COLUMN.sql_name, *dataset.sql_names]
    read = pacsv.ReadOptions(column_names=names, autogenerate_column_names=False, use_threads=False)
    convert = pacsv.ConvertOptions(
        column_types={f.name: _parse_type(f.type) for f in schema if f.name in names},
        null_values=[""],
        strings_can_be_null=True,
        timestamp_parsers=["%Y-%m-%d %H:%M:%S"],
    )
    filename, first_day = dataset.file_name(month), date(month.year, month.month, 1)
    tmp = temp_path(dest)  # the name extract's clean-up of killed runs knows
    rows = 0
    _, blocks = data_lines(source, dataset)
    # no duplicate count here: that is the Postgres load's report
    payloads = with_row_ids(blocks, normalize_integer_floats=bool(dataset.integer_float_columns))
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for payload, n in payloads:
                try:
                    parsed = pacsv.read_csv(io.BytesIO(payload), read_options=read, convert_options=convert)
                except pa.ArrowInvalid as exc:
                    raise BadFileError(f"{source.name}: {exc}") from None
                parsed = _to_decimals(parsed, schema, source)
                parsed = parsed.append_column(FILENAME_COLUMN.sql_name, pa.array([filename] * n, pa.string()))
                parsed = parsed.append_column(MONTH_COLUMN, pa.array([first_day] * n, pa.date32()))
                writer.write_table(parsed.select(schema.names).cast(schema))
                rows += n
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
