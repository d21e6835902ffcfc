"""The dataset facts and the row reader: headers, line endings, row ids, duplicates."""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import tempfile

import pytest
from helpers import FIXTURES, gzip_fixture

from taxi_assets.datasets import FHV, GREEN, MIRROR_DATASETS, YELLOW, dataset
from taxi_assets.errors import BadFileError
from taxi_assets.monthfile import RowIds, csvgz, row_id, write_row_ids
from taxi_assets.monthfile.csvgz import data_lines
from taxi_assets.months import Month, mirror_months
from taxi_assets.rows import DuplicateCounter, copy_rows, payload
from taxi_assets.samples.mirror_data import header

# Published headers, verbatim (../shared/reference/data.md).
YELLOW_HEADER = "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,RatecodeID,store_and_fwd_flag,PULocationID,DOLocationID,payment_type,fare_amount,extra,mta_tax,tip_amount,tolls_amount,improvement_surcharge,total_amount,congestion_surcharge"
GREEN_HEADER = "VendorID,lpep_pickup_datetime,lpep_dropoff_datetime,store_and_fwd_flag,RatecodeID,PULocationID,DOLocationID,passenger_count,trip_distance,fare_amount,extra,mta_tax,tip_amount,tolls_amount,ehail_fee,improvement_surcharge,total_amount,payment_type,trip_type,congestion_surcharge"
FHV_2019_HEADER = (
    "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag,Affiliated_base_number"
)
FHV_2020_HEADER = (
    "dispatching_base_num,pickup_datetime,dropoff_datetime,PULocationID,DOLocationID,SR_Flag,Affiliated_base_number"
)


@pytest.mark.parametrize(
    "ds, published",
    [(YELLOW, YELLOW_HEADER), (GREEN, GREEN_HEADER), (FHV, FHV_2019_HEADER), (FHV, FHV_2020_HEADER)],
)
def test_published_headers_match_case_insensitively(ds, published):
    assert ds.header_problem(published.split(",")) is None


def test_a_header_of_another_taxi_type_is_refused_with_the_difference():
    problem = GREEN.header_problem(YELLOW_HEADER.split(","))
    assert "tpep_pickup_datetime" in problem and "lpep_pickup_datetime" in problem


def test_sql_names_are_lower_case_and_tables_follow_the_course():
    assert YELLOW.sql_names[:3] == ("vendorid", "tpep_pickup_datetime", "tpep_dropoff_datetime")
    assert {d.table for d in MIRROR_DATASETS.values()} == {"green_tripdata", "yellow_tripdata", "fhv_tripdata"}
    assert GREEN.file_name(Month(2019, 1)) == "green_tripdata_2019-01.csv.gz"
    assert (
        GREEN.url("https://x/releases/download/", Month(2021, 7))
        == "https://x/releases/download/green/green_tripdata_2021-07.csv.gz"
    )


def test_published_months_are_2019_01_to_2021_07():
    months = [str(m) for m in mirror_months()]
    assert (months[0], months[-1], len(months)) == ("2019-01", "2021-07", 31)
    with pytest.raises(ValueError, match="YYYY-MM"):
        Month.parse("2019-13")
    with pytest.raises(ValueError, match="unknown taxi type"):
        dataset("blue")


def test_generated_fhv_2019_files_use_the_2019_header_casing():
    assert ",".join(header(FHV, Month(2019, 5))) == FHV_2019_HEADER
    assert ",".join(header(FHV, Month(2020, 5))) == FHV_2020_HEADER


def _copy_payload(path, ds, **options) -> bytes:
    """What load-postgres sends to COPY: the rows with their ids, a line each."""
    rows = copy_rows(csvgz.CsvGzFile(path, ds).text_blocks(), **options)
    return b"".join(bytes(payload(block)) for block, _ in rows)


def _ids(path, ds):
    payload = _copy_payload(path, ds, normalize_integer_floats=False, duplicates=DuplicateCounter())
    return [line.split(b",", 1)[0].decode() for line in payload.splitlines()]


def test_row_id_is_the_md5_of_the_published_fields(tmp_path):
    path = gzip_fixture("yellow_tripdata_2020-07_head266.csv", tmp_path / "yellow_tripdata_2020-07.csv.gz")
    lines = (FIXTURES / "yellow_tripdata_2020-07_head266.csv").read_text().splitlines()[1:]
    ids = _ids(path, YELLOW)
    assert len(ids) == 266
    assert ids == [hashlib.md5(line.encode()).hexdigest() for line in lines]
    assert ids[0] == row_id(lines[0].split(","))


