"""A wrong file lands: one month's file served under another month's name (issue 16, point 4).

extract refuses a file whose pickups lie mostly outside its month (`WRONG_MONTH_SHARE`), naming
the months they belong to, before any store changes: the CLI, Dagster's chain and Kestra's
flow all stop at the download, and the month keeps the rows it had.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import test_kestra_tlc as kestra_tlc
from helpers import dagster_resources, gzip_fixture, run_cli, settings_env
from psycopg import sql

from taxi_assets.config import Settings
from taxi_assets.datasets import GREEN, TLC_DATASETS, WRONG_MONTH_SHARE, YELLOW, TaxiDataset
from taxi_assets.defs.assets import build_taxi_chain, file_key
from taxi_assets.errors import BadFileError
from taxi_assets.files import FileInfo, local_path, record_path
from taxi_assets.gcp import bigquery_client, storage_client
from taxi_assets.monthfile import PICKUP_SAMPLE_EVERY, PickupMonths, open_month_file
from taxi_assets.months import Month
from taxi_assets.samples.mirror_data import write_month
from taxi_assets.samples.tlc import TlcServer, write_tlc_month
from taxi_assets.steps.extract import extract
from taxi_assets.stores import object_name, partition_name, table_id

TLC_GREEN = TLC_DATASETS["green"]

# -- The decision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("over", [0, 1], ids=["at the threshold", "one row over"])
def test_a_file_is_refused_only_when_more_than_the_threshold_lies_outside_its_month(over):
    pickups = PickupMonths(TLC_GREEN, Month(2024, 3))
    outside = int(10_000 * WRONG_MONTH_SHARE) + over
    pickups.add(10_000, {"2024-01": outside - 1, "2023-12": 1})
    refusal = pickups.refusal()
    if not over:
        assert refusal is None
    else:
        assert refusal == (
            f"{outside:,} of 10,000 pickups ({outside / 10_000:.0%}) lie outside 2024-03,"
            f" in 2024-01 ({outside - 1:,}), 2023-12 (1): another month's trips"
        )


def test_a_real_looking_month_with_a_few_pickups_outside_passes():
    """yellow 2019-01 as the TLC publishes it: 537 of 7,696,617 pickups outside, 2001 to 2088."""
    pickups = PickupMonths(TLC_DATASETS["yellow"], Month(2019, 1))
    pickups.add(7_696_617, {"2018-12": 400, "2001-01": 60, "2088-01": 77})
    assert pickups.refusal() is None


def test_the_generated_and_fixture_months_pass_with_their_planted_strays(tmp_path):
    mirror = tmp_path / GREEN.file_name(Month(2019, 2))
    truth = write_month(mirror, GREEN, Month(2019, 2), 20_000)  # one pickup in 1,009 from the month before
    assert truth.out_of_month_rows > 0 and open_month_file(mirror, GREEN).verify()[1] == 20_000
    tlc = tmp_path / TLC_GREEN.file_name(Month(2024, 2))
    write_tlc_month(tlc, "green", Month(2024, 2), 100)  # one of its 100 rows outside, the most it plants
    assert open_month_file(tlc, TLC_GREEN).verify()[1] == 100
    head = gzip_fixture("yellow_tripdata_2020-07_head266.csv", tmp_path / YELLOW.file_name(Month(2020, 7)))
    assert open_month_file(head, YELLOW).verify()[1] == 266  # 5 of them in June


@pytest.mark.parametrize(("jan_rows", "refused"), [(8_000, True), (4_000, False)], ids=["mostly", "a third"])
def test_the_mirrors_sampled_lines_tell_a_file_mostly_of_another_month(tmp_path, jan_rows, refused):
    """Two months in one file (blocks large enough to be sampled): refused when January's rows
    are the most, loaded (and warned of by the checks) when they are a third."""
    jan, mar = tmp_path / "jan.csv.gz", tmp_path / "mar.csv.gz"
    write_month(jan, GREEN, Month(2019, 1), jan_rows, crlf=False)
    write_month(mar, GREEN, Month(2019, 3), 12_000 - jan_rows, crlf=False)
    header, _, jan_lines = gzip.decompress(jan.read_bytes()).partition(b"\n")
    mar_lines = gzip.decompress(mar.read_bytes()).partition(b"\n")[2]
    mixed = tmp_path / GREEN.file_name(Month(2019, 3))
    mixed.write_bytes(gzip.compress(header + b"\n" + jan_lines + mar_lines))
    if not refused:
        assert open_month_file(mixed, GREEN).verify()[1] == 12_000
        return
    with pytest.raises(BadFileError) as raised:
        open_month_file(mixed, GREEN).verify()
    message = str(raised.value)
    assert message.startswith(f"{mixed.name}: ") and "lie outside 2019-03, in 2019-01 (" in message
    assert (
        " pickups by sample (" in message
        and f"; one line in {PICKUP_SAMPLE_EVERY} of large blocks) lie outside" in message
    )


def test_a_tiny_file_is_read_whole_so_its_one_stray_row_cannot_be_all_of_a_sample(tmp_path):
    """Four rows, the first from the month before: one line in 64 would look only at that one."""
    path = tmp_path / "four.csv.gz"
    write_month(path, GREEN, Month(2019, 3), 4, crlf=False)
    header, _, body = gzip.decompress(path.read_bytes()).partition(b"\n")
    lines = body.splitlines()
    pickup = GREEN.pickup_index
    stray = b",".join(f if i != pickup else b"2019-02-28 23:59:00" for i, f in enumerate(lines[0].split(b",")))
    tiny = tmp_path / GREEN.file_name(Month(2019, 3))
    tiny.write_bytes(gzip.compress(header + b"\n" + b"\n".join([stray, *lines[1:]]) + b"\n"))
    assert open_month_file(tiny, GREEN).verify()[1] == 4


# -- A month's file served under another month's name ---------------------------------------------


@dataclass
class Served:
    """A source whose `month` the test serves with `wrong`'s file (`plant`), and the settings
    that point at it."""

    dataset: TaxiDataset
    month: Month
    wrong: Month
    settings: Settings
    server: object

    @property
    def taxi(self) -> str:
        return self.dataset.taxi

    def args(self) -> list[str]:
        return ["--source", self.dataset.source.name, "--taxi", self.taxi, "--month", str(self.month)]

    def plant(self) -> None:
        """Serve `wrong`'s file under `month`'s name (for the TLC: a new ETag, a re-published file)."""
        if isinstance(self.server, TlcServer):
            source = self.server.served(f"/trip-data/{self.dataset.file_name(self.wrong)}").path
            target = self.server.root / self.dataset.file_name(self.month)
        else:
            source = self.server.file_for(f"/{self.taxi}/{self.dataset.file_name(self.wrong)}")
            target = self.server.root / self.taxi / self.dataset.file_name(self.month)
        shutil.copyfile(source, target.with_name(target.name + ".planting"))
        os.replace(target.with_name(target.name + ".planting"), target)

    def expected_error(self) -> str:
        name = self.dataset.file_name(self.month)
        return f"error: {self.dataset.name} {self.month}: downloaded file rejected, nothing kept: {name}: "

    def download_folder(self) -> Path:
        return self.settings.download_dir / self.dataset.folder


@pytest.fixture(params=["mirror", "tlc"])
def served(request, settings, tmp_path) -> Served:
    if request.param == "mirror":
        release = request.getfixturevalue("local_release")
        yield Served(GREEN, Month(2019, 3), Month(2019, 1), replace(settings, source_url=release.url), release)
        return
    server = TlcServer(tmp_path / "trip-data", rows=2_000).start()
    yield Served(TLC_GREEN, Month(2024, 3), Month(2024, 1), replace(settings, tlc_url=server.url), server)
    server.shutdown()


def postgres_month(dsn: str, dataset: TaxiDataset, month: Month) -> tuple | None:
    """The month's partition as a load leaves it: table, storage, rows, newest row version."""
    name = partition_name(dataset, month)
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT oid, relfilenode FROM pg_class WHERE oid = to_regclass(%s)", [name]).fetchone()
        if found is None:
            return None
        count = sql.SQL("SELECT count(*), max(xmin::text::bigint) FROM {}").format(sql.Identifier(name))
        return (*found, *conn.execute(count).fetchone())


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_refused_naming_the_rows_month(served: Served, stderr: str) -> None:
    [error] = error_lines(stderr)
    assert error.startswith(served.expected_error()), stderr
    assert f"lie outside {served.month}, in {served.wrong} (" in error, error


