"""Arrow's CSV text of a canonical batch (the TLC rows' ids hash it), written by a compiled loop.

Arrow's CSV writer took 3.5 of the 6.8 CPU-s extract spent on a 3 M-row fhvhv month. This loop
writes the same bytes for the forms a canonical row holds: strings quoted (a quote doubled),
integers, timestamps as `YYYY-MM-DD HH:MM:SS.ffffff`, NULL as nothing, and floats of at most 15
significant digits between 1e-6 and 1e9 in their shortest round-trip form, which Arrow writes
in plain decimals there. A batch holding anything else (a float outside that range or longer, a
line break in a string, a year before 1000) is left to Arrow's writer (`render` gives None), so
an id never depends on this loop alone: tests/test_csvlines.py holds it to Arrow byte for byte.

The shortest form: the fewest decimals k for which the nearest integer m to |x|·10^k gives back
|x| as m / 10^k. Below 10^15, m / 10^k is one correctly rounded division of exact values
(Clinger), so the check is exact, and the k-decimal number that rounds to x is unique: it is the
shortest, closest form every shortest-float algorithm finds.
"""

from __future__ import annotations

from datetime import date

import numba
import numpy as np
import pyarrow as pa

from taxi_assets.compiled import POWERS, fixed_values, text_buffers, validity

TEXT, INTEGER, FLOAT, TIMESTAMP = 0, 1, 2, 3
_QUOTE, _COMMA, _MINUS, _POINT, _ZERO = 34, 44, 45, 46, 48
_MICROS_PER_DAY = 86_400_000_000
_1970 = date(1970, 1, 1).toordinal()
# 1970-01-01 in microseconds since 0000-03-01, where civil_from_days counts from (year 0 is a
# leap year: 365 days to 0001-03-01); the years this loop writes (four digits) in microseconds
# since 1970, the last bound exclusive.
_MICROS_FROM_0000 = (_1970 - date(1, 3, 1).toordinal() + 365) * _MICROS_PER_DAY
_FIRST = (date(1000, 1, 1).toordinal() - _1970) * _MICROS_PER_DAY
_END = (date(9999, 12, 31).toordinal() + 1 - _1970) * _MICROS_PER_DAY
_PAIRS = np.frombuffer("".join(f"{n:02d}" for n in range(100)).encode(), np.uint8)  # "000102…99"


@numba.njit(inline="always")
def _digit_count(value):  # pragma: no cover (compiled)
    """How many decimal digits a non-negative integer has (unsigned arithmetic, as below)."""
    value = np.uint64(value)
    digits = 1
    value //= np.uint64(10)
    while value:
        digits += 1
        value //= np.uint64(10)
    return digits


@numba.njit(inline="always")
def _integer(out, i, value):  # pragma: no cover (compiled)
    """`value` in decimal at `out[i]`; the index after it."""
    if value < 0:
        out[i] = _MINUS
        i += 1
        value = -value
    return _padded(out, i, value, _digit_count(value))


@numba.njit(inline="always")
def _padded(out, i, value, width):  # pragma: no cover (compiled)
    """A non-negative `value` in `width` digits at `out[i]`, in unsigned arithmetic: a division
    by a constant is then a multiplication alone, without signed division's corrections."""
    value = np.uint64(value)
    for k in range(width - 1, -1, -1):
        out[i + k] = _ZERO + value % np.uint64(10)
        value //= np.uint64(10)
    return i + width


