"""The TLC stand-in: CloudFront's HTTP behaviour and the real files' schemas, era by era."""

from __future__ import annotations

import hashlib
import http.client
import io
import time
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests

from taxi_assets.months import Month
from taxi_assets.samples.tlc import ACCESS_DENIED, TLC_FEEDS, TlcServer, tlc_era_schema, write_tlc_month

ROWS = 500


@pytest.fixture
def server(tmp_path):
    srv = TlcServer(tmp_path / "tlc", rows=ROWS, latest=Month(2024, 4)).start()
    yield srv
    srv.shutdown()


def _url(server: TlcServer, feed: str, month: str) -> str:
    return f"{server.url}/{feed}_tripdata_{month}.parquet"


def test_head_and_get_answer_like_cloudfront(server):
    url = _url(server, "yellow", "2024-01")
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b""
    for name in ("Content-Length", "ETag", "Last-Modified", "Accept-Ranges"):
        assert name in head.headers
    get = requests.get(url, timeout=30)
    assert get.status_code == 200
    assert get.headers["Content-Type"] == "binary/octet-stream"
    assert int(get.headers["Content-Length"]) == len(get.content) == int(head.headers["Content-Length"])
    assert get.headers["ETag"] == head.headers["ETag"] == f'"{hashlib.md5(get.content).hexdigest()}"'
    assert get.headers["Last-Modified"] == head.headers["Last-Modified"]
    assert get.headers["Last-Modified"].endswith(" GMT")
    assert pq.read_table(io.BytesIO(get.content)).num_rows == ROWS
    assert server.requests == [("HEAD", urlsplit(url).path), ("GET", urlsplit(url).path)]
    ranged = requests.get(url, headers={"Range": "bytes=0-3"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == b"PAR1"


@pytest.mark.parametrize(
    "path",
    [
        "/trip-data/yellow_tripdata_2024-05.parquet",  # after latest
        "/trip-data/yellow_tripdata_2008-12.parquet",  # before the feed's first month
        "/trip-data/fhvhv_tripdata_2019-01.parquet",
        "/trip-data/purple_tripdata_2024-01.parquet",
        "/trip-data/yellow_tripdata_2024-01.csv",
        "/misc/nothing.txt",
        "/",
    ],
)
def test_anything_unpublished_is_access_denied(server, path):
    base = server.url.removesuffix("/trip-data")
    get = requests.get(base + path, timeout=30)
    assert get.status_code == 403
    assert get.headers["Content-Type"] == "application/xml"
    assert get.content == ACCESS_DENIED
    assert requests.head(base + path, timeout=30).status_code == 403


def test_publish_and_republish_change_what_is_served(server):
    url = _url(server, "green", "2024-05")
    assert requests.head(url, timeout=30).status_code == 403
    server.publish("green", Month(2024, 5))
    first = requests.get(url, timeout=30)
    assert first.status_code == 200
    server.republish("green", Month(2024, 5), variant=3)
    second = requests.get(url, timeout=30)
    assert second.headers["ETag"] != first.headers["ETag"]
    assert second.headers["Content-Length"] != first.headers["Content-Length"]
    assert second.headers["Last-Modified"] != first.headers["Last-Modified"]
    assert pq.read_table(io.BytesIO(second.content)).num_rows == ROWS + 3


def test_injected_errors_and_a_cut_body(server):
    name = "fhv_tripdata_2024-02.parquet"
    server.fail_next[name] = [503, 500]
    url = f"{server.url}/{name}"
    assert [requests.get(url, timeout=30).status_code for _ in range(3)] == [503, 500, 200]
    server.break_next(name, "truncate")
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", parts.path)
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()
    assert requests.get(url, timeout=30).status_code == 200  # only the next GET was spoiled


def _schema(tmp_path, feed: str, month: str, rows: int = 200) -> tuple[pa.Schema, pq.ParquetSchema, pa.Table]:
    path = tmp_path / f"{feed}_{month}.parquet"
    write_tlc_month(path, feed, Month.parse(month), rows, seed=7, row_group_rows=64)
    table = pq.read_table(path)
    assert table.schema == tlc_era_schema(feed, Month.parse(month))
    return table.schema, pq.read_metadata(path).schema, table


def test_yellow_2009_has_its_own_names_and_text_times(tmp_path):
    schema, _, table = _schema(tmp_path, "yellow", "2009-06")
    assert schema.names[:3] == ["vendor_name", "Trip_Pickup_DateTime", "Trip_Dropoff_DateTime"]
    assert schema.field("Trip_Pickup_DateTime").type == pa.string()
    assert len(table["Trip_Pickup_DateTime"][0].as_py()) == len("2009-06-01 00:00:00")
    assert set(table["Payment_Type"].to_pylist()) <= {"CASH", "Credit", "CREDIT", "Cash", "No Charge", "Dispute"}


def test_yellow_eras(tmp_path):
    schema, *_ = _schema(tmp_path, "yellow", "2010-02")
    assert schema.names[0] == "vendor_id" and schema.names[-1] == "__index_level_0__"
    assert "__index_level_0__" not in _schema(tmp_path, "yellow", "2010-04")[0].names
    old, *_ = _schema(tmp_path, "yellow", "2023-01")
    assert old.field("VendorID").type == pa.int64() and old.field("passenger_count").type == pa.float64()
    assert old.names[-1] == "airport_fee"
    new, _, table = _schema(tmp_path, "yellow", "2023-02")
    assert new.names[-1] == "Airport_fee" and len(new) == 19
    assert new.field("VendorID").type == pa.int32() and new.field("passenger_count").type == pa.int64()
    assert new.field("store_and_fwd_flag").type == pa.large_string()
    block = table.filter(pc.equal(table["payment_type"], 0))
    assert block.num_rows and block["passenger_count"].null_count == block.num_rows
    cbd, *_ = _schema(tmp_path, "yellow", "2025-01")
    assert cbd.names[-1] == "cbd_congestion_fee" and len(cbd) == 20
    source, *_ = _schema(tmp_path, "yellow", "2026-06")
    assert source.names[-2:] == ["cbd_congestion_fee", "request_source"]
    assert source.field("request_source").type == pa.large_string()
    ns, meta, _ = _schema(tmp_path, "yellow", "2024-04")
    assert ns.field("tpep_pickup_datetime").type == pa.timestamp("ns")
    assert "nanoseconds" in str(meta.column(1).logical_type)
    us, meta, _ = _schema(tmp_path, "yellow", "2024-06")
    assert us.field("tpep_pickup_datetime").type == pa.timestamp("us")
    assert "isAdjustedToUTC=false" in str(meta.column(1).logical_type)


@pytest.mark.parametrize(
    ("feed", "month", "column"),
    [
        ("yellow", "2019-05", "airport_fee"),
        ("yellow", "2016-03", "congestion_surcharge"),
        ("green", "2020-01", "ehail_fee"),
        ("fhv", "2020-01", "SR_Flag"),
        ("fhvhv", "2019-02", "wav_match_flag"),
        ("fhvhv", "2020-10", "airport_fee"),
    ],
)
def test_null_typed_columns_are_parquet_null(tmp_path, feed, month, column):
    schema, meta, _ = _schema(tmp_path, feed, month)
    assert schema.field(column).type == pa.null()
    parquet_column = meta.column(schema.names.index(column))
    assert parquet_column.physical_type == "INT32"
    assert str(parquet_column.logical_type) == "Null"


def test_type_drift_between_months():
    fhv = {m: tlc_era_schema("fhv", Month.parse(m)) for m in ("2019-05", "2020-01", "2023-02")}
    assert fhv["2019-05"].field("PUlocationID").type == pa.int64()
    assert fhv["2020-01"].field("PUlocationID").type == pa.float64()
    assert fhv["2020-01"].names == [
        "dispatching_base_num",
        "pickup_datetime",
        "dropOff_datetime",
        "PUlocationID",
        "DOlocationID",
        "SR_Flag",
        "Affiliated_base_number",
    ]
    assert tlc_era_schema("fhv", Month(2019, 1)).field("SR_Flag").type == pa.int32()
    assert tlc_era_schema("green", Month(2019, 8)).field("ehail_fee").type == pa.float64()
    assert tlc_era_schema("green", Month(2022, 12)).field("trip_type").type == pa.float64()
    assert tlc_era_schema("green", Month(2023, 2)).field("trip_type").type == pa.int64()
    assert len(tlc_era_schema("green", Month(2014, 1))) == 20
    assert len(tlc_era_schema("fhvhv", Month(2024, 12))) == 24
    assert tlc_era_schema("fhvhv", Month(2025, 1)).names[-1] == "cbd_congestion_fee"
    assert tlc_era_schema("fhvhv", Month(2023, 2)).field("PULocationID").type == pa.int32()
    with pytest.raises(ValueError):
        tlc_era_schema("fhvhv", Month(2019, 1))


@pytest.mark.parametrize("feed", TLC_FEEDS)
def test_quirks_and_determinism(tmp_path, feed):
    month = Month(2021, 3)
    a, b, c = (tmp_path / f"{n}.parquet" for n in "abc")
    write_tlc_month(a, feed, month, 1_000, seed=1)
    write_tlc_month(b, feed, month, 1_000, seed=1)
    write_tlc_month(c, feed, month, 1_000, seed=1, variant=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert pq.read_metadata(c).num_rows == 1_002
    table = pq.read_table(a)
    pickup = table["pickup_datetime" if feed.startswith("fhv") else table.schema.names[1]]
    outside = pc.or_(
        pc.less(pickup, pa.scalar(month.start, pickup.type)),
        pc.greater_equal(pickup, pa.scalar(month.end, pickup.type)),
    )
    assert pc.sum(outside).as_py() >= 1
    if feed != "fhv":
        fare = table["base_passenger_fare" if feed == "fhvhv" else "fare_amount"]
        assert pc.min(fare).as_py() < 0


def test_twenty_thousand_rows_are_quick(tmp_path):
    started = time.perf_counter()
    write_tlc_month(tmp_path / "big.parquet", "fhvhv", Month(2024, 1), 20_000)
    assert time.perf_counter() - started < 3
    assert pq.read_metadata(tmp_path / "big.parquet").num_rows == 20_000
