"""Bad values that must not load (issue 17, points 1 and 2): a TLC file missing a column its era
has, and a mirror amount that is NaN or Infinity. extract refuses the file in one line naming
the column, before any store changes: the month keeps its rows and nothing is kept on disk."""

from __future__ import annotations

import gzip
import os
from dataclasses import replace
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from helpers import run_cli, settings_env
from psycopg import sql

from taxi_assets.datasets import GREEN, TLC_DATASETS, TaxiDataset
from taxi_assets.errors import BadFileError
from taxi_assets.monthfile import open_month_file
from taxi_assets.monthfile.tlcparquet import column_plan
from taxi_assets.months import Month
from taxi_assets.samples.mirror_data import write_month
from taxi_assets.samples.tlc import TlcServer, tlc_era_schema, write_tlc_month
from taxi_assets.stores import partition_name

TLC_GREEN = TLC_DATASETS["green"]


def args(dataset: TaxiDataset, month: Month) -> list[str]:
    return ["--source", dataset.source.name, "--taxi", dataset.taxi, "--month", str(month)]


def month_in_postgres(dsn: str, dataset: TaxiDataset, month: Month) -> tuple:
    """(rows, sum of fares) of the month's partition."""
    query = sql.SQL("SELECT count(*), sum(fare_amount) FROM {}").format(sql.Identifier(partition_name(dataset, month)))
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchone()


def replace_served(path: Path, data: bytes) -> None:
    """Swap a served file for `data` in one step, as a host re-uploading it."""
    path.with_name(path.name + ".planting").write_bytes(data)
    os.replace(path.with_name(path.name + ".planting"), path)


def assert_refused(settings, dataset: TaxiDataset, month: Month, before: tuple, problem: str) -> None:
    """extract and load-postgres each exit 1 with one error line ending in `problem`; the month
    keeps its rows and the download folder stays empty."""
    for step in ("extract", "load-postgres"):
        result = run_cli(step, *args(dataset, month), env=settings_env(settings))
        assert result.returncode == 1, result.stderr
        [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        rejected = (
            f"error: {dataset.name} {month}: downloaded file rejected, nothing kept: {dataset.file_name(month)}: "
        )
        assert error.startswith(rejected) and error.endswith(problem), error
        assert month_in_postgres(settings.postgres_dsn, dataset, month) == before
        assert list((settings.download_dir / dataset.folder).iterdir()) == []


# -- 1. A TLC file missing a column --------------------------------------------------------------


@pytest.fixture
def tlc(settings, tmp_path):
    server = TlcServer(tmp_path / "trip-data", rows=2_000, latest=Month(2025, 2)).start()
    yield server, replace(settings, tlc_url=server.url)
    server.shutdown()


def load_and_purge(settings, dataset: TaxiDataset, month: Month) -> tuple:
    """The month loaded as a flow does (its download then purged); what Postgres holds of it."""
    for step in ("load-postgres", "purge-download"):
        result = run_cli(step, *args(dataset, month), env=settings_env(settings))
        assert result.returncode == 0, result.stderr
    return month_in_postgres(settings.postgres_dsn, dataset, month)


def test_a_tlc_file_missing_a_column_its_era_has_is_refused_and_the_month_keeps_its_rows(tlc):
    server, settings = tlc
    month = Month(2019, 1)
    before = load_and_purge(settings, TLC_GREEN, month)
    assert before[0] == 2_000 and before[1] is not None

    served = server.served(f"/trip-data/{TLC_GREEN.file_name(month)}").path
    table = pq.read_table(served).drop_columns(["fare_amount"])
    pq.write_table(table, served.with_name("without-fares.parquet"))
    replace_served(served, served.with_name("without-fares.parquet").read_bytes())  # a new ETag
    assert_refused(
        settings,
        TLC_GREEN,
        month,
        before,
        "do not fit the tlc_green schema of 2019-01: missing fare_amount; nothing loaded",
    )


def test_a_tlc_file_without_the_columns_its_era_never_had_loads(tlc):
    """Green 2024-12 has no `cbd_congestion_fee` (added 2025-01) nor `request_source`: NULL."""
    server, settings = tlc
    month = Month(2024, 12)
    assert "cbd_congestion_fee" not in tlc_era_schema("green", month).names
    result = run_cli("load-postgres", *args(TLC_GREEN, month), env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    query = sql.SQL("SELECT count(*), count(cbd_congestion_fee), count(request_source) FROM {}")
    with psycopg.connect(settings.postgres_dsn) as conn:
        assert conn.execute(query.format(sql.Identifier(partition_name(TLC_GREEN, month)))).fetchone() == (2_000, 0, 0)


def test_only_the_months_of_an_era_without_a_column_may_lack_it(tmp_path):
    """The same schema, cbd_congestion_fee dropped: fine for 2024-12, refused for 2025-01."""
    schema = tlc_era_schema("green", Month(2025, 1))
    without = schema.remove(schema.get_field_index("cbd_congestion_fee"))
    assert column_plan(without, TLC_GREEN, Month(2024, 12), "x")[TLC_GREEN.column_index("cbd_congestion_fee")] is None
    with pytest.raises(BadFileError, match=r"missing cbd_congestion_fee; nothing loaded$"):
        column_plan(without, TLC_GREEN, Month(2025, 1), "x")
    path = tmp_path / TLC_GREEN.file_name(Month(2025, 1))
    write_tlc_month(path, "green", Month(2025, 1), 10)
    assert open_month_file(path, TLC_GREEN).verify()[1] == 10


# -- 2. NaN or Infinity in a mirror amount -------------------------------------------------------


def with_value(csv_gz: Path, line: int, column: str, value: str) -> bytes:
    """The file's bytes, `column` of line `line` (the header is line 1) set to `value`."""
    lines = gzip.decompress(csv_gz.read_bytes()).split(b"\n")
    fields = lines[line - 1].split(b",")
    fields[GREEN.column_index(column)] = value.encode()
    lines[line - 1] = b",".join(fields)
    return gzip.compress(b"\n".join(lines))


@pytest.mark.parametrize(
    ("column", "value", "named"),
    [("fare_amount", "NaN", "NaN"), ("tip_amount", "-inf", "-Infinity"), ("total_amount", "Infinity", "Infinity")],
)
def test_a_non_finite_mirror_amount_is_refused_and_the_month_keeps_its_rows(
    settings, local_release, column, value, named
):
    settings, month = replace(settings, source_url=local_release.url), Month(2019, 3)
    before = load_and_purge(settings, GREEN, month)
    assert before[0] == 2_000

    served = local_release.file_for(f"/green/{GREEN.file_name(month)}")
    replace_served(served, with_value(served, 1_234, column, value))
    assert_refused(
        settings, GREEN, month, before, f"{column} is {named} at line 1,234 (amounts must be finite numbers)"
    )


def test_nan_in_a_text_column_or_a_quoted_block_is_told_apart(tmp_path):
    """`NaN` is text in store_and_fwd_flag, and an amount in a block with quotes is still seen."""
    path = tmp_path / GREEN.file_name(Month(2019, 3))
    write_month(path, GREEN, Month(2019, 3), 100, crlf=False)
    path.write_bytes(with_value(path, 5, "store_and_fwd_flag", "NaN"))
    assert open_month_file(path, GREEN).verify()[1] == 100
    path.write_bytes(with_value(path, 7, "store_and_fwd_flag", '"N"'))
    path.write_bytes(with_value(path, 9, "extra", '" nan"'))
    with pytest.raises(BadFileError, match=r": extra is NaN at line 9 \(amounts must be finite numbers\)$"):
        open_month_file(path, GREEN).verify()
