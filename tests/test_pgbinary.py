"""The binary COPY rows: a CSV's lines transcoded straight to them give, byte for byte, what
Arrow's parse of the same lines encodes; a line the fast path does not read goes to Arrow."""

from __future__ import annotations

import binascii
import gzip
import hashlib

import numpy as np
import pyarrow as pa
import pytest

from taxi_assets import pgbinary
from taxi_assets.datasets import FHV, MIRROR_DATASETS, YELLOW
from taxi_assets.errors import BadFileError
from taxi_assets.monthfile import TextLines, csvgz, open_month_file
from taxi_assets.months import Month
from taxi_assets.rows import fixed_width
from taxi_assets.samples.mirror_data import write_month

JAN = Month(2019, 1)


def _halves(digests: bytes) -> np.ndarray:
    return np.frombuffer(digests, np.uint8)[::16] >= 0x80


def _both_ways(month_file, text: bytes, ends: np.ndarray, first_row: int = 1):
    """The block's rows by the fast path (None if it declines) and by Arrow's parse, encoded."""
    ds = month_file.dataset
    lines = [text[s:e].rstrip(b"\r") for s, e in zip([0, *(ends[:-1] + 1)], ends, strict=True)]
    digests = b"".join(hashlib.md5(line).digest() for line in lines)
    hexed, part = binascii.hexlify(digests), _halves(digests)
    pg_types = [c.pg_type for c in ds.columns]
    normalize = bool(ds.integer_float_columns)
    block = TextLines.of(text, ends, crlf=text.endswith(b"\r\n"))
    fast = pgbinary.transcode(block, hexed, pg_types, normalize, part, 2)
    parsed = csvgz._BlockParser(ds, month_file.name, month_file.place)(text, ends, first_row)
    columns = [fixed_width(hexed, len(ends), 32, as_text=True), *parsed.columns]
    arrow = pgbinary.encode(columns, ["text", *pg_types], part, 2)
    return (None if fast is None else [bytes(h) for h in fast]), [bytes(h) for h in arrow]


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("ds", MIRROR_DATASETS.values(), ids=lambda d: d.taxi)
def test_a_month_transcoded_is_byte_for_byte_what_arrow_s_parse_encodes(tmp_path, ds, crlf):
    path = tmp_path / ds.file_name(JAN)
    write_month(path, ds, JAN, 3_000, crlf=crlf, seed=4)  # empty fields, `.80`, fhv's `264.0`
    month_file = open_month_file(path, ds)
    blocks = 0
    for text, ends, quoted in month_file.text_blocks():
        assert not quoted
        fast, arrow = _both_ways(month_file, text, ends)
        assert fast is not None, "the generated month is all in the forms the fast path reads"
        assert fast == arrow
        blocks += 1
    assert blocks


YELLOW_FIELDS = {  # the kind of field each column of a yellow line holds, in order
    "text": 0,
    "timestamp": 1,
    "integer": 3,
    "double precision": 4,
}
LINE = "1,2019-01-01 00:46:40,2019-01-01 00:53:20,1,1.50,1,N,151,239,1,7,0.5,0.5,1.65,0,0.3,9.95,"


