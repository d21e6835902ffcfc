"""The TLC's own month files (Parquet), read as their feed's canonical rows.

Each feed has one canonical schema (`datasets.TLC_DATASETS`: the newest era's columns,
lower-case, stable types). A month is cast into it column by column, batch by batch:

- names are compared lower-cased (`Airport_fee` is `airport_fee`), then the month's era
  renames apply (yellow 2009-2010: `Trip_Pickup_DateTime`, `Start_Lon`, ...);
- a column the month's era never had (`Era.absent`) is NULL; a column typed null (Parquet's
  Null logical type) too; any other column missing fails the month;
- integers of any width, and doubles holding whole numbers, become int64 (a fraction fails the
  month); large strings become strings; timestamps of any unit (ns in part of 2024) become
  microseconds; 2009's timestamps written as text are parsed;
- `__index_level_0__` (pandas' index, 2010-02/03) is dropped;
- any other column, or one whose type cannot become its canonical type, fails the month with
  one error naming every such column, and nothing loads.

The canonical text of a row is its line as Arrow's CSV writer renders the canonical row
(`csv_lines`: no header, strings quoted, NULL empty, timestamps `YYYY-MM-DD HH:MM:SS.ffffff`,
floats in their shortest round-trip form). It is what COPY receives, and its md5 is the row's
`unique_row_id`: the one definition for Parquet rows, computed once by extract (`monthfile.RowIds`),
so Postgres and BigQuery get the same ids.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from taxi_assets.compiled import fixed_values, validity
from taxi_assets.datasets import Column, TaxiDataset
from taxi_assets.errors import BadFileError
from taxi_assets.monthfile import Block, MonthFile, PickupMonths, TextLines, month_of
from taxi_assets.months import Month
from taxi_assets.threads import in_order_ahead

# Rows cast and rendered at a time: ~4 MB of fhvhv lines, memory flat whatever the month.
BATCH_ROWS = 16_384

# Bump when the canonical text of a row changes (the rendering, a cast rule): row-id files and
# conversions made before are then made again (`rendering_id`). Arrow's major version is part
# of the id too: an Arrow that renders a row differently must not leave old ids beside new
# rows (`tests/test_tlc.py` pins one row's rendering, so CI notices such an Arrow first).
RENDERING_VERSION = 1


def arrow_type(column: Column) -> pa.DataType:
    """The canonical Arrow type of a column as read (amounts stay float64 until the Parquet
    conversion makes them NUMERIC, as the CSV path parses them)."""
    return {
        "text": pa.string(),
        "timestamp": pa.timestamp("us"),
        "integer": pa.int64(),
        "double precision": pa.float64(),
    }[column.pg_type]


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    if pa.types.is_null(source) or source == target:
        return True
    numeric = pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_decimal(source)
    text = pa.types.is_string(source) or pa.types.is_large_string(source)
    if pa.types.is_integer(target) or pa.types.is_floating(target):
        return numeric
    if pa.types.is_string(target):
        return text or numeric  # a number as text: 2009's store_and_forward (0, 1)
    if pa.types.is_timestamp(target):
        return (pa.types.is_timestamp(source) and source.tz is None) or text
    return False


def column_plan(schema: pa.Schema, dataset: TaxiDataset, month: Month, name: str) -> list[int | None]:
    """For each canonical column, the index of the file's column that fills it (None: NULL).
    Raises BadFileError naming every column that does not fit."""
    era = dataset.era(month)
    canonical = {c.sql_name: c for c in dataset.columns}
    found: dict[str, int] = {}
    misfits: list[str] = []
    for i, f in enumerate(schema):
        published = f.name.lower()
        if published in dataset.dropped_columns:
            continue
        target = era.renames.get(published, published)
        column = canonical.get(target)
        if column is None:
            misfits.append(f"{f.name} (no {dataset.taxi} column of that name)")
        elif target in found:
            misfits.append(f"{f.name} (a second {target})")
        elif not _castable(f.type, arrow_type(column)):
            misfits.append(f"{f.name} ({f.type} cannot become {column.pg_type} {target})")
        else:
            found[target] = i
    missing = [c.sql_name for c in dataset.columns if c.sql_name not in found and c.sql_name not in era.absent]
    if missing:  # not one its era never had: a column lost, which must not load as NULL
        misfits.append(f"missing {', '.join(missing)}")
    if misfits:
        raise BadFileError(
            f"{name}: columns that do not fit the {dataset.name} schema of {month}: {'; '.join(misfits)}; nothing loaded"
        )
    return [found.get(c.sql_name) for c in dataset.columns]


_INT4 = (-(2**31), 2**31 - 1)  # Postgres `integer`: BigQuery's INT64 would take more
_TEXT_TIME = "%Y-%m-%d %H:%M:%S"  # 2009's timestamps, published as text


def _cast(values: pa.Array, column: Column, name: str, file: str) -> pa.Array:
    """`values` (the file's column `name`) as the canonical `column`. Never changes a value
    silently: a fraction in an integer column, sub-microsecond times, text that is not a
    `YYYY-MM-DD HH:MM:SS` time, an integer Postgres cannot hold or an amount that is not a
    finite number (BigQuery's NUMERIC holds none) fails the month, naming the column."""
    source, target = values.type, arrow_type(column)

    def unfit(detail: str) -> BadFileError:
        return BadFileError(f"{file}: column {name} ({source}) does not fit {column.pg_type}: {detail}; nothing loaded")

    if pa.types.is_null(source):
        return pa.nulls(len(values), target)
    try:
        if pa.types.is_timestamp(target) and not pa.types.is_timestamp(source):  # text
            empty = pc.invert(pc.cast(pc.utf8_length(values), pa.bool_()))  # no scalar: see tally_pickups
            values = pc.if_else(empty, pa.nulls(len(values), source), values)  # empty: no time
            values = pc.strptime(values, format=_TEXT_TIME, unit="us")
        values = values.cast(target)  # safe: a fraction, a lost nanosecond, an overflow fail
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise unfit(str(exc).splitlines()[0]) from None
    if column.pg_type == "integer" and values.null_count < len(values):
        low, high = pc.min_max(values).values()
        if low.as_py() < _INT4[0] or high.as_py() > _INT4[1]:
            raise unfit(f"{low.as_py() if low.as_py() < _INT4[0] else high.as_py()} is out of integer range")
    if column.bq_type == "NUMERIC" and pc.any(pc.invert(pc.is_finite(values))).as_py():
        raise unfit("a value is not a finite number (NaN or infinity)")
    return values


def open_month(path: Path, name: str | None = None) -> pq.ParquetFile:
    """The file's footer read and checked (magic bytes, metadata): a truncated or non-Parquet
    file fails here with one line."""
    name = name or path.name
    try:
        return pq.ParquetFile(path, memory_map=False, buffer_size=1 << 20, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadFileError(f"{name} is not a complete Parquet file: {str(exc).splitlines()[0]}") from None


def canonical_batches(path: Path, dataset: TaxiDataset, name: str | None = None) -> Iterator[pa.RecordBatch]:
    """The month's rows in the feed's canonical schema, in file order, `BATCH_ROWS` at a time
    (streamed row group by row group). The footer and the columns are checked at once (before
    the first batch is asked for); the row count against the footer's at the end."""
    name = name or path.name
    file = open_month(path, name)
    try:
        plan = column_plan(file.schema_arrow, dataset, month_of(name), name)
    except BaseException:
        file.close()
        raise
    return _batches(file, plan, dataset, name)


def _batches(file: pq.ParquetFile, plan: list[int | None], dataset: TaxiDataset, name: str):
    names = file.schema_arrow.names
    used = sorted({i for i in plan if i is not None})
    targets = [arrow_type(c) for c in dataset.columns]
    schema = pa.schema([pa.field(c.sql_name, t) for c, t in zip(dataset.columns, targets, strict=True)])
    rows = 0
    try:
        try:
            batches = file.iter_batches(batch_size=BATCH_ROWS, columns=[names[i] for i in used], use_threads=False)
            for batch in batches:
                by_index = dict(zip(used, batch.columns, strict=True))
                arrays = [
                    pa.nulls(batch.num_rows, t) if i is None else _cast(by_index[i], c, names[i], name)
                    for i, c, t in zip(plan, dataset.columns, targets, strict=True)
                ]
                rows += batch.num_rows
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        except (pa.ArrowInvalid, OSError) as exc:
            raise BadFileError(f"{name} is corrupt after {rows} rows: {str(exc).splitlines()[0]}") from None
        if rows != file.metadata.num_rows:
            raise BadFileError(f"{name} holds {rows} rows, its footer says {file.metadata.num_rows}")
    finally:
        file.close()


_CSV = pacsv.WriteOptions(include_header=False, batch_size=BATCH_ROWS)


def csv_lines(batch: pa.RecordBatch, name: str) -> TextLines:
    """The canonical text of each row (see the module's docstring), without line endings: by
    `csvlines` where it writes every value of the batch, else by Arrow's writer itself."""
    from taxi_assets import csvlines  # numba: where rows are rendered

    if (rendered := csvlines.render(batch)) is not None:
        return TextLines.of(*rendered)
    sink = pa.BufferOutputStream()
    # The writer's scratch from malloc, which hands it back: the default pool (mimalloc) keeps
    # each render thread's largest, some 15 MB more at extract's peak for no speed.
    pacsv.write_csv(batch, sink, _CSV, memory_pool=pa.system_memory_pool())
    text = sink.getvalue()
    ends = np.flatnonzero(np.frombuffer(text, np.uint8) == ord("\n"))
    if len(ends) != batch.num_rows:  # a line break inside a text field: no line per row
        raise BadFileError(f"{name}: a text field holds a line break; its rows cannot be loaded line by line")
    return TextLines.of(text, ends)


def _hashed_lines(batch: pa.RecordBatch, name: str) -> TextLines:
    lines = csv_lines(batch, name)
    lines.digests()
    return lines


# Rows rendered at a time: half a batch; 8,192 rows keep extract's peak RSS ~30 MB lower than
# 16,384 at the same speed (what is in flight, and what the threads' allocators keep).
RENDER_ROWS = 8_192
RENDER_THREADS = 2  # Arrow renders and md5lines hashes without the GIL: a thread per core
_RENDER_AHEAD = 2 * RENDER_THREADS  # slices rendered ahead of the consumer: memory stays a few MB


def rendered_lines(batches: Iterator[pa.RecordBatch], name: str) -> Iterator[TextLines]:
    """`csv_lines` of each batch, `RENDER_ROWS` at a time, in order, rendered and hashed
    (`TextLines.digests`) a few slices ahead in threads of their own while the caller reads the
    batches after them."""
    slices = (b.slice(start, RENDER_ROWS) for b in batches for start in range(0, b.num_rows, RENDER_ROWS))
    return in_order_ahead(
        slices, functools.partial(_hashed_lines, name=name), RENDER_THREADS, _RENDER_AHEAD, "taxi-render"
    )


def tally_pickups(batches: Iterator[pa.RecordBatch], index: int, pickups: PickupMonths) -> Iterator[pa.RecordBatch]:
    """`batches`, unchanged, their pickups (column `index`) outside `pickups.month` counted by
    month on the way: two comparisons per row, months worked out for the few outside. In numpy:
    pyarrow imports pandas (0.3 s, 57 MB) the first time it turns a Python value into a scalar."""
    start, end = (np.datetime64(t, "us").astype(np.int64) for t in (pickups.month.start, pickups.month.end))
    for batch in batches:
        times = batch.column(index)
        micros = fixed_values(times, np.int64)
        outside = (micros < start) | (micros >= end)
        if times.null_count:
            outside &= validity(times).view(bool)  # a NULL pickup is no month
        months = {}
        if outside.any():
            keys, rows = np.unique(micros[outside].astype("datetime64[us]").astype("datetime64[M]"), return_counts=True)
            months = {str(k): int(n) for k, n in zip(keys, rows, strict=True)}
        pickups.add(batch.num_rows, months)
        yield batch


def rendering_id(dataset: TaxiDataset) -> str:
    """What a Parquet row's canonical line depends on besides the file: this module's rules
    (`RENDERING_VERSION`), Arrow's major version, and the feed's columns, eras and drops."""
    parts = [
        f"v{RENDERING_VERSION}",
        f"arrow{pa.__version__.split('.')[0]}",
        repr([(c.sql_name, c.pg_type) for c in dataset.columns]),
        repr(_renames_by_era(dataset)),
        repr(dataset.dropped_columns),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _renames_by_era(dataset: TaxiDataset) -> list[tuple[str, list]]:
    """(first month, renames) where the renames change: an era that only says which columns
    are absent renders rows as the one before, so it leaves the ids as they were."""
    out: list[tuple[str, list]] = []
    for era in dataset.eras:
        renames = sorted(era.renames.items())
        if (out[-1][1] if out else []) != renames:
            out.append((str(era.first), renames))
    return out


class TlcParquetFile(MonthFile):
    """A Parquet month file (the TLC's): its rows are its canonical lines (`csv_lines`)."""

    def read(
        self, *, pickups: PickupMonths | None = None, check_amounts: bool = False
    ) -> tuple[list[str], Iterator[Block]]:
        """The canonical column names and the month's rows as blocks of canonical lines (never
        quoted for a parser: hashed as they are). With `pickups`, every row's pickup month is
        tallied into it (`tally_pickups`). Amounts are always checked (`_cast`)."""
        batches = canonical_batches(self.path, self.dataset, self.name)  # checks the footer and columns now
        if pickups is not None:
            batches = tally_pickups(batches, self.dataset.pickup_index, pickups)
        blocks = ((lines, False) for lines in rendered_lines(batches, self.name))
        return list(self.dataset.sql_names), blocks

    def published_header(self, header: list[str]) -> list[str]:
        return pq.read_schema(self.path).names

    @staticmethod
    def rendering(dataset: TaxiDataset) -> str | None:
        return rendering_id(dataset)

    def place(self, row: int) -> str:
        return f"row {row:,} of {self.name}"

    @contextlib.contextmanager
    def arrow_batches(self, column_types: dict[str, pa.DataType]) -> Iterator[Iterator[pa.RecordBatch]]:
        batches = canonical_batches(self.path, self.dataset, self.name)
        try:
            yield batches
        finally:
            batches.close()  # the file closes once the parser has ended

    def typed_batches(self) -> Iterator[pa.RecordBatch]:
        return canonical_batches(self.path, self.dataset, self.name)

    def first_line(self, batch: pa.RecordBatch) -> bytes | None:
        return csv_lines(batch.slice(0, 1), self.name)[0] if batch.num_rows else None