def test_the_cli_refuses_the_file_in_one_line_and_the_month_keeps_its_rows(served):
    env = settings_env(served.settings)
    for step in ("load-postgres", "purge-download"):  # the month's own file, loaded as a flow does
        assert run_cli(step, *served.args(), env=env).returncode == 0
    loaded = postgres_month(served.settings.postgres_dsn, served.dataset, served.month)
    assert loaded is not None and loaded[2] == 2_000

    served.plant()
    for step in ("extract", "load-postgres"):
        result = run_cli(step, *served.args(), env=env)
        assert result.returncode == 1, result.stderr
        assert_refused_naming_the_rows_month(served, result.stderr)
        assert not result.stdout, "no outputs for Kestra"
        assert postgres_month(served.settings.postgres_dsn, served.dataset, served.month) == loaded
        assert list(served.download_folder().iterdir()) == []


def test_a_wrong_copy_verified_before_months_were_checked_is_refused_once_its_row_ids_are_stale(
    settings, local_release, caplog
):
    """A copy with its record but no row-id file is verified again: refused, and downloaded afresh
    (here the source now serves the right file). One whose row ids are in place is used as it is."""
    settings = replace(settings, source_url=local_release.url)
    march = local_path(settings, GREEN, Month(2019, 3))
    march.parent.mkdir(parents=True)
    shutil.copyfile(local_release.file_for(f"/green/{GREEN.file_name(Month(2019, 1))}"), march)
    sha256 = hashlib.sha256(march.read_bytes()).hexdigest()
    old = FileInfo("green", "2019-03", str(march), "old", march.stat().st_size, sha256, 2_000, list(GREEN.column_names))
    record_path(march).write_text(json.dumps(asdict(old)))

    info = extract(settings, GREEN, Month(2019, 3))
    assert info.downloaded and info.sha256 != sha256
    assert f"local {march.name} no longer verifies ({march.name}: " in caplog.text
    assert "lie outside 2019-03, in 2019-01 (" in caplog.text


