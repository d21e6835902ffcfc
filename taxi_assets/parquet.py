"""A month file as typed Parquet: the object the cloud half uploads and BigQuery loads.

Parquet rather than the published CSV.gz: BigQuery splits Parquet and loads it in parallel
(a gzipped CSV is read by one worker), the schema travels with the data (no CSV guessing),
and the file carries `unique_row_id`, `filename` and `month` computed by this project's own
code, so the BigQuery table holds exactly the ids the Postgres table holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxi_assets.datasets import FILENAME_COLUMN, ROW_ID_COLUMN, TaxiDataset
from taxi_assets.errors import BadFileError
from taxi_assets.files import temp_path
from taxi_assets.monthfile import RowIds, open_month_file, rendering_id
from taxi_assets.monthfile.csvgz import integer_floats_as_integers
from taxi_assets.months import Month
from taxi_assets.rows import hex_ids
from taxi_assets.threads import wind_down

MONTH_COLUMN = "month"  # DATE, first day of the file's month: the BigQuery partition column

# The layout `write_parquet` produces. Bump it whenever the Parquet it writes changes (columns,
# types, row ids, values, compression): upload-gcs records it with every upload and converts and
# uploads again a month whose object an older conversion made (see `steps/gcs.py`).
# 2: row ids from extract, no dictionary for timestamps, no statistics; 3: zstd level 3, 128 k-row groups
CONVERSION_VERSION = 3

_ARROW_TYPES = {
    "STRING": pa.string(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),  # naive NY wall-clock times, labelled UTC as BigQuery does
    "INTEGER": pa.int64(),
    "NUMERIC": pa.decimal128(38, 9),  # BigQuery NUMERIC
    "FLOAT": pa.float64(),
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
    if (rendering := rendering_id(dataset)) is not None:  # ids and values also depend on how rows are read
        return f"v{CONVERSION_VERSION}-{schema}-r{rendering}"
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


_SCALE = 9  # NUMERIC's digits after the point
# |amount| below which amount * 10**9 (< 2**50) is exact to well under half a unit in float64, so
# rounding it gives what `pc.round` gives; a block with a larger amount takes the general path.
_FAST_LIMIT = 1e6


# Arrays are built from buffers here, never from Python values: pyarrow imports pandas (45 MB of
# the step's peak RSS) the first time it converts a Python value or fills nulls into numpy.


def _floats(values: pa.Array) -> np.ndarray:
    """A float64 array (offset 0) as numpy, its nulls as 0."""
    validity, data = values.buffers()
    floats = np.frombuffer(data, dtype=np.float64, count=len(values))
    if not values.null_count:
        return floats
    valid = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), count=len(values), bitorder="little")
    return np.where(valid.astype(bool), floats, 0.0)


def _repeated(value: str | date, rows: int) -> pa.Array:
    """`rows` copies of a filename (string) or a month (date32)."""
    if isinstance(value, date):
        days = np.full(rows, (value - date(1970, 1, 1)).days, dtype=np.int32)
        return pa.Array.from_buffers(pa.date32(), rows, [None, pa.py_buffer(days)])
    text = value.encode()
    offsets = np.arange(0, len(text) * rows + 1, len(text), dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(text * rows)])


def _scaled_decimals(column: pa.ChunkedArray, target: pa.DataType) -> pa.Array | None:
    """float64 amounts as decimal128 in one numpy pass: rounded to 9 decimals (half to even, as
    `pc.round`), the integer written as the decimal's low 8 bytes and its sign as the high 8.
    None when a value is that large or not finite: the general path then takes the block."""
    values = column.combine_chunks()
    if values.offset:
        return None
    scaled = np.rint(_floats(values) * 10.0**_SCALE)
    if not (np.isfinite(scaled).all() and np.abs(scaled).max(initial=0) < _FAST_LIMIT * 10.0**_SCALE):
        return None
    pairs = np.empty((len(scaled), 2), dtype=np.int64)
    pairs[:, 0] = scaled
    pairs[:, 1] = pairs[:, 0] >> 63
    validity = values.buffers()[0]
    return pa.Array.from_buffers(target, len(values), [validity, pa.py_buffer(pairs)], null_count=values.null_count)


def _to_decimals(table: pa.Table, schema: pa.Schema, source: Path) -> pa.Table:
    for i, name in enumerate(table.column_names):
        target = schema.field(name).type
        if pa.types.is_decimal(target):
            column = _scaled_decimals(table.column(i), target)
            if column is None:
                try:
                    column = pc.round(table.column(i), _SCALE).cast(target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise BadFileError(f"{source.name}: {name} has a value NUMERIC cannot hold: {exc}") from None
            table = table.set_column(i, name, column)
    return table


# ~25 MB of Arrow data (peak RSS); BigQuery reads row groups in parallel. With ZSTD_LEVEL, 5% fewer
# bytes than 32 k-row groups at zstd's default level: a 20 M-row fhvhv month stays under 1 GiB,
# the size past which fake-gcs-server (the embedded default) holds 3 GiB while it writes an object.
ROW_GROUP_ROWS = 128_000
ZSTD_LEVEL = 3


def write_parquet(source: Path, dest: Path, dataset: TaxiDataset, month: Month, row_ids: RowIds | None = None) -> int:
    """Convert a verified month file (a .csv.gz, or a TLC Parquet read as its canonical rows)
    into typed Parquet at `dest` (atomically); return the row count.

    The row ids come from extract's row-id file (`row_ids`, closed when done; default the
    file's `MonthFile.row_ids`), so the Parquet carries exactly the ids the Postgres load sends. One thread inflates and
    parses blocks of ~10 k rows while the other completes them (NUMERIC amounts, ids, filename,
    month) and encodes and writes them in row groups: the two cores work at once.
    """
    schema = arrow_schema(dataset)
    month_file = open_month_file(source, dataset)
    normalize = bool(dataset.integer_float_columns)
    parse_types = {f.name: _parse_type(f.type) for f in schema if f.name in dataset.sql_names}
    integers = {c.sql_name for c in dataset.columns if c.bq_type == "INTEGER"}
    if normalize:  # `1.0` in an integer column: parsed as a float, cast back after
        parse_types |= {n: pa.float64() for n in integers}
    filename, first_day = dataset.file_name(month), date(month.year, month.month, 1)
    tmp = temp_path(dest)  # the name extract's clean-up of killed runs knows
    ids = row_ids or month_file.row_ids()
    batches: queue.Queue = queue.Queue(maxsize=2)  # memory: a few blocks, whatever the month
    rows, stop = 0, threading.Event()

    def parse_blocks(parsed) -> None:
        """Inflate and parse (or decode and cast) in this thread while the main one completes,
        encodes and writes the rows; both spend their time in C (ISA-L, pyarrow) with the GIL
        released."""
        try:
            for batch in parsed:
                if stop.is_set():
                    break
                batches.put(batch)
            batches.put(None)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            batches.put(BadFileError(f"{source.name}: {str(exc).splitlines()[0]}"))
        except BaseException as exc:  # handed to the writing thread, which re-raises it
            batches.put(exc)

    def complete(batch: pa.RecordBatch) -> pa.Table:
        """The parsed block as the Parquet's rows: amounts as NUMERIC, then id, filename, month."""
        parsed = pa.Table.from_batches([batch])
        if normalize:
            parsed = pa.Table.from_arrays(
                integer_floats_as_integers(parsed.columns, dataset, pa.int64()), names=parsed.column_names
            )
        parsed = _to_decimals(parsed, schema, source)
        n = parsed.num_rows
        # Where a batch tells its first row's line (a Parquet's canonical line), its id is checked
        # as the Postgres load checks it (ids of other rules or rows fail, never load).
        first_line = month_file.first_line(batch)
        parsed = parsed.append_column(ROW_ID_COLUMN.sql_name, hex_ids(ids.take_checked(n, first_line)))
        parsed = parsed.append_column(FILENAME_COLUMN.sql_name, _repeated(filename, n))
        parsed = parsed.append_column(MONTH_COLUMN, _repeated(first_day, n))
        return parsed.select(schema.names).cast(schema)

    try:
        with (
            contextlib.ExitStack() as reading,
            pq.ParquetWriter(
                tmp,
                schema,
                compression="zstd",
                compression_level=ZSTD_LEVEL,
                # not for ids (unique) nor timestamps (nearly so): a dictionary there costs time and bytes
                use_dictionary=[
                    f.name for f in schema if f.name != ROW_ID_COLUMN.sql_name and not pa.types.is_timestamp(f.type)
                ],
                write_statistics=False,  # nothing reads them: BigQuery loads every row
            ) as writer,
        ):
            parsed = reading.enter_context(month_file.arrow_batches(parse_types))  # closed once the parser has ended
            parser = threading.Thread(target=parse_blocks, args=(parsed,), name="taxi-parquet-parse", daemon=True)
            parser.start()
            try:
                group: list[pa.Table] = []
                while (batch := batches.get()) is not None:
                    if isinstance(batch, BaseException):
                        raise batch
                    try:
                        table = complete(batch)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise BadFileError(f"{source.name}: {str(exc).splitlines()[0]}") from None
                    group.append(table)
                    rows += table.num_rows
                    if sum(t.num_rows for t in group) >= ROW_GROUP_ROWS:
                        writer.write_table(pa.concat_tables(group))
                        group = []
                if group:
                    writer.write_table(pa.concat_tables(group))
            finally:

                def parser_ended() -> bool:
                    stop.set()
                    with contextlib.suppress(queue.Empty):  # unblock it if it waits on a full queue
                        batches.get(timeout=0.05)
                    return not parser.is_alive()

                wind_down(parser_ended)  # before the file it reads is closed
            if not ids.at_end():
                raise BadFileError(f"{source.name} has fewer rows than its row ids; run extract again")
        os.replace(tmp, dest)
    finally:
        ids.close()  # given or computed: this conversion was their last reader
        tmp.unlink(missing_ok=True)
    return rows