@pytest.mark.parametrize(
    ("kind", "value", "fast"),
    [
        ("double precision", "5.", True),
        ("double precision", ".5", True),
        ("double precision", "-0", True),
        ("double precision", "-.30", True),
        ("double precision", "007.50", True),
        ("double precision", "123456789012345", True),
        ("double precision", "0.30000000000000004", False),  # 17 digits: beyond the exact fast path
        ("double precision", "1e5", False),
        ("double precision", " 5", False),
        ("integer", "-2147483648", True),
        ("integer", "2147483647", True),
        ("integer", "007", True),
        ("timestamp", "2020-02-29 23:59:59", True),
        ("timestamp", "2019-01-01 00:00:00.5", True),
        ("timestamp", "2019-01-01 00:00:00.123456", True),
        ("timestamp", "0001-01-01 00:00:00", True),
        ("timestamp", "2019-01-01T00:00:00", False),
        ("text", "Y", True),
        ("text", "café", False),  # not ASCII: Arrow checks its UTF-8
    ],
)
def test_a_field_either_transcodes_to_arrow_s_value_or_goes_to_arrow(tmp_path, kind, value, fast):
    ds = YELLOW
    fields = LINE.split(",")
    fields[YELLOW_FIELDS[kind]] = value
    text = (",".join(fields) + "\n").encode()
    month_file = open_month_file(tmp_path / ds.file_name(JAN), ds)
    got, arrow = _both_ways(month_file, text, np.array([len(text) - 1]))
    assert (got is not None) == fast
    if fast:
        assert got == arrow


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        (
            "timestamp",
            "2019-02-29 00:00:00",
            "column tpep_pickup_datetime: invalid input for timestamp: '2019-02-29 00:00:00'",
        ),
        ("integer", "2147483648", "column passenger_count: invalid input for integer: '2147483648'"),
        ("double precision", "12.3.4", "column trip_distance: invalid input for double precision: '12.3.4'"),
    ],
)
def test_a_field_neither_path_reads_fails_at_its_line_and_column(tmp_path, kind, value, message):
    fields = LINE.split(",")
    fields[YELLOW_FIELDS[kind]] = value
    good = LINE.encode() + b"\n"
    text = good * 5 + (",".join(fields) + "\n").encode() + good
    ends = np.flatnonzero(np.frombuffer(text, np.uint8) == ord("\n"))
    month_file = open_month_file(tmp_path / YELLOW.file_name(JAN), YELLOW)
    with pytest.raises(BadFileError) as caught:
        _both_ways(month_file, text, ends, first_row=11)  # the block's 6th row is the file's 16th: line 17
    assert str(caught.value) == f"line 17 of {YELLOW.file_name(JAN)}, {message}"


def test_a_carriage_return_inside_a_line_is_refused_at_its_line(tmp_path):
    ds = YELLOW
    text = (LINE + "\n" + LINE.replace(",N,", ",N\r,") + "\n").encode()
    month_file = open_month_file(tmp_path / ds.file_name(JAN), ds)
    with pytest.raises(BadFileError, match="^line 3 of .*: a carriage return inside a line"):
        _both_ways(month_file, text, np.flatnonzero(np.frombuffer(text, np.uint8) == ord("\n")))


def test_an_integer_float_is_its_integer_in_text_and_integer_columns(tmp_path):
    path = tmp_path / FHV.file_name(JAN)
    write_month(path, FHV, JAN, 200, crlf=False, seed=1)
    month_file = open_month_file(path, FHV)
    text, ends, _ = next(month_file.text_blocks())
    assert b".0," in text or text.count(b".0\n")  # the generated fhv month prints some as floats
    parsed = csvgz._BlockParser(FHV, month_file.name, month_file.place)(text, ends, 1)
    for column in FHV.integer_float_columns:
        values = parsed.column(FHV.column_index(column))
        assert not any(v is not None and str(v).endswith(".0") for v in values.to_pylist())


def test_encode_refuses_an_integer_beyond_postgres_s_integer():
    with pytest.raises(ValueError, match="beyond Postgres's integer"):
        pgbinary.encode([pa.array([2**31], pa.int64())], ["integer"], np.zeros(1, np.uint8), 1)


def test_a_gzip_month_s_load_rows_come_in_two_halves_by_id(tmp_path):
    ds = YELLOW
    path = tmp_path / ds.file_name(JAN)
    write_month(path, ds, JAN, 1_000, seed=2)
    month_file = open_month_file(path, ds)
    rows = [0, 0]
    with month_file.row_ids() as ids:
        for halves, digests in month_file.copy_halves(ids, _halves):
            second = int(_halves(digests).sum())
            for half, count in ((0, len(digests) // 16 - second), (1, second)):
                rows[half] += count
                # each row starts with its field count (the id and the columns)
                assert bytes(halves[half][:2]) == (len(ds.columns) + 1).to_bytes(2, "big") or not count
    assert sum(rows) == 1_000 and all(rows)
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 1_001
