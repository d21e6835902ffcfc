"""Arrow batches as rows of Postgres's binary COPY format, built in C (Arrow, numpy), never row by row.

A typed month (the TLC's Parquet, cast to its canonical schema) goes to COPY as binary: Postgres
then only copies fixed-width values instead of parsing text, and Python never renders a row as
text. The values are those the canonical CSV line holds (floats round-trip exactly; timestamps
are whole microseconds), so the rows stored are the same as a text COPY of those lines stores.

Format (https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4): a header, then
per row an int16 field count and per field an int32 length (-1: NULL) and the value in network
byte order: text as UTF-8, integer int32, double precision float8, timestamp int64 microseconds
since 2000-01-01. psycopg's `Copy` ends the stream with the trailer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2  # signature, flags, no extension
_POSTGRES_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds
_WIDTH = {"integer": 4, "double precision": 8, "timestamp": 8}
_NULL = np.frombuffer(np.array([-1], ">i4").tobytes(), np.uint8)


def _length(width: int) -> np.ndarray:
    """A field's length word (network order) as its 4 bytes."""
    return np.frombuffer(np.array([width], ">i4").tobytes(), np.uint8)


def fixed_width(values: np.ndarray | bytes, rows: int, width: int, as_text: bool = False) -> pa.Array:
    """`rows` values of `width` bytes each, laid end to end, as a binary (or string) array, no copy."""
    offsets = np.arange(0, width * rows + 1, width, dtype=np.int32)
    kind = pa.string() if as_text else pa.binary()
    return pa.Array.from_buffers(kind, rows, [None, pa.py_buffer(offsets), pa.py_buffer(values)])


def _network_order(values: pa.Array, pg_type: str) -> np.ndarray:
    """The column's values (NULLs as zero) in network byte order, one row per line of bytes."""
    if pg_type == "timestamp":
        numbers = values.cast(pa.int64()).fill_null(0).to_numpy() - _POSTGRES_EPOCH_US
        return numbers.astype(">i8").view(np.uint8).reshape(-1, 8)
    if pg_type == "integer":  # the canonical int64 holds only int4 values (`tlcparquet._cast`)
        return values.fill_null(0).to_numpy().astype(">i4").view(np.uint8).reshape(-1, 4)
    return values.fill_null(0.0).to_numpy().astype(">f8").view(np.uint8).reshape(-1, 8)


def _fixed(columns: Sequence[pa.Array], pg_types: Sequence[str]) -> list[pa.Array]:
    """Adjacent fixed-width columns as binary pieces: one piece for the run when none holds a NULL
    (one matrix of length-and-value fields), else one piece per column (a NULL is its length only)."""
    rows = len(columns[0])
    widths = [4 + _WIDTH[t] for t in pg_types]
    if not any(c.null_count for c in columns):
        fields = np.empty((rows, sum(widths)), np.uint8)
        at = 0
        for column, pg_type, width in zip(columns, pg_types, widths, strict=True):
            fields[:, at : at + 4] = _length(width - 4)
            fields[:, at + 4 : at + width] = _network_order(column, pg_type)
            at += width
        return [fixed_width(fields, rows, sum(widths))]
    pieces = []
    for column, pg_type, width in zip(columns, pg_types, widths, strict=True):
        fields = np.empty((rows, width), np.uint8)
        fields[:, :4] = _length(width - 4)
        fields[:, 4:] = _network_order(column, pg_type)
        if not column.null_count:
            pieces.append(fixed_width(fields, rows, width))
            continue
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        fields[~valid, :4] = _NULL
        keep = np.ones((rows, width), bool)
        keep[~valid, 4:] = False  # a NULL sends its length only
        offsets = np.zeros(rows + 1, np.int32)
        np.cumsum(np.where(valid, width, 4), out=offsets[1:])
        pieces.append(
            pa.Array.from_buffers(pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(fields[keep])])
        )
    return pieces


def _text(column: pa.Array) -> list[pa.Array]:
    """A text column as two pieces: each value's length (-1: NULL), then its bytes."""
    lengths = pc.binary_length(column).fill_null(-1).to_numpy().astype(">i4")
    return [fixed_width(lengths, len(column), 4), column.fill_null("").cast(pa.binary())]


def encode(columns: Sequence[pa.Array], pg_types: Sequence[str]) -> pa.Array:
    """Each row of `columns` (of the Postgres types `pg_types`) as one binary COPY row."""
    rows = len(columns[0])
    pieces = [fixed_width(np.full(rows, len(columns), ">i2"), rows, 2)]
    run: list[int] = []  # the fixed-width columns met since the last text column
    for i, pg_type in enumerate([*pg_types, "text"]):  # a final text sentinel ends the last run
        if pg_type != "text":
            run.append(i)
            continue
        if run:
            pieces += _fixed([columns[j] for j in run], [pg_types[j] for j in run])
            run = []
        if i < len(columns):
            pieces += _text(columns[i])
    return pc.binary_join_element_wise(*pieces, b"")


def payload(rows: pa.Array) -> memoryview:
    """The bytes of the binary `rows` (from `encode`, perhaps filtered), end to end, without a copy."""
    if not len(rows):
        return memoryview(b"")
    offsets = np.frombuffer(rows.buffers()[1], np.int32, count=len(rows) + 1, offset=4 * rows.offset)
    return memoryview(rows.buffers()[2])[int(offsets[0]) : int(offsets[-1])]
