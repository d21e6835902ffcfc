"""The compiled renderer writes Arrow's CSV text byte for byte (the TLC row ids hash that text),
and leaves to Arrow every batch with a value outside the forms it writes."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from taxi_assets import csvlines
from taxi_assets.datasets import TLC_DATASETS
from taxi_assets.monthfile import tlcparquet as tlc
from taxi_assets.months import Month
from taxi_assets.samples.tlc import write_tlc_month


def _arrow(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(batch, sink, tlc._CSV)
    return sink.getvalue().to_pybytes()


def _rendered(batch: pa.RecordBatch) -> bytes | None:
    rendered = csvlines.render(batch)
    if rendered is None:
        return None
    text, ends = rendered
    assert list(ends) == [i for i, b in enumerate(bytes(text)) if b == ord("\n")]
    return bytes(text)


ERAS = [Month(2010, 3), Month(2015, 6), Month(2024, 2)]  # coordinates; zones; the newest columns


@pytest.mark.parametrize(
    ("ds", "month"),
    [(ds, m) for ds in TLC_DATASETS.values() for m in ERAS if m >= ds.first_month],
    ids=lambda v: str(getattr(v, "name", v)),
)
def test_every_feed_and_era_renders_as_arrow_writes_it(tmp_path, ds, month):
    path = tmp_path / ds.file_name(month)
    write_tlc_month(path, ds.taxi, month, 2_000)
    batches = 0
    for batch in tlc.canonical_batches(path, ds):
        assert _rendered(batch) == _arrow(batch)  # the generated rows are all in its forms
        batches += 1
    assert batches


FLOATS = [0.0, -0.0, 5.0, 1.5, 100.0, 0.1, 1e-6, 1.5e-6, 999_999_999.5, 123_456.789, -2.5, 2.675, -73.981234]


@pytest.mark.parametrize("value", FLOATS)
def test_a_float_in_its_forms_is_written_as_arrow_writes_it(value):
    batch = pa.record_batch([pa.array([value])], names=["x"])
    assert _rendered(batch) == _arrow(batch)


@pytest.mark.parametrize("value", [0.30000000000000004, 1e-7, 1e9, 1.5e15, 1 / 3, float("nan"), float("inf")])
def test_a_float_outside_its_forms_goes_to_arrow(value):
    assert csvlines.render(pa.record_batch([pa.array([value])], names=["x"])) is None


def test_decimal_amounts_and_random_floats_render_as_arrow_or_go_to_arrow():
    rng = np.random.default_rng(7)
    decimals = rng.integers(-(10**8), 10**8, 20_000) / 10.0 ** rng.integers(0, 10, 20_000)
    decimals = decimals[(np.abs(decimals) >= 1e-6) | (decimals == 0)]
    values = np.concatenate([decimals, rng.uniform(-90, 90, 5_000), rng.uniform(0, 1e-3, 2_000)])
    fast = []
    for value in values:
        batch = pa.record_batch([pa.array([value])], names=["x"])
        rendered = _rendered(batch)
        if rendered is not None:
            fast.append(value)
            assert rendered == _arrow(batch), value
    assert len(fast) >= len(decimals) > 19_000  # every short decimal is written here, not by Arrow


def test_strings_ints_times_and_nulls_render_as_arrow_writes_them():
    times = [
        datetime.datetime(2019, 1, 1, 0, 46, 40, 123),
        datetime.datetime(1000, 1, 1),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999_999),
        datetime.datetime(1969, 12, 31, 23, 59, 59),
        None,
    ]
    batch = pa.record_batch(
        [
            pa.array(["a", 'b"c', None, "", "é,x"], pa.string()),
            pa.array([-(2**31), 0, None, 7, 2**31 - 1], pa.int64()),
            pa.array(times, pa.timestamp("us")),
            pa.array([None, 1.5, None, -0.0, 3.0]),
        ],
        names=["s", "i", "t", "f"],
    )
    assert _rendered(batch) == _arrow(batch)
    assert _rendered(batch.slice(2, 3)) == _arrow(batch.slice(2, 3))  # offsets into shared buffers


@pytest.mark.parametrize(
    "column",
    [
        pa.array(["a\nb"]),  # a line break: Arrow's writer, then csv_lines, refuse it
        pa.array([datetime.datetime(999, 1, 1)], pa.timestamp("us")),
        pa.array([1], pa.int32()),  # not a canonical type
    ],
)
def test_anything_else_goes_to_arrow(column):
    assert csvlines.render(pa.record_batch([column], names=["x"])) is None