def test_crlf_and_lf_files_give_the_same_rows_and_ids(tmp_path):
    lf = gzip_fixture("yellow_tripdata_2020-07_head266.csv", tmp_path / "lf" / "y.csv.gz")
    crlf = gzip_fixture("yellow_tripdata_2020-07_head266.csv", tmp_path / "crlf" / "y.csv.gz", crlf=True)
    assert b"\r\n" in gzip.decompress(crlf.read_bytes())
    assert _ids(lf, YELLOW) == _ids(crlf, YELLOW)


def test_quoted_fields_hash_like_their_unquoted_values(tmp_path):
    plain = tmp_path / "plain.csv.gz"
    quoted = tmp_path / "quoted.csv.gz"
    row = [
        "1",
        "2020-07-01 00:25:32",
        "2020-07-01 00:33:39",
        "1",
        "1.50",
        "1",
        "N",
        "238",
        "75",
        "2",
        "8",
        "0.5",
        "0.5",
        "0",
        "0",
        "0.3",
        "9.3",
        "0",
    ]
    plain.write_bytes(gzip.compress((YELLOW_HEADER + "\n" + ",".join(row) + "\n").encode()))
    quoted.write_bytes(gzip.compress((YELLOW_HEADER + "\n" + ",".join(f'"{v}"' for v in row) + "\n").encode()))
    assert _ids(plain, YELLOW) == _ids(quoted, YELLOW) == [row_id(row)]


def test_integer_floats_are_normalized_but_hashed_as_published(tmp_path):
    path = tmp_path / "fhv_tripdata_2020-01.csv.gz"
    line = "B00001,2020-01-01 00:15:00,2020-01-01 00:30:00,264.0,7,1.0,B00001"
    path.write_bytes(gzip.compress(f"{FHV_2020_HEADER}\n{line}\n".encode()))
    payload = _copy_payload(path, FHV, normalize_integer_floats=True, duplicates=DuplicateCounter())
    assert (
        payload.decode()
        == f"{hashlib.md5(line.encode()).hexdigest()},B00001,2020-01-01 00:15:00,2020-01-01 00:30:00,264,7,1,B00001\n"
    )


def test_duplicate_counter_is_exact_across_flushes(monkeypatch):
    monkeypatch.setattr(DuplicateCounter, "FLUSH_ROWS", 1_000)
    counter = DuplicateCounter()
    digests = [hashlib.md5(str(i % 4_500).encode()).digest() for i in range(5_000)]  # 500 repeats
    for start in range(0, len(digests), 700):
        counter.add(b"".join(digests[start : start + 700]))
    assert counter.duplicates() == 500


def test_truncated_gzip_is_reported_after_the_rows_that_came_before(tmp_path):
    path = tmp_path / "y.csv.gz"
    whole = gzip_fixture("yellow_tripdata_2020-07_head266.csv", tmp_path / "whole.csv.gz").read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadFileError, match="truncated"):
        _, blocks = data_lines(path, YELLOW)
        list(blocks)


def test_blank_line_and_wrong_header_are_refused(tmp_path):
    blank = tmp_path / "blank.csv.gz"
    blank.write_bytes(gzip.compress(f"{YELLOW_HEADER}\n1,2\n\n3,4\n".encode()))
    with pytest.raises(BadFileError, match="blank line"):
        list(data_lines(blank, YELLOW)[1])
    wrong = tmp_path / "wrong.csv.gz"
    wrong.write_bytes(gzip.compress(f"{GREEN_HEADER}\n".encode()))
    with pytest.raises(BadFileError, match="does not have the yellow header"):
        data_lines(wrong, YELLOW)