# -- Through Dagster ------------------------------------------------------------------------------


def cloud_month(settings: Settings, dataset: TaxiDataset, month: Month) -> tuple:
    """The month's object in the bucket (generation, crc32c) and its BigQuery row ids, sorted."""
    blob = storage_client(settings).bucket(settings.gcp_bucket).get_blob(object_name(dataset, month))
    query = f"SELECT unique_row_id FROM `{table_id(settings, dataset)}` WHERE filename = '{dataset.file_name(month)}'"
    ids = sorted(row[0] for row in bigquery_client(settings).query(query).result())
    return blob.generation, blob.crc32c, ids


def stores(settings: Settings, dataset: TaxiDataset, month: Month) -> tuple:
    return postgres_month(settings.postgres_dsn, dataset, month), cloud_month(settings, dataset, month)


def test_dagster_fails_at_the_file_asset_and_no_store_changes(served, cloud_settings, tmp_path):
    settings = replace(cloud_settings, source_url=served.settings.source_url, tlc_url=served.settings.tlc_url)
    chain = build_taxi_chain(served.dataset)
    key = str(served.month)
    assert dg.materialize(chain, partition_key=key, resources=dagster_resources(settings)).success
    before = stores(settings, served.dataset, served.month)
    assert before[0][2] == 2_000 and len(before[1][2]) == 2_000

    served.plant()
    if served.dataset.source.name == "mirror":  # the mirror never re-publishes: a run on a fresh machine
        settings = replace(settings, state_dir=tmp_path / "fresh-state")
    result = dg.materialize(chain, partition_key=key, resources=dagster_resources(settings), raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_key == file_key(served.dataset)
    failed = failure.step_failure_data.user_failure_data  # the step's own error, as one line
    assert failed.metadata["error"].value == "BadFileError"
    message = failed.description
    assert f"downloaded file rejected, nothing kept: {served.dataset.file_name(served.month)}: " in message
    assert f"lie outside {served.month}, in {served.wrong} (" in message
    assert not result.get_asset_materialization_events()
    assert stores(settings, served.dataset, served.month) == before


# -- Through Kestra's engine ----------------------------------------------------------------------

# The TLC flows' engine, source and stack as tests/test_kestra_tlc.py sets them up (module-scoped:
# an engine of this module's own).
tlc, kestra_db, stack, kestra = kestra_tlc.tlc, kestra_tlc.kestra_db, kestra_tlc.stack, kestra_tlc.kestra


def test_kestras_tlc_flow_fails_at_extract_and_no_store_changes(kestra, stack, tlc):
    served = Served(TLC_GREEN, Month(2024, 3), Month(2024, 1), stack, tlc)
    inputs = {"taxi": served.taxi, "month": str(served.month)}
    first = kestra_tlc.run(kestra, "tlc_taxi", inputs)
    assert first.state == "SUCCESS", first
    before = stores(stack, served.dataset, served.month)
    assert before[0][2] == 2_000 and len(before[1][2]) == 2_000

    served.plant()
    execution = kestra_tlc.run(kestra, "tlc_taxi", inputs)
    assert execution.state == "FAILED", execution
    assert execution.task_states["extract"] == "FAILED", execution
    assert_refused_naming_the_rows_month(served, execution.log_text("extract"))
    assert stores(stack, served.dataset, served.month) == before
