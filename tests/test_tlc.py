"""The TLC's own Parquet files as a second source: every era cast into one canonical schema per
feed, row ids from one canonical rendering, CloudFront's answers (403, ETag), re-published
files, and the same rows in Postgres and BigQuery. The host is the local stand-in
(`taxi_assets.samples.tlc`): the real one cannot be reached from here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import run_cli, settings_env

from taxi_assets import ledger
from taxi_assets.datasets import TLC_DATASETS, TLC_FHVHV, TLC_YELLOW
from taxi_assets.errors import BadFileError, LoadError, NotPublishedError
from taxi_assets.files import local_path
from taxi_assets.gcp import bigquery_client
from taxi_assets.monthfile import month_of, open_month_file
from taxi_assets.monthfile import tlcparquet as tlc
from taxi_assets.months import Month
from taxi_assets.rows import copy_rows, payload
from taxi_assets.samples.tlc import TlcServer, tlc_era_schema, write_tlc_month
from taxi_assets.source import newest_published, remote_file
from taxi_assets.steps.bigquery import load_bigquery
from taxi_assets.steps.extract import extract
from taxi_assets.steps.gcp_setup import ensure_dataset
from taxi_assets.steps.gcs import ensure_bucket, upload_gcs
from taxi_assets.steps.postgres import load_postgres
from taxi_assets.stores import partition_name, table_id

ROWS = 400
LATEST = Month(2026, 8)

# One month of every era and type drift the facts describe (tlc.md), per feed.
ERAS = [
    ("yellow", "2009-01"),  # other names, timestamps as text, coordinates, words for codes
    ("yellow", "2010-02"),  # 2010 names and `__index_level_0__`
    ("yellow", "2015-06"),  # congestion_surcharge typed null
    ("yellow", "2019-05"),  # airport_fee typed null; double counts
    ("yellow", "2023-02"),  # `Airport_fee`, int32 ids, large strings
    ("yellow", "2024-04"),  # nanosecond timestamps
    ("yellow", "2025-01"),  # + cbd_congestion_fee
    ("yellow", "2026-06"),  # + request_source
    ("green", "2014-01"),
    ("green", "2019-10"),  # ehail_fee typed null
    ("green", "2023-02"),
    ("green", "2026-06"),
    ("fhv", "2015-01"),
    ("fhv", "2019-03"),  # SR_Flag typed null
    ("fhv", "2019-05"),  # int64 location ids (double around it)
    ("fhv", "2023-02"),
    ("fhvhv", "2019-02"),  # airport_fee and wav_match_flag typed null
    ("fhvhv", "2020-04"),
    ("fhvhv", "2025-01"),  # + cbd_congestion_fee
]


@pytest.fixture(scope="module")
def tlc_server(tmp_path_factory):
    server = TlcServer(tmp_path_factory.mktemp("trip-data"), rows=ROWS, latest=LATEST).start()
    yield server
    server.shutdown()


@pytest.fixture
def tlc_settings(settings, tlc_server):
    return replace(settings, tlc_url=tlc_server.url, http_retries=2)


def _canonical(path: Path, feed: str) -> pa.Table:
    return pa.Table.from_batches(list(tlc.canonical_batches(path, TLC_DATASETS[feed])))


@pytest.mark.parametrize(("feed", "month"), ERAS)
def test_every_era_reads_as_the_feeds_canonical_schema(tmp_path, feed, month):
    ds, m = TLC_DATASETS[feed], Month.parse(month)
    path = tmp_path / ds.file_name(m)
    write_tlc_month(path, feed, m, ROWS, seed=7)
    published = pq.read_table(path)
    table = _canonical(path, feed)
    assert table.schema.names == list(ds.sql_names)
    assert table.num_rows == ROWS
    assert [f.type for f in table.schema] == [tlc.arrow_type(c) for c in ds.columns]
    source = {name.lower(): name for name in published.column_names}
    renames = ds.era(m).renames
    for column in ds.sql_names:  # every value kept, or NULL where the month has no such column
        published_name = next((source[p] for p in source if renames.get(p, p) == column), None)
        got = table.column(column).to_pylist()
        if published_name is None or pa.types.is_null(published.schema.field(published_name).type):
            assert got == [None] * ROWS, column
            continue
        values = published.column(published_name)
        if pa.types.is_timestamp(values.type):  # whole seconds in every unit: exact in microseconds
            values = values.cast(pa.timestamp("us"))
        expected = values.to_pylist()
        text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
        if text and pa.types.is_timestamp(table.column(column).type):
            expected = [datetime.strptime(v, "%Y-%m-%d %H:%M:%S") if v else None for v in expected]
        if pa.types.is_string(table.column(column).type) and not text:
            got = [None if v is None else float(v) for v in got]  # a number published, kept as its text
        assert got == expected, column


@pytest.mark.parametrize(("feed", "month"), ERAS)
def test_every_era_loads_into_postgres(tlc_settings, feed, month):
    ds, m = TLC_DATASETS[feed], Month.parse(month)
    info = extract(tlc_settings, ds, m)
    with psycopg.connect(tlc_settings.postgres_dsn) as conn:
        report = load_postgres(conn, ds, m, Path(info.path), expected_rows=info.data_lines)
        distinct = conn.execute(
            f'SELECT count(DISTINCT unique_row_id), count(*) FILTER (WHERE filename = %s) FROM "{report.partition}"',
            (ds.file_name(m),),
        ).fetchone()
    assert report.table == f"tlc_{feed}_tripdata" and report.rows_loaded == ROWS == distinct[0] == distinct[1]
    assert 1 <= report.out_of_month_rows <= 2  # the generated months' stray pickups, kept and counted
    with psycopg.connect(tlc_settings.postgres_dsn) as conn:  # binary COPY stores what the canonical lines say
        assert _rows_unlike_a_text_copy(conn, ds, Path(info.path), report.partition) == (0, 0)


def _rows_unlike_a_text_copy(conn: psycopg.Connection, ds, path: Path, partition: str) -> tuple[int, int]:
    """Rows of the loaded month that a CSV COPY of its canonical lines (with extract's ids) would
    not store, and the other way round: what the binary load sends must mean the same rows."""
    columns = ", ".join(f'"{c}"' for c in ("unique_row_id", *ds.sql_names))
    conn.execute(f'CREATE TEMP TABLE as_text AS SELECT {columns} FROM "{partition}" WITH NO DATA')
    month_file = open_month_file(path, ds)
    with (
        month_file.recorded_row_ids() as ids,
        conn.cursor().copy(f"COPY as_text ({columns}) FROM STDIN (FORMAT csv)") as copy,
    ):
        for rows, _ in copy_rows(month_file.text_blocks(), normalize_integer_floats=False, row_ids=ids):
            copy.write(payload(rows))
    loaded, as_text = f'SELECT {columns} FROM "{partition}"', f"SELECT {columns} FROM as_text"
    return tuple(
        conn.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {b}) d").fetchone()[0]
        for a, b in ((loaded, as_text), (as_text, loaded))
    )


def test_older_yellow_years_keep_coordinates_and_have_no_zones(tmp_path):
    path = tmp_path / "yellow_tripdata_2009-01.parquet"
    write_tlc_month(path, "yellow", Month(2009, 1), ROWS)
    table = _canonical(path, "yellow")
    assert table.column("pulocationid").null_count == ROWS and table.column("vendorid").null_count == ROWS
    assert table.column("pickup_longitude").null_count < ROWS
    assert set(table.column("vendor_name").to_pylist()) <= {"VTS", "CMT", "DDS"}
    assert table.column("payment_type_name").null_count == 0
    assert str(table.column("tpep_pickup_datetime")[0].as_py()).startswith("2009-")  # parsed from text


def test_columns_that_differ_only_in_case_are_one_column(tmp_path):
    before, after = tmp_path / "yellow_tripdata_2023-01.parquet", tmp_path / "yellow_tripdata_2023-02.parquet"
    write_tlc_month(before, "yellow", Month(2023, 1), ROWS)
    write_tlc_month(after, "yellow", Month(2023, 2), ROWS)
    assert "airport_fee" in pq.read_schema(before).names and "Airport_fee" in pq.read_schema(after).names
    assert _canonical(after, "yellow").column("airport_fee").null_count < ROWS


def _one_row_month(path: Path, **columns) -> None:
    """A month file of `columns`; every other column its era has is there too, typed null."""
    dataset, month = TLC_DATASETS[path.name.split("_")[0]], month_of(path.name)
    era = dataset.era(month)
    given = {era.renames.get(name.lower(), name.lower()) for name in columns}
    rows = len(next(iter(columns.values())))
    nulls = {c: pa.nulls(rows) for c in dataset.sql_names if c not in given and c not in era.absent}
    pq.write_table(pa.table(columns | nulls), path)


def test_a_month_whose_columns_do_not_fit_fails_naming_them(tmp_path):
    path = tmp_path / "fhv_tripdata_2024-01.parquet"
    _one_row_month(
        path,
        dispatching_base_num=["B00001"],
        pickup_datetime=pa.array([datetime(2024, 1, 1)], pa.timestamp("us")),
        dropOff_datetime=pa.array([datetime(2024, 1, 1, 0, 5)], pa.timestamp("us")),
        PUlocationID=["seven"],  # text where an integer belongs
        surprise=[1],  # no fhv column of that name
    )
    with pytest.raises(BadFileError) as caught:
        open_month_file(path, TLC_DATASETS["fhv"]).read()
    message = str(caught.value)
    assert "PUlocationID (string cannot become integer pulocationid)" in message
    assert "surprise (no fhv column of that name)" in message
    assert "\n" not in message and "nothing loaded" in message


def test_a_fraction_in_an_integer_column_fails_the_month(tmp_path):
    path = tmp_path / "fhv_tripdata_2020-01.parquet"
    _fhv_month(path, PUlocationID=[7.5])
    with pytest.raises(BadFileError, match=r"column PUlocationID \(double\) does not fit integer"):
        list(open_month_file(path, TLC_DATASETS["fhv"]).read()[1])


def _fhv_month(path: Path, **columns) -> None:
    """A one-row fhv month of 2020-01: its required columns, replaced or joined by `columns`."""
    required = {
        "dispatching_base_num": ["B00001"],
        "pickup_datetime": pa.array([datetime(2020, 1, 1)], pa.timestamp("us")),
        "dropOff_datetime": pa.array([datetime(2020, 1, 1, 0, 5)], pa.timestamp("us")),
    }
    _one_row_month(path, **(required | columns))


@pytest.mark.parametrize(
    ("column", "values", "why"),
    [
        ("PUlocationID", pa.array([2**31], pa.int64()), "2147483648 is out of integer range"),
        ("pickup_datetime", pa.array([1_700_000_000_123_456_789], pa.timestamp("ns")), "would lose data"),
        ("pickup_datetime", pa.array(["2020-01-01"]), "Failed to parse string"),
    ],
)
def test_values_that_would_change_fail_the_month(tmp_path, column, values, why):
    path = tmp_path / "fhv_tripdata_2020-01.parquet"
    _fhv_month(path, **{column: values})
    with pytest.raises(BadFileError, match=f"column {column} .*{why}.*; nothing loaded"):
        list(open_month_file(path, TLC_DATASETS["fhv"]).read()[1])


def test_an_amount_that_is_not_a_number_fails_the_month(tmp_path):
    """Postgres would take NaN, BigQuery's NUMERIC would not: the month fails for both."""
    path = tmp_path / "fhvhv_tripdata_2024-01.parquet"
    _one_row_month(
        path,
        pickup_datetime=pa.array([datetime(2024, 1, 1)], pa.timestamp("us")),
        dropoff_datetime=pa.array([datetime(2024, 1, 1, 0, 5)], pa.timestamp("us")),
        base_passenger_fare=[float("nan")],
    )
    with pytest.raises(BadFileError, match=r"column base_passenger_fare \(double\) .* not a finite number"):
        list(open_month_file(path, TLC_FHVHV).read()[1])


def test_text_times_are_parsed_strictly_and_empty_ones_are_null(tmp_path):
    path = tmp_path / "yellow_tripdata_2009-01.parquet"
    _one_row_month(
        path,
        Trip_Pickup_DateTime=["2009-01-04 02:52:00", ""],
        Trip_Dropoff_DateTime=["2009-01-04 03:02:00", None],
    )
    table = _canonical(path, "yellow")
    assert table.column("tpep_pickup_datetime").to_pylist() == [datetime(2009, 1, 4, 2, 52), None]


def test_the_row_id_is_the_md5_of_the_canonical_line(tmp_path):
    """The rendering is pinned here: a pyarrow upgrade that renders a row differently fails this
    test rather than silently giving every row a new id."""
    path = tmp_path / "fhv_tripdata_2024-01.parquet"
    _one_row_month(
        path,
        dispatching_base_num=["B00001"],
        pickup_datetime=pa.array([datetime(2024, 1, 1, 0, 15)], pa.timestamp("us")),
        dropOff_datetime=pa.array([datetime(2024, 1, 1, 0, 41, 30)], pa.timestamp("us")),
        PUlocationID=pa.array([264.0]),
        DOlocationID=pa.array([None], pa.float64()),
        SR_Flag=pa.array([None], pa.null()),
        Affiliated_base_number=[""],
    )
    _, blocks = open_month_file(path, TLC_DATASETS["fhv"]).read()
    (lines, quoted), *_ = list(blocks)
    expected = b'"B00001",2024-01-01 00:15:00.000000,2024-01-01 00:41:30.000000,264,,,""'
    assert lines == [expected] and not quoted
    from taxi_assets.monthfile import block_digests

    assert block_digests(lines, quoted).hex() == hashlib.md5(expected).hexdigest()


def test_floats_render_in_their_shortest_round_trip_form(tmp_path):
    path = tmp_path / "fhvhv_tripdata_2024-01.parquet"
    _one_row_month(
        path,
        hvfhs_license_num=["HV0003"],
        pickup_datetime=pa.array([datetime(2024, 1, 1, 0, 15)], pa.timestamp("us")),
        dropoff_datetime=pa.array([datetime(2024, 1, 1, 0, 41, 30)], pa.timestamp("us")),
        PULocationID=pa.array([1], pa.int32()),
        trip_miles=[0.1 + 0.2],
        base_passenger_fare=[12.5],
    )
    (lines, _), *_ = list(open_month_file(path, TLC_FHVHV).read()[1])
    # 25 columns: 12 given or NULL up to base_passenger_fare, then 13 NULLs
    expected = b'"HV0003",,,,,2024-01-01 00:15:00.000000,2024-01-01 00:41:30.000000,1,,0.30000000000000004,,12.5'
    assert lines == [expected + b"," * 13]


def test_row_ids_do_not_change_with_type_drift(tmp_path):
    """The same trips published with int32 or int64 or double ids, string or large_string, us or
    ns timestamps get the same ids: the id describes the canonical row."""
    times = pa.array([datetime(2024, 1, 1, 0, 15), datetime(2024, 1, 2, 3, 4)], pa.timestamp("us"))

    def month(path, id_type, text_type, time_type):
        path.parent.mkdir()
        _one_row_month(
            path,
            hvfhs_license_num=pa.array(["HV0003", None], text_type),
            pickup_datetime=times.cast(time_type),
            dropoff_datetime=times.cast(time_type),
            PULocationID=pa.array([1, 265], id_type),
            trip_miles=[1.5, 0.30000000000000004],
        )
        return open_month_file(path, TLC_FHVHV).read()[1]

    a = list(month(tmp_path / "a" / "fhvhv_tripdata_2024-01.parquet", pa.int64(), pa.string(), pa.timestamp("us")))
    b = list(
        month(tmp_path / "b" / "fhvhv_tripdata_2024-01.parquet", pa.int32(), pa.large_string(), pa.timestamp("ns"))
    )
    c = list(month(tmp_path / "c" / "fhvhv_tripdata_2024-01.parquet", pa.float64(), pa.string(), pa.timestamp("ms")))
    assert a == b == c


def test_extract_verifies_and_records_the_file(tlc_settings, tlc_server):
    month = Month(2024, 1)
    info = extract(tlc_settings, TLC_FHVHV, month)
    assert info.downloaded and info.data_lines == ROWS == pq.read_metadata(info.path).num_rows
    assert Path(info.path) == tlc_settings.download_dir / "tlc" / "fhvhv" / "fhvhv_tripdata_2024-01.parquet"
    served = tlc_server.root / "fhvhv_tripdata_2024-01.parquet"
    assert info.sha256 == hashlib.sha256(served.read_bytes()).hexdigest()
    assert info.etag == f'"{hashlib.md5(served.read_bytes()).hexdigest()}"' and info.last_modified
    assert info.header == pq.read_schema(served).names  # as published
    before = len(tlc_server.requests)
    again = extract(tlc_settings, TLC_FHVHV, month, revalidate=True)
    assert not again.downloaded  # one HEAD asked whether the file changed: it did not
    assert [m for m, _ in tlc_server.requests[before:]] == ["HEAD"]
    extract(tlc_settings, TLC_FHVHV, month)  # a later step of the run: the verified copy, no request
    assert len(tlc_server.requests) == before + 1


def test_an_unpublished_month_is_one_403_and_one_clear_error(tlc_settings, tlc_server):
    now = datetime.now()
    month = max(LATEST.next(), Month(now.year, now.month))  # recent: an old month's 403 is a refusal
    before = len(tlc_server.requests)
    with pytest.raises(NotPublishedError) as caught:
        extract(tlc_settings, TLC_YELLOW, month)
    assert "not published yet" in str(caught.value) and "returned 403" in str(caught.value)
    assert tlc_server.requests[before:] == [("GET", f"/trip-data/yellow_tripdata_{month}.parquet")]  # no retries
    assert not local_path(tlc_settings, TLC_YELLOW, month).parent.exists() or not any(
        local_path(tlc_settings, TLC_YELLOW, month).parent.iterdir()
    )
    assert remote_file(tlc_settings, TLC_YELLOW, month) is None
    assert newest_published(tlc_settings, TLC_YELLOW, LATEST.next().next())[0] == LATEST


def test_server_errors_and_cut_transfers_are_retried(tlc_settings, tlc_server):
    month = Month(2024, 2)
    name = f"green_tripdata_{month}.parquet"
    tlc_server.break_next(name, 503)
    tlc_server.break_next(name, "truncate")
    info = extract(tlc_settings, TLC_DATASETS["green"], month)
    gets = [r for r in tlc_server.requests if r == ("GET", f"/trip-data/{name}")]
    assert len(gets) == 3 and info.data_lines == ROWS


def test_a_cut_file_is_refused_and_nothing_is_kept(tlc_settings, tlc_server, tmp_path):
    month = Month(2024, 3)
    served = tlc_server.root / f"fhv_tripdata_{month}.parquet"
    write_tlc_month(served, "fhv", month, ROWS)
    served.write_bytes(served.read_bytes()[: served.stat().st_size // 2])  # served whole: it is the file
    env = settings_env(tlc_settings)
    result = run_cli("extract", "--source", "tlc", "--taxi", "fhv", "--month", str(month), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: tlc_fhv 2024-03: downloaded file rejected")
    assert "not a complete Parquet file" in result.stderr
    assert not any(local_path(tlc_settings, TLC_DATASETS["fhv"], month).parent.iterdir())
    served.unlink()


def test_a_republished_file_is_downloaded_and_loaded_again(tlc_settings, tlc_server):
    ds, month = TLC_DATASETS["green"], Month(2024, 5)
    first = extract(tlc_settings, ds, month)
    with psycopg.connect(tlc_settings.postgres_dsn) as conn:
        load_postgres(conn, ds, month, Path(first.path), expected_rows=first.data_lines)
        assert ledger.held(tlc_settings, ledger.POSTGRES, ds, month, conn=conn).etag == first.etag
    tlc_server.republish("green", month, variant=3)
    assert not extract(tlc_settings, ds, month).downloaded  # a later step never asks: the run's copy
    second = extract(tlc_settings, ds, month, revalidate=True)
    assert second.downloaded and second.etag != first.etag and second.data_lines == ROWS + 3
    with psycopg.connect(tlc_settings.postgres_dsn) as conn:
        report = load_postgres(conn, ds, month, Path(second.path), expected_rows=second.data_lines)
        assert report.replaced_previous and report.rows_loaded == ROWS + 3
        origin = ledger.held(tlc_settings, ledger.POSTGRES, ds, month, conn=conn)
    assert (origin.etag, origin.bytes, origin.sha256) == (second.etag, second.bytes, second.sha256)


def test_a_host_out_of_reach_leaves_the_local_copy_in_use(tlc_settings, caplog):
    ds, month = TLC_DATASETS["green"], Month(2024, 7)
    first = extract(tlc_settings, ds, month)
    unreachable = replace(tlc_settings, tlc_url="http://127.0.0.1:9/trip-data")  # nothing listens on port 9
    again = extract(unreachable, ds, month, revalidate=True)
    assert not again.downloaded and again.sha256 == first.sha256
    assert "cannot ask the source whether it changed" in caplog.text and "using the local copy" in caplog.text


def test_bigquery_refuses_an_object_converted_from_an_older_download(cloud_settings, tlc_server):
    """The month re-published between upload-gcs and load-bigquery (another run re-downloaded
    it): the object is not the file the run now holds, so BigQuery keeps the month's rows."""
    settings = replace(cloud_settings, tlc_url=tlc_server.url)
    ds, month = TLC_DATASETS["yellow"], Month(2024, 8)
    ensure_bucket(settings)
    ensure_dataset(settings)
    first = extract(settings, ds, month)
    upload_gcs(settings, ds, month, Path(first.path))
    load_bigquery(settings, ds, month, first)
    tlc_server.republish("yellow", month, variant=1)
    second = extract(settings, ds, month, revalidate=True)
    with pytest.raises(LoadError, match="was converted from another download of the month .* run upload-gcs again"):
        load_bigquery(settings, ds, month, second)
    rows = bigquery_client(settings).query(f"SELECT COUNT(*) AS n FROM `{table_id(settings, ds)}`").result()
    assert next(iter(rows)).n == ROWS  # the first file's rows, kept
    upload_gcs(settings, ds, month, Path(second.path))
    report = load_bigquery(settings, ds, month, second)
    assert report.rows == ROWS + 1


def test_a_bad_republished_file_keeps_the_months_rows(tlc_settings, tlc_server):
    ds, month = TLC_DATASETS["fhv"], Month(2024, 6)
    info = extract(tlc_settings, ds, month)
    with psycopg.connect(tlc_settings.postgres_dsn) as conn:
        load_postgres(conn, ds, month, Path(info.path), expected_rows=info.data_lines)
    served = tlc_server.root / ds.file_name(month)
    _one_row_month(served, dispatching_base_num=["B1"], pickup_datetime=["noon"], dropOff_datetime=["later"])
    with pytest.raises(BadFileError, match="pickup_datetime"):
        extract(tlc_settings, ds, month, revalidate=True)
    with psycopg.connect(tlc_settings.postgres_dsn) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{partition_name(ds, month)}"').fetchone()[0] == ROWS
        assert ledger.held(tlc_settings, ledger.POSTGRES, ds, month, conn=conn).etag == info.etag
    served.unlink()


@pytest.mark.parametrize(("feed", "month"), [("yellow", "2010-02"), ("yellow", "2025-01"), ("fhvhv", "2019-02")])
def test_postgres_and_bigquery_hold_the_same_rows(cloud_settings, tlc_server, feed, month):
    """Every column of every row, compared value by value: ids, text (empty text apart from
    NULL), times, integers, and amounts (NUMERIC keeps 9 decimals of the double)."""
    settings = replace(cloud_settings, tlc_url=tlc_server.url)
    ds, m = TLC_DATASETS[feed], Month.parse(month)
    ensure_bucket(settings)
    ensure_dataset(settings)
    info = extract(settings, ds, m)
    columns = ["unique_row_id", *ds.sql_names]
    with psycopg.connect(settings.postgres_dsn) as conn:
        load_postgres(conn, ds, m, Path(info.path), expected_rows=info.data_lines)
        in_postgres = conn.execute(
            f'SELECT {", ".join(columns)} FROM "{partition_name(ds, m)}" ORDER BY unique_row_id COLLATE "C"'
        ).fetchall()
    upload_gcs(settings, ds, m, Path(info.path))
    load_bigquery(settings, ds, m, info)
    query = f"SELECT {', '.join(columns)} FROM `{table_id(settings, ds)}` WHERE month = '{m}-01'"
    in_bigquery = sorted(
        (tuple(r.values()) for r in bigquery_client(settings).query(query).result()), key=lambda r: r[0]
    )
    numeric = [c.bq_type == "NUMERIC" for c in ds.columns]

    def normal(row: tuple, from_postgres: bool) -> tuple:
        out = [row[0]]
        for value, is_numeric in zip(row[1:], numeric, strict=True):
            if isinstance(value, datetime):
                value = value.replace(tzinfo=None)
            elif is_numeric and value is not None:
                value = round(value, 9) if from_postgres else float(value)
            out.append(value)
        return tuple(out)

    assert len(in_postgres) == len(in_bigquery) == ROWS
    assert [normal(r, True) for r in in_postgres] == [normal(r, False) for r in in_bigquery]


def test_the_cli_loads_a_tlc_month_and_keeps_the_sources_apart(tlc_settings, source_server):
    env = settings_env(tlc_settings)
    tlc_run = run_cli("load-postgres", "--source", "tlc", "--taxi", "green", "--month", "2019-01", env=env)
    mirror_run = run_cli("load-postgres", "--taxi", "green", "--month", "2019-01", env=env)
    assert tlc_run.returncode == 0 and mirror_run.returncode == 0, tlc_run.stderr + mirror_run.stderr
    outputs = json.loads(tlc_run.stdout.splitlines()[0].strip(":"))["outputs"]
    assert outputs["table"] == "tlc_green_tripdata" and outputs["rows_loaded"] == ROWS
    with psycopg.connect(tlc_settings.postgres_dsn) as conn:
        tables = dict(conn.execute("SELECT relname, 1 FROM pg_class WHERE relname LIKE '%green_tripdata'").fetchall())
        assert set(tables) == {"green_tripdata", "tlc_green_tripdata"}
        assert conn.execute("SELECT count(*) FROM tlc_green_tripdata").fetchone()[0] == ROWS
        assert conn.execute("SELECT count(*) FROM green_tripdata").fetchone()[0] != ROWS  # the mirror's own month
    fhvhv_mirror = run_cli("extract", "--taxi", "fhvhv", "--month", "2019-01", env=env)
    assert fhvhv_mirror.returncode == 1
    assert (
        fhvhv_mirror.stderr.strip()
        == "error: unknown taxi type 'fhvhv' for source mirror; choose one of green, yellow, fhv"
    )


def test_extract_and_the_load_never_import_pandas(tlc_settings):
    """pyarrow imports pandas (0.3 s and 57 MB a process) the first time it turns a Python value
    into an Arrow scalar or array: the data steps, a process per Kestra task, never need it."""
    env = {**settings_env(tlc_settings), "PYTHONPROFILEIMPORTTIME": "1"}
    months = [
        ("--source", "tlc", "--taxi", "fhvhv", "--month", "2020-04"),  # with pickups outside the month
        ("--source", "tlc", "--taxi", "yellow", "--month", "2009-03"),  # times published as text
        ("--taxi", "green", "--month", "2019-03"),
    ]
    for args in months:
        for step in ("extract", "load-postgres"):
            result = run_cli(step, *args, env=env)
            assert result.returncode == 0, result.stderr[-2000:]
            imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
            assert "taxi_assets.cli" in imported and "pandas" not in imported, (step, args)


def test_newest_month_tells_whether_both_stores_hold_that_very_file(cloud_settings, tlc_server):
    settings = replace(cloud_settings, tlc_url=tlc_server.url)
    ensure_bucket(settings)
    ensure_dataset(settings)
    env = settings_env(settings)

    def load(step: str, month: str) -> None:
        result = run_cli(step, "--source", "tlc", "--taxi", "fhv", "--month", month, env=env)
        assert result.returncode == 0, result.stderr

    def newest() -> dict:
        result = run_cli("newest-month", "--source", "tlc", "--taxi", "fhv", env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.splitlines()[0].strip(":"))["outputs"]

    now = Month.parse(datetime.now().strftime("%Y-%m"))
    first = newest()
    assert first["month"] == str(min(LATEST, now.previous())) and not first["loaded"]
    load("load-postgres", first["month"])
    assert not newest()["loaded"], "Postgres alone holds it"
    load("upload-gcs", first["month"])
    load("load-bigquery", first["month"])
    assert newest()["loaded"]
    tlc_server.republish("fhv", Month.parse(first["month"]), variant=1)
    again = newest()
    assert not again["loaded"] and again["etag"] != first["etag"]


def test_era_schemas_of_the_stand_in_match_the_facts():
    """The generated files are only as good as their schemas: spot checks against tlc.md."""
    assert tlc_era_schema("yellow", Month(2009, 1)).field("Trip_Pickup_DateTime").type == pa.string()
    assert "__index_level_0__" in tlc_era_schema("yellow", Month(2010, 3)).names
    assert tlc_era_schema("fhvhv", Month(2019, 2)).field("wav_match_flag").type == pa.null()
    assert "request_source" in tlc_era_schema("green", Month(2026, 6)).names


def test_the_mirrors_steps_do_not_load_pyarrow():
    """pyarrow is 30 MB of every process that imports it: the mirror's extract and load-postgres
    read CSV and must not pay for the Parquet source."""
    import subprocess
    import sys

    probe = "import sys, taxi_assets.cli, taxi_assets.steps.extract, taxi_assets.steps.postgres; print('pyarrow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"


def test_ids_made_by_other_rendering_rules_are_made_again(tlc_settings, monkeypatch):
    """Row ids and conversions are keyed by how rows are rendered too, not only by the file: new
    rules (or another Arrow) never leave old ids beside new rows."""
    from taxi_assets.parquet import conversion_id

    ds, month = TLC_DATASETS["green"], Month(2024, 9)
    info = extract(tlc_settings, ds, month)
    before = conversion_id(ds)
    assert open_month_file(Path(info.path), ds).recorded_row_ids() is not None
    monkeypatch.setattr(tlc, "RENDERING_VERSION", tlc.RENDERING_VERSION + 1)
    assert open_month_file(Path(info.path), ds).recorded_row_ids() is None and conversion_id(ds) != before
    again = extract(tlc_settings, ds, month)
    assert not again.downloaded  # the ids are recomputed from the local copy
    ids = open_month_file(Path(info.path), ds).recorded_row_ids()
    assert ids is not None
    ids.close()
