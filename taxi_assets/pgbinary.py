"""Arrow columns as rows of Postgres's binary COPY format, written by one compiled loop.

Every month goes to COPY as binary: Postgres then only copies fixed-width values instead of
parsing text (a 7.7 M-row yellow month's two COPY sessions took 5.5 s instead of 10 s), and
Python never renders a row. The values are those the file's text holds (floats parse and
round-trip exactly; timestamps are whole microseconds), so the rows stored are those a text COPY
of the same lines stores.

Format (https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4): a header, then
per row an int16 field count and per field an int32 length (-1: NULL) and the value in network
byte order: text as UTF-8, integer int32, double precision float8, timestamp int64 microseconds
since 2000-01-01. psycopg's `Copy` ends the stream with the trailer.

The rows are laid out by a numba loop (one pass, GIL released), where Arrow's element-wise joins
of per-column pieces took 4.6 CPU-s for the yellow month; it is compiled once per install and
cached on disk, as `md5lines`'s is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numba
import numpy as np
import pyarrow as pa

from taxi_assets.compiled import (
    MAX_COLUMNS,
    NO_BYTES,
    NO_NUMBERS,
    POWERS,
    fixed_values,
    readonly,
    text_buffers,
    validity,
)
from taxi_assets.monthfile import TextLines

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2  # signature, flags, no extension
_POSTGRES_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1
_WIDTH = {"integer": 4, "double precision": 8, "timestamp": 8}
_INTEGERS = {pa.int32(): np.int32, pa.int64(): np.int64}  # what an `integer` column arrives as


_CHUNK_ROWS = 256


@numba.njit(inline="always")
def _column(out, cursor, first, last, width, data, ends, present):  # pragma: no cover (compiled)
    """One column's fields of rows `first` to `last`, each at its row's cursor (then moved on)."""
    for r in range(first, last):
        i = cursor[r]
        if len(present) and not present[r]:
            out[i : i + 4] = 255  # length -1: NULL
            cursor[r] = i + 4
            continue
        if width:
            start, length = r * width, width
        else:
            start, length = ends[r], ends[r + 1] - ends[r]
        out[i] = (length >> 24) & 255
        out[i + 1] = (length >> 16) & 255
        out[i + 2] = (length >> 8) & 255
        out[i + 3] = length & 255
        i += 4
        for k in range(length):
            out[i + k] = data[start + k]
        cursor[r] = i + length


@numba.njit(nogil=True, cache=True)
def _rows(count, columns, widths, values, offsets, valid, part, parts):  # pragma: no cover (compiled)
    """The rows, each part's end to end, and where each part starts (`parts + 1` bounds).
    Written a column at a time (each row's cursor kept), so every inner loop reads one array."""
    size = np.full(count, 2 + 4 * columns, np.int64)
    for c in range(columns):
        width, ends, present = widths[c], offsets[c], valid[c]
        for r in range(count):
            if len(present) and not present[r]:
                continue
            size[r] += width if width else ends[r + 1] - ends[r]
    bounds = np.zeros(parts + 1, np.int64)
    for r in range(count):
        bounds[part[r] + 1] += size[r]
    for p in range(parts):
        bounds[p + 1] += bounds[p]
    out = np.empty(bounds[parts], np.uint8)
    cursor = np.empty(count, np.int64)
    at = bounds[:parts].copy()
    for r in range(count):
        i = at[part[r]]
        at[part[r]] = i + size[r]
        out[i] = columns >> 8
        out[i + 1] = columns & 255
        cursor[r] = i + 2
    for first in range(0, count, _CHUNK_ROWS):  # a chunk's rows stay in cache across its columns
        last = min(first + _CHUNK_ROWS, count)
        for c in range(columns):
            _column(out, cursor, first, last, widths[c], values[c], offsets[c], valid[c])
    return out, bounds


def _network_order(values: pa.Array, pg_type: str, present: np.ndarray) -> np.ndarray:
    """A fixed-width column's values in network byte order, end to end (a NULL's slot as
    Arrow left it: the loop writes no value for it; `present`: its `validity`). Read from the array's buffer: pyarrow's
    `fill_null` and scalars import pandas, 0.3 s and 57 MB a step's process never needs."""
    if pg_type == "timestamp":  # microseconds (the canonical unit; a parser's other unit cast)
        values = values if values.type == pa.timestamp("us") else values.cast(pa.timestamp("us"))
        return (fixed_values(values, np.int64) - _POSTGRES_EPOCH_US).astype(">i8").view(np.uint8)
    if pg_type == "integer":  # int32, or int64 holding int4 values (`tlcparquet._cast`)
        numbers = fixed_values(values, _INTEGERS[values.type])
        held = numbers[present.view(bool)] if len(present) else numbers
        if numbers.dtype != np.int32 and len(held) and not (held.min() >= _INT4_MIN and held.max() <= _INT4_MAX):
            raise ValueError("an integer column holds a value beyond Postgres's integer")  # never wrapped
        return numbers.astype(">i4").view(np.uint8)
    return fixed_values(values, np.float64).astype(">f8").view(np.uint8)


def encode(columns: Sequence[pa.Array], pg_types: Sequence[str], part: np.ndarray, parts: int) -> list[memoryview]:
    """Each row of `columns` (of the Postgres types `pg_types`; a text column may be binary too)
    as one binary COPY row: one payload per part, holding in order the rows `part` assigns it."""
    if len(columns) > MAX_COLUMNS:
        raise ValueError(f"{len(columns)} columns: the binary COPY loop takes at most {MAX_COLUMNS}")
    count = len(columns[0])
    widths = np.zeros(MAX_COLUMNS, np.int64)
    values, offsets, valid = [NO_BYTES] * MAX_COLUMNS, [NO_NUMBERS] * MAX_COLUMNS, [NO_BYTES] * MAX_COLUMNS
    for c, (column, pg_type) in enumerate(zip(columns, pg_types, strict=True)):
        valid[c] = validity(column)
        if pg_type == "text":
            offsets[c], values[c] = text_buffers(column)
        else:
            widths[c] = _WIDTH[pg_type]
            values[c] = readonly(_network_order(column, pg_type, valid[c]))
    part = np.array(part, np.uint8)  # a copy: writable uint8, whatever was given
    out, bounds = _rows(count, len(columns), widths, tuple(values), tuple(offsets), tuple(valid), part, parts)
    view = memoryview(out)
    return [view[bounds[p] : bounds[p + 1]] for p in range(parts)]


# A CSV's unquoted lines straight to binary rows (`transcode`): the fields' kinds.
TEXT, INTEGER, DOUBLE, TIMESTAMP = 0, 1, 2, 3
KINDS = {"text": TEXT, "integer": INTEGER, "double precision": DOUBLE, "timestamp": TIMESTAMP}
_COMMA, _MINUS, _POINT, _ZERO, _NINE = 44, 45, 46, 48, 57
_DAYS_TO_2000 = date(2000, 1, 1).toordinal() - 1  # days from 0001-01-01 (as `_days` counts)


@numba.njit(inline="always")
def _put(out, i, value, width):  # pragma: no cover (compiled)
    """`value`'s low `width` bytes at `out[i]`, most significant first (network order)."""
    for k in range(width):
        out[i + k] = (value >> (8 * (width - 1 - k))) & 255


@numba.njit(inline="always")
def _digits(data, at, n):  # pragma: no cover (compiled)
    """The number `data[at:at+n]` spells, or -1 if one of them is no digit."""
    value = 0
    for k in range(at, at + n):
        b = data[k]
        if b < _ZERO or b > _NINE:
            return -1
        value = value * 10 + (b - _ZERO)
    return value


@numba.njit(inline="always")
def _leap(year):  # pragma: no cover (compiled)
    return (year % 4 == 0 and year % 100 != 0) or year % 400 == 0


@numba.njit(inline="always")
def _days(year, month, day):  # pragma: no cover (compiled)
    """Days from 0001-01-01 to the date (proleptic Gregorian)."""
    y = year - 1
    days = y * 365 + y // 4 - y // 100 + y // 400
    before = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
    return days + before[month - 1] + (1 if _leap(year) and month > 2 else 0) + day - 1


@numba.njit(inline="always")
def _month_days(year, month):  # pragma: no cover (compiled)
    if month == 2:
        return 29 if _leap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


@numba.njit(inline="always")
def _timestamp(data, lo, hi):  # pragma: no cover (compiled)
    """`YYYY-MM-DD HH:MM:SS[.ffffff]` as microseconds since 2000-01-01, and whether it is one."""
    n = hi - lo
    if n < 19 or (n > 19 and (n == 20 or n > 26 or data[lo + 19] != _POINT)):
        return 0, False
    if data[lo + 4] != _MINUS or data[lo + 7] != _MINUS or data[lo + 10] != 32:
        return 0, False
    if data[lo + 13] != 58 or data[lo + 16] != 58:  # the colons
        return 0, False
    year, month, day = _digits(data, lo, 4), _digits(data, lo + 5, 2), _digits(data, lo + 8, 2)
    hour, minute, second = _digits(data, lo + 11, 2), _digits(data, lo + 14, 2), _digits(data, lo + 17, 2)
    if year < 1 or month < 1 or month > 12 or day < 1 or day > _month_days(year, month):
        return 0, False
    if hour < 0 or hour > 23 or minute < 0 or minute > 59 or second < 0 or second > 59:
        return 0, False
    micros = 0
    if n > 19:
        micros = _digits(data, lo + 20, n - 20)
        if micros < 0:
            return 0, False
        for _ in range(26 - n):
            micros *= 10
    seconds = ((_days(year, month, day) - _DAYS_TO_2000) * 24 + hour) * 3600 + minute * 60 + second
    return seconds * 1_000_000 + micros, True


@numba.njit(inline="always")
def _integer_float_point(data, lo, hi):  # pragma: no cover (compiled)
    """Where an integer float (`-?digits.0+`, csvgz.INTEGER_FLOAT_FIELD) has its point, else `hi`."""
    at = lo + 1 if data[lo] == _MINUS else lo
    point = at
    while point < hi and _ZERO <= data[point] <= _NINE:
        point += 1
    if point == at or point + 1 >= hi or data[point] != _POINT:
        return hi
    for k in range(point + 1, hi):
        if data[k] != _ZERO:
            return hi
    return point


@numba.njit(inline="always")
def _integer(data, lo, hi, normalize):  # pragma: no cover (compiled)
    """`-?digits` (with `normalize`, also an integer float's `.0+` after them) as an int4, and
    whether it is one."""
    if normalize:
        hi = _integer_float_point(data, lo, hi)
    at = lo + 1 if data[lo] == _MINUS else lo
    value = _digits(data, at, hi - at) if 0 < hi - at <= 10 else -1
    if value < 0:
        return 0, False
    value = -value if at > lo else value
    return value, -(2**31) <= value <= 2**31 - 1


@numba.njit(inline="always")
def _double(data, lo, hi):  # pragma: no cover (compiled)
    """`-?digits[.digits]` of at most 15 significant digits and 22 decimals, and whether it is one.

    Its digits as an integer below 2**53 divided by an exact power of ten: one correctly rounded
    division, so the value is strtod's (Postgres's) and Arrow's, bit for bit (Clinger's fast path).
    """
    negative = data[lo] == _MINUS
    mantissa, significant, decimals, point, digits = 0, 0, 0, False, 0
    for k in range(lo + 1 if negative else lo, hi):
        b = data[k]
        if _ZERO <= b <= _NINE:
            digits += 1
            if significant or b != _ZERO:
                significant += 1
            mantissa = mantissa * 10 + (b - _ZERO)
            if point:
                decimals += 1
        elif b == _POINT and not point:
            point = True
        else:
            return 0.0, False
    if not digits or significant > 15 or decimals > 22:
        return 0.0, False
    value = mantissa / POWERS[decimals]
    return -value if negative else value, True


@numba.njit(nogil=True, cache=True)
def _transcode(data, starts, stops, ids, kinds, normalize, part, parts):  # pragma: no cover (compiled)
    """Each line `data[starts[r]:stops[r]]` as a binary row (its id from `ids`, 32 bytes a row),
    into its part: the rows, each part's start and end, and -1, or the first line (index) the
    fast path does not take (a text byte outside printable ASCII, a number or time in another
    form, a wrong field count): the caller then parses the block with Arrow."""
    count, fields = len(starts), len(kinds)
    columns = fields + 1
    bounds = np.zeros(parts + 1, np.int64)
    for r in range(count):  # room: no field is longer in binary than 8 bytes or its text
        bounds[part[r] + 1] += 2 + 4 * columns + 32 + 8 * fields + stops[r] - starts[r]
    for p in range(parts):
        bounds[p + 1] += bounds[p]
    out = np.empty(bounds[parts], np.uint8)
    at = bounds[:parts].copy()
    scratch = np.empty(1, np.float64)
    bits = scratch.view(np.int64)
    for r in range(count):
        i = at[part[r]]
        _put(out, i, columns, 2)
        _put(out, i + 2, 32, 4)
        for k in range(32):
            out[i + 6 + k] = ids[32 * r + k]
        i += 38
        pos, stop = starts[r], stops[r]
        for c in range(fields):
            end = pos
            while end < stop and data[end] != _COMMA:
                end += 1
            if (end == stop) != (c == fields - 1):  # too few fields, or too many
                return out, bounds, at, r
            kind = kinds[c]
            if end == pos:  # an empty field: NULL
                _put(out, i, -1, 4)
                i += 4
            elif kind == TEXT:
                hi = end
                for k in range(pos, end):
                    if data[k] < 32 or data[k] > 126:  # Arrow checks anything else (UTF-8)
                        return out, bounds, at, r
                if normalize:  # an integer float's `.0+` dropped
                    hi = _integer_float_point(data, pos, end)
                _put(out, i, hi - pos, 4)
                for k in range(pos, hi):
                    out[i + 4 + k - pos] = data[k]
                i += 4 + hi - pos
            elif kind == INTEGER:
                value, ok = _integer(data, pos, end, normalize)
                if not ok:
                    return out, bounds, at, r
                _put(out, i, 4, 4)
                _put(out, i + 4, value, 4)
                i += 8
            elif kind == DOUBLE:
                number, ok = _double(data, pos, end)
                if not ok:
                    return out, bounds, at, r
                scratch[0] = number
                _put(out, i, 8, 4)
                _put(out, i + 4, bits[0], 8)
                i += 12
            else:
                value, ok = _timestamp(data, pos, end)
                if not ok:
                    return out, bounds, at, r
                _put(out, i, 8, 4)
                _put(out, i + 4, value, 8)
                i += 12
            pos = end + 1
        at[part[r]] = i
    return out, bounds, at, -1


def transcode(
    lines: TextLines, ids_hex: bytes, pg_types: Sequence[str], normalize: bool, part: np.ndarray, parts: int
) -> list[memoryview] | None:
    """An unquoted CSV block's `lines` as binary rows, each led by its hex id (`ids_hex`, 32
    bytes a row): one payload per part, as `encode` gives them for the same rows parsed by
    Arrow. None: a line is not in the forms this fast path reads (the caller parses the block
    with Arrow, which also words any error)."""
    data = np.frombuffer(lines.text, np.uint8)
    starts, stops = (np.ascontiguousarray(b, np.int64) for b in (lines.starts, lines.ends))
    ids = np.frombuffer(ids_hex, np.uint8)
    kinds = np.array([KINDS[t] for t in pg_types], np.int64)
    out, bounds, at, bad = _transcode(data, starts, stops, ids, kinds, normalize, np.array(part, np.uint8), parts)
    if bad >= 0:
        return None
    view = memoryview(out)
    return [view[bounds[p] : at[p]] for p in range(parts)]


def warm() -> None:
    """Compile the loops now, or load them from the cache: an image's build does, so that its
    containers' first load does not wait for the compiler."""
    encode([pa.array([1], pa.int32())], ["integer"], np.zeros(1, np.uint8), 1)
    transcode(TextLines.of(b"1\n", np.zeros(1, np.int64)), b"0" * 32, ["integer"], False, np.zeros(1, np.uint8), 1)