def test_the_fixture_zone_table_is_the_published_one():
    with open(FIXTURES / "taxi_zone_lookup.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["LocationID", "Borough", "Zone", "service_zone"] and len(rows) == 266
    assert (FIXTURES / "taxi_zone_lookup.csv").stat().st_size == 12_322


# Blank lines: a trailing newline too many (an editor's, a tool's) is no reason to refuse a
# month; a blank line between rows still is.

_ROWS = [f"1,2019-01-01 00:0{i}:00,{i}" for i in range(5)]


def _gz(tmp_path, text: str, name="y.csv.gz"):
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    return path


def _lines(path, ds) -> list[bytes]:
    _, blocks = data_lines(path, ds)
    return [line for lines, _ in blocks for line in lines]


def _data(path, ds=YELLOW) -> list[bytes]:
    """The file's data lines; the load's reader (lines kept whole, checked with numpy, not
    split) gives the very same lines, or refuses the file with the very same error."""
    try:
        text = b"".join(block for block, _, _ in csvgz.CsvGzFile(path, ds).text_blocks())
    except BadFileError as exc:
        with pytest.raises(BadFileError) as same:
            _lines(path, ds)
        assert str(same.value) == str(exc)
        raise
    lines = _lines(path, ds)
    eol = b"\r\n" if text.endswith(b"\r\n") else b"\n"
    assert (text.split(eol)[:-1] if text else []) == lines
    return lines


@pytest.fixture(params=[None, 7], ids=["1MB-blocks", "7-byte-blocks"])
def block_size(request, monkeypatch):
    """Real-size blocks, and tiny ones: blank lines then straddle many block boundaries."""
    if request.param:
        monkeypatch.setattr(csvgz, "CHUNK_BYTES", request.param)


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("blanks", [1, 3])
def test_blank_lines_at_the_end_are_no_rows(tmp_path, block_size, eol, blanks):
    path = _gz(tmp_path, eol.join([YELLOW_HEADER, *_ROWS]) + eol + eol * blanks)
    assert _data(path) == [r.encode() for r in _ROWS]


def test_blank_lines_at_the_end_of_a_file_without_a_last_line_ending(tmp_path, block_size):
    """Mixed endings in the blank tail (`\\r\\n` then `\\n`), and a tail of whitespace only."""
    path = _gz(tmp_path, "\r\n".join([YELLOW_HEADER, *_ROWS]) + "\r\n\r\n\n\r\n ")
    assert _data(path) == [r.encode() for r in _ROWS]


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("where", ["after the header", "between rows", "before the last row"])
def test_a_blank_line_before_a_row_is_still_refused(tmp_path, block_size, eol, where):
    lines = [YELLOW_HEADER, *_ROWS]
    at = {"after the header": 1, "between rows": 3, "before the last row": len(lines) - 1}[where]
    lines.insert(at, "")
    path = _gz(tmp_path, eol.join(lines) + eol + eol)  # a blank tail too: only the inner one counts
    with pytest.raises(BadFileError, match=r"y\.csv\.gz has a blank line before a row"):
        _data(path)


def test_a_blank_line_before_a_last_row_without_a_line_ending_is_refused(tmp_path, block_size):
    path = _gz(tmp_path, "\n".join([YELLOW_HEADER, *_ROWS[:-1], "", _ROWS[-1]]))
    with pytest.raises(BadFileError, match="blank line before a row"):
        _data(path)


def test_a_header_and_blank_lines_only_has_no_rows(tmp_path):
    assert _data(_gz(tmp_path, YELLOW_HEADER + "\r\n\r\n\r\n")) == []
    with pytest.raises(BadFileError, match="is empty"):
        data_lines(_gz(tmp_path, "\n\n\n", "blank.csv.gz"), YELLOW)


def test_the_parquet_conversion_ignores_blank_lines_at_the_end(tmp_path):
    """upload-gcs reads the month through the same reader: same rows, no blank-line failure."""
    import pyarrow.parquet as pq

    from taxi_assets.parquet import write_parquet
    from taxi_assets.samples.mirror_data import write_month

    path = tmp_path / "yellow_tripdata_2019-01.csv.gz"
    write_month(path, YELLOW, Month(2019, 1), 300, crlf=True)
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"\r\n\r\n"))
    assert write_parquet(path, tmp_path / "y.parquet", YELLOW, Month(2019, 1)) == 300
    assert pq.read_metadata(tmp_path / "y.parquet").num_rows == 300


# The duplicate counter's spill: 16 MB per million rows, on disk but never under a name.


def test_the_duplicate_spill_lives_in_its_folder_and_has_no_name(tmp_path, monkeypatch):
    """Spilled digests go to a nameless file in `spill_dir`: a process killed mid-load leaves
    nothing behind (the kernel frees a nameless file), and nothing lands in the system temp."""
    monkeypatch.setattr(DuplicateCounter, "FLUSH_ROWS", 1_000)
    spill_dir, system_tmp = tmp_path / "state", tmp_path / "system-tmp"
    spill_dir.mkdir()
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    counter = DuplicateCounter(spill_dir=spill_dir)
    digests = [hashlib.md5(str(i % 9_000).encode()).digest() for i in range(10_000)]  # 1,000 repeats
    for start in range(0, len(digests), 700):
        counter.add(b"".join(digests[start : start + 700]))
    spill = os.readlink(f"/proc/self/fd/{counter._spill.fileno()}")
    assert spill.startswith(f"{spill_dir}/") and spill.endswith(" (deleted)")
    assert list(spill_dir.iterdir()) == [] and list(system_tmp.iterdir()) == []
    assert counter.duplicates() == 1_000
    assert counter._spill is None  # closed: its space is free