@numba.njit(inline="always")
def _float(out, i, x, negative_zero):  # pragma: no cover (compiled)
    """`x` as Arrow writes it, at `out[i]`: the index after it, or -1 if it is not in the forms
    this loop writes."""
    if x == 0.0:
        if negative_zero:
            out[i] = _MINUS
            i += 1
        out[i] = _ZERO
        return i + 1
    magnitude = -x if x < 0.0 else x
    if not (1e-6 <= magnitude < 1e9):
        return -1
    m = np.floor(magnitude * 100.0 + 0.5)  # cents first: one division for most amounts
    if m < 1e15 and m / 100.0 == magnitude:
        k, mantissa = 2, np.uint64(m)
        while k and mantissa % np.uint64(10) == 0:  # fewer decimals: the same (unique) number
            mantissa //= np.uint64(10)
            k -= 1
    else:  # no k <= 2 gives it back
        k, m = 3, np.floor(magnitude * 1000.0 + 0.5)
        while m / POWERS[k] != magnitude:
            k += 1
            if k > 21:
                return -1
            m = np.floor(magnitude * POWERS[k] + 0.5)
        if m >= 1e15:
            return -1
        mantissa = np.uint64(m)
    if x < 0.0:
        out[i] = _MINUS
        i += 1
    width = max(_digit_count(mantissa), k + 1)  # `0.000015`: zeros before the digits
    end = i + width + (1 if k else 0)
    at = end - 1
    for d in range(width):  # from the last digit back, the point before the k-th
        if k and d == k:
            out[at] = _POINT
            at -= 1
        out[at] = _ZERO + mantissa % np.uint64(10)
        mantissa //= np.uint64(10)
        at -= 1
    return end


@numba.njit(inline="always")
def _two(out, i, value):  # pragma: no cover (compiled)
    """`value` (0-99) as two digits at `out[i]`, from the pairs table: one lookup, no division."""
    out[i] = _PAIRS[2 * value]
    out[i + 1] = _PAIRS[2 * value + 1]


_U = np.uint64