def test_a_duplicate_count_that_never_spills_touches_no_disk(tmp_path):
    counter = DuplicateCounter(spill_dir=tmp_path / "does-not-exist")
    counter.add(b"".join(hashlib.md5(str(i % 40).encode()).digest() for i in range(50)))
    assert counter.duplicates() == 10


@pytest.mark.parametrize("blank", ["\n", "\r\n"], ids=["LF blank among CRLF rows", "CRLF blank among LF rows"])
def test_a_blank_line_of_the_other_line_ending_is_a_blank_line_too(tmp_path, block_size, blank):
    eol = "\r\n" if blank == "\n" else "\n"
    text = eol.join([YELLOW_HEADER, *_ROWS[:2]]) + eol + blank + eol.join(_ROWS[2:]) + eol
    with pytest.raises(BadFileError, match="blank line before a row"):
        _data(_gz(tmp_path, text))


def test_an_lf_row_among_crlf_rows_is_refused(tmp_path):
    """Within a block; where the bare LF ends a block, COPY refuses the CR it leaves instead."""
    text = "\r\n".join([YELLOW_HEADER, *_ROWS[:2]]) + "\n" + "\r\n".join(_ROWS[2:]) + "\r\n"
    with pytest.raises(BadFileError, match="y.csv.gz mixes CRLF and LF line endings"):
        _data(_gz(tmp_path, text))


# Row ids computed once: extract writes them to the row-id file, every later step reads them.


def _payloads(path, **kwargs) -> bytes:
    return _copy_payload(path, YELLOW, normalize_integer_floats=False, **kwargs)


def _row_id_file(path, target, sha256="ab" * 32) -> int:
    _, blocks = data_lines(path, YELLOW)
    with open(target, "wb") as out:
        return write_row_ids(blocks, out, sha256)


def _with_quoted_rows(tmp_path):
    """The yellow fixture with a few rows quoted as a CSV writer might: hashed from their fields."""
    lines = (FIXTURES / "yellow_tripdata_2020-07_head266.csv").read_text().splitlines()
    lines[5] = ",".join(f'"{field}"' for field in lines[5].split(","))
    path = tmp_path / "yellow_tripdata_2020-07.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_row_ids_read_from_the_row_id_file_are_the_ids_hashed_from_the_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(csvgz, "CHUNK_BYTES", 1024)  # many blocks, one with quotes
    path = _with_quoted_rows(tmp_path)
    assert _row_id_file(path, tmp_path / "ids") == 266
    with RowIds.open(tmp_path / "ids", "ab" * 32, 266) as ids:
        from_file = _payloads(path, row_ids=ids)
        assert ids.at_end()
    assert from_file == _payloads(path)
    assert from_file.count(b"\n") == 266


def test_a_row_id_file_of_another_download_or_row_count_is_not_used(tmp_path):
    path = gzip_fixture("yellow_tripdata_2020-07_head266.csv", tmp_path / "y.csv.gz")
    _row_id_file(path, tmp_path / "ids", "ab" * 32)
    assert RowIds.open(tmp_path / "ids", "cd" * 32, 266) is None  # another download of the month
    assert RowIds.open(tmp_path / "ids", "ab" * 32, 265) is None  # not this file's row count
    assert RowIds.open(tmp_path / "missing", "ab" * 32, 266) is None
    with RowIds.open(tmp_path / "ids", "ab" * 32, 266) as ids:
        assert ids is not None


def test_row_ids_out_of_step_with_the_rows_are_refused(tmp_path):
    path = gzip_fixture("yellow_tripdata_2020-07_head266.csv", tmp_path / "y.csv.gz")
    _row_id_file(path, tmp_path / "ids")
    body = (tmp_path / "ids").read_bytes()
    shifted = body[:32] + body[48:] + body[32:48]  # every id one row late
    (tmp_path / "ids").write_bytes(shifted)
    with (
        RowIds.open(tmp_path / "ids", "ab" * 32, 266) as ids,
        pytest.raises(BadFileError, match="does not match the rows"),
    ):
        _payloads(path, row_ids=ids)


def test_helper_threads_are_waited_for_through_an_interrupt_which_is_raised_after():
    from taxi_assets.threads import wind_down

    calls = []

    def step() -> bool:  # the first call is interrupted (a second Ctrl-C), the second finds them ended
        calls.append(len(calls))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return True

    with pytest.raises(KeyboardInterrupt):
        wind_down(step)
    assert calls == [0, 1]