@numba.njit(inline="always")
def _timestamp(out, i, micros):  # pragma: no cover (compiled)
    """`YYYY-MM-DD HH:MM:SS.ffffff` at `out[i]`: the index after it, or -1 for a year outside
    1000-9999. The date by Howard Hinnant's civil_from_days, counted from 0000-03-01 so that
    every quantity is unsigned: a division by a constant then compiles to a multiplication
    alone, without signed division's corrections (41 ns a timestamp became 25)."""
    if micros < _FIRST or micros >= _END:
        return -1
    since = _U(micros + _MICROS_FROM_0000)
    days = since // _U(_MICROS_PER_DAY)
    rest = since - days * _U(_MICROS_PER_DAY)
    era = days // _U(146_097)
    doe = days - era * _U(146_097)
    yoe = (doe - doe // _U(1460) + doe // _U(36524) - doe // _U(146_096)) // _U(365)
    doy = doe - (_U(365) * yoe + yoe // _U(4) - yoe // _U(100))
    mp = (_U(5) * doy + _U(2)) // _U(153)
    day = doy - (_U(153) * mp + _U(2)) // _U(5) + _U(1)
    month = mp + _U(3) if mp < _U(10) else mp - _U(9)
    year = yoe + era * _U(400) + (_U(1) if month <= _U(2) else _U(0))
    _two(out, i, year // _U(100))
    _two(out, i + 2, year % _U(100))
    out[i + 4] = _MINUS
    _two(out, i + 5, month)
    out[i + 7] = _MINUS
    _two(out, i + 8, day)
    out[i + 10] = 32
    seconds = rest // _U(1_000_000)
    fraction = rest - seconds * _U(1_000_000)
    _two(out, i + 11, seconds // _U(3600))
    out[i + 13] = 58
    _two(out, i + 14, seconds // _U(60) % _U(60))
    out[i + 16] = 58
    _two(out, i + 17, seconds % _U(60))
    out[i + 19] = _POINT
    _two(out, i + 20, fraction // _U(10_000))
    _two(out, i + 22, fraction // _U(100) % _U(100))
    _two(out, i + 24, fraction % _U(100))
    return i + 26


@numba.njit(nogil=True, cache=True)
def _render(count, columns, kinds, rows, numbers, offsets, texts, valid, nulls):  # pragma: no cover (compiled)
    """The rows' lines, each ending LF, and where each ends (its LF); ok False: a value this loop
    does not write (the caller renders the batch with Arrow)."""
    room = 0
    for c in range(columns):
        if kinds[c] == TEXT:
            room += 3 * count + 2 * (offsets[rows[c], count] - offsets[rows[c], 0])  # quotes, each doubled
        else:
            room += 32 * count
    out = np.empty(room + count * columns, np.uint8)
    ends = np.empty(count, np.int64)
    scratch = np.empty(1, np.int64)
    as_float = scratch.view(np.float64)
    i = 0
    for r in range(count):
        for c in range(columns):
            if c:
                out[i] = _COMMA
                i += 1
            if not valid[nulls[c], r]:
                continue  # NULL: nothing between the commas
            kind, row = kinds[c], rows[c]
            if kind == TEXT:
                out[i] = _QUOTE
                i += 1
                for k in range(offsets[row, r], offsets[row, r + 1]):
                    b = texts[k]
                    if b == 10 or b == 13:
                        return out[:0], ends, False
                    out[i] = b
                    i += 1
                    if b == _QUOTE:
                        out[i] = _QUOTE
                        i += 1
                out[i] = _QUOTE
                i += 1
            elif kind == INTEGER:
                value = numbers[row, r]
                i = _integer(out, i, value) if -(2**62) < value < 2**62 else -1
            elif kind == FLOAT:
                scratch[0] = numbers[row, r]
                i = _float(out, i, as_float[0], scratch[0] < 0)
            else:
                i = _timestamp(out, i, numbers[row, r])
            if i < 0:
                return out[:0], ends, False
        out[i] = 10
        ends[r] = i
        i += 1
    return out[:i], ends, True


_KINDS = {"string": TEXT, "int64": INTEGER, "double": FLOAT, "timestamp[us]": TIMESTAMP}


def render(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray] | None:
    """The batch's rows as Arrow's CSV writer writes them (no header): the text, each line
    ending LF, and the offset of each LF. None: the batch holds a type or a value this loop does
    not write; Arrow's writer must render it.

    The columns go to the loop as matrices (a row per numeric column, per text column's offsets
    into all their bytes end to end, per column with NULLs): plain 2-D indexing, where a tuple
    of arrays cost the loop a dispatch per field."""
    count, columns = batch.num_rows, batch.num_columns
    if not count:
        return None
    kinds = np.empty(columns, np.int64)
    rows = np.empty(columns, np.int64)  # each column's row in its matrix
    numeric = [c for c in batch.columns if str(c.type) != "string"]
    numbers = np.empty((len(numeric), count), np.int64)
    offsets = np.empty((columns - len(numeric), count + 1), np.int64)
    valid = np.ones((1 + sum(bool(c.null_count) for c in batch.columns), count), np.uint8)  # row 0: all valid
    nulls = np.zeros(columns, np.int64)  # each column's row in `valid`
    texts, at = [], 0
    for c, column in enumerate(batch.columns):
        kind = _KINDS.get(str(column.type))
        if kind is None:
            return None
        kinds[c] = kind
        if column.null_count:
            nulls[c] = 1 + int(nulls.max())
            valid[nulls[c]] = validity(column)
        if kind == TEXT:
            rows[c] = len(texts)
            starts, data = text_buffers(column)
            offsets[rows[c]] = starts - starts[0] + at
            texts.append(data[starts[0] : starts[-1]])
            at += int(starts[-1] - starts[0])
        else:  # a float's 8 bytes as an int64's: the loop reads them back as a float
            rows[c] = c - len(texts)
            numbers[rows[c]] = fixed_values(column, np.int64)
    text = np.concatenate(texts) if texts else np.empty(0, np.uint8)
    lines, ends, ok = _render(count, columns, kinds, rows, numbers, offsets, text, valid, nulls)
    return (lines, ends) if ok else None


def warm() -> None:
    """Compile the loop now, or load it from the cache (an image's build does)."""
    render(pa.record_batch([pa.array([1.5])], names=["x"]))
