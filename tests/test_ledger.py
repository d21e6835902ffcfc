"""The load ledger: every load records, atomically with its rows, what file it loaded and who
loaded it; `check` and `status` read it, whichever orchestrator (or the CLI) made the load."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from helpers import run_cli, settings_env

from taxi_assets import checks, ledger
from taxi_assets.datasets import GREEN, TLC_DATASETS
from taxi_assets.errors import BadFileError, LoadError
from taxi_assets.files import row_ids_path
from taxi_assets.gcp import bigquery_client
from taxi_assets.months import Month, month_just_ended
from taxi_assets.samples.tlc import TlcServer
from taxi_assets.steps.bigquery import load_bigquery
from taxi_assets.steps.extract import extract
from taxi_assets.steps.gcp_setup import ensure_dataset
from taxi_assets.steps.gcs import ensure_bucket, upload_gcs
from taxi_assets.steps.postgres import load_postgres
from taxi_assets.stores import partition_name

JAN, FEB = Month(2019, 1), Month(2019, 2)
ROWS = 2_000


def _ids_sha256(info) -> str:
    """sha256 of the row ids extract wrote (after the file's 32-byte key), computed here apart."""
    return hashlib.sha256(row_ids_path(Path(info.path)).read_bytes()[32:]).hexdigest()


def _load_postgres(settings, month=JAN, ds=GREEN, **kw):
    info = extract(settings, ds, month)
    with psycopg.connect(settings.postgres_dsn) as conn:
        load_postgres(conn, ds, month, Path(info.path), expected_rows=info.data_lines, **kw)
    return info


def test_a_postgres_load_records_its_file_rows_and_loader(settings, pg):
    info = _load_postgres(settings, loaded_by="dagster:run-1")
    entry = ledger.held(settings, ledger.POSTGRES, GREEN, JAN, conn=pg)
    assert (entry.source, entry.taxi, entry.month, entry.table_name) == ("mirror", "green", "2019-01", "green_tripdata")
    assert (entry.file, entry.url, entry.bytes, entry.sha256) == (info.filename, info.url, info.bytes, info.sha256)
    assert entry.rows == ROWS and entry.row_ids_sha256 == _ids_sha256(info)
    assert (entry.orchestrator, entry.run_id) == ("dagster", "run-1") and entry.code_version == "0.1.0"
    # Another month, from the CLI: the default loader; each month its own record.
    result = run_cli("load-postgres", "--taxi", "green", "--month", "2019-02", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert ledger.held(settings, ledger.POSTGRES, GREEN, FEB, conn=pg).loaded_by == "cli"
    assert ledger.held(settings, ledger.POSTGRES, GREEN, JAN, conn=pg).loaded_by == "dagster:run-1"


def test_the_loader_named_in_the_environment_is_recorded(settings, pg):
    env = settings_env(settings) | {ledger.LOADED_BY: "kestra:4xYzExecution"}
    result = run_cli("load-postgres", "--taxi", "green", "--month", "2019-01", env=env)
    assert result.returncode == 0, result.stderr
    entry = ledger.held(settings, ledger.POSTGRES, GREEN, JAN, conn=pg)
    assert (entry.orchestrator, entry.run_id) == ("kestra", "4xYzExecution")


def test_a_failed_load_records_nothing_and_keeps_the_previous_record(settings, pg, local_release):
    settings = replace(settings, source_url=local_release.url)
    _load_postgres(settings)
    before = ledger.postgres_records(pg)
    served = local_release.root / "green" / GREEN.file_name(JAN)
    served.write_bytes(served.read_bytes()[:-200])  # truncated: the download is rejected
    (settings.download_dir / "green").joinpath(GREEN.file_name(JAN) + ".json").unlink()  # no local copy
    with pytest.raises(BadFileError):
        _load_postgres(settings)
    assert ledger.postgres_records(pg) == before and len(before) == 1


def test_a_load_rolled_back_in_its_swap_leaves_the_ledger_as_it_was(settings, pg, monkeypatch):
    """The record is written in the swap's transaction: a failure after it undoes both."""
    _load_postgres(settings)
    before = ledger.postgres_records(pg)

    def fail(conn, entry):
        conn.execute("INSERT INTO taxi_loads (source) VALUES (NULL)")  # violates NOT NULL, after the swap

    monkeypatch.setattr(ledger, "write_postgres", fail)
    with pytest.raises(LoadError, match="load rolled back, previous rows untouched"):
        _load_postgres(settings)
    assert ledger.postgres_records(pg) == before
    assert pg.execute(f'SELECT count(*) FROM "{partition_name(GREEN, JAN)}"').fetchone()[0] == ROWS


def test_bigquery_records_the_same_file_and_row_ids_as_postgres(cloud_settings):
    ensure_bucket(cloud_settings)
    ensure_dataset(cloud_settings)
    info = _load_postgres(cloud_settings)
    upload_gcs(cloud_settings, GREEN, JAN, Path(info.path))
    load_bigquery(cloud_settings, GREEN, JAN, info, loaded_by="dagster:run-2")
    pg = ledger.held(cloud_settings, ledger.POSTGRES, GREEN, JAN)
    bq = ledger.held(cloud_settings, ledger.BIGQUERY, GREEN, JAN)
    same = ("file", "url", "etag", "bytes", "sha256", "rows", "row_ids_sha256", "code_version")
    assert [getattr(bq, k) for k in same] == [getattr(pg, k) for k in same]
    assert bq.loaded_by == "dagster:run-2" and ledger.in_both({("m", "g", JAN): pg}, {("m", "g", JAN): bq})
    # Loaded again: one current record per month in BigQuery, the newest.
    load_bigquery(cloud_settings, GREEN, JAN, info, loaded_by="cli")
    records = ledger.bigquery_records(bigquery_client(cloud_settings), cloud_settings, GREEN)
    assert [r.loaded_by for r in records] == ["cli"]


def test_a_failed_bigquery_load_keeps_the_months_record(cloud_settings, fake_gcs):
    ensure_bucket(cloud_settings)
    ensure_dataset(cloud_settings)
    info = extract(cloud_settings, GREEN, JAN)
    upload_gcs(cloud_settings, GREEN, JAN, Path(info.path))
    load_bigquery(cloud_settings, GREEN, JAN, info)
    before = ledger.held(cloud_settings, ledger.BIGQUERY, GREEN, JAN)
    stored = Path(fake_gcs[1]) / cloud_settings.gcp_bucket / "green" / "green_tripdata_2019-01.parquet"
    stored.write_bytes(stored.read_bytes()[:1000])
    with pytest.raises(LoadError, match="previous rows kept"):
        load_bigquery(cloud_settings, GREEN, JAN, info, loaded_by="dagster:never")
    assert ledger.held(cloud_settings, ledger.BIGQUERY, GREEN, JAN) == before


def _check(settings, store, month="2019-01", taxi="green", *source):
    result = run_cli("check", "--store", store, *source, "--taxi", taxi, "--month", month, env=settings_env(settings))
    outputs = next(json.loads(line[2:-2])["outputs"] for line in result.stdout.splitlines() if '"outputs"' in line)
    return result, outputs


def test_check_prints_each_verdict_and_fails_on_an_error_check(settings, pg):
    _load_postgres(settings)
    result, outputs = _check(settings, "postgres")
    assert result.returncode == 0, result.stderr
    assert set(outputs["verdicts"]) == {s.name for s in checks.specs(ledger.POSTGRES)}
    assert outputs["passed"] and outputs["failed"] == []
    rows = outputs["verdicts"][checks.ROWS_MATCH_FILE]["metadata"]
    assert (rows["table_rows"], rows["file_data_lines"]) == (ROWS, ROWS)
    assert f"green 2019-01 in postgres: {checks.ROWS_MATCH_FILE} passed (table_rows 2000" in result.stderr
    # Rows deleted behind the ledger's back: the ERROR check fails the command, in one error line.
    pg.execute(f'DELETE FROM "{partition_name(GREEN, JAN)}" WHERE unique_row_id LIKE %s', ["0%"])
    result, outputs = _check(settings, "postgres")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and outputs["failed"] == [checks.ROWS_MATCH_FILE]
    assert errors == ["error: green 2019-01 in postgres: rows_match_file failed (see the lines above)"]


def test_check_of_a_month_never_loaded_fails(settings):
    result, outputs = _check(settings, "postgres", "2019-03")
    assert result.returncode == 1 and checks.ROWS_MATCH_FILE in outputs["failed"]
    assert outputs["verdicts"][checks.ROWS_MATCH_FILE]["metadata"]["ledger"] == "no load recorded"


NEWEST = month_just_ended(datetime.now(timezone.utc)).previous()  # published, as the TLC's are, two months on
OLDER, BETWEEN = NEWEST.previous().previous(), NEWEST.previous()


@pytest.fixture
def tlc_server(tmp_path):
    server = TlcServer(tmp_path / "trip-data", rows=300, latest=NEWEST).start()
    yield server
    server.shutdown()


def test_status_shows_what_each_store_holds_and_what_differs(cloud_settings, tlc_server):
    settings = replace(cloud_settings, tlc_url=tlc_server.url)
    ds = TLC_DATASETS["green"]
    ensure_bucket(settings)
    ensure_dataset(settings)
    for month in (OLDER, NEWEST):  # BETWEEN: in neither store
        info = _load_postgres(settings, month, ds, loaded_by="kestra:exec-1")
        upload_gcs(settings, ds, month, Path(info.path))
        load_bigquery(settings, ds, month, info, loaded_by="dagster:run-9")
    tlc_server.republish("green", NEWEST, variant=1)  # the TLC re-uploads one of them
    # Postgres then loads 2024-03 from the new file; BigQuery still holds the old one.
    info = extract(settings, ds, NEWEST, revalidate=True)
    with psycopg.connect(settings.postgres_dsn) as conn:
        load_postgres(conn, ds, NEWEST, Path(info.path), expected_rows=info.data_lines)
    tlc_server.republish("green", OLDER, variant=2)  # and another, loaded nowhere since

    env = settings_env(settings)
    result = run_cli("status", "--source", "tlc", "--taxi", "green", "--json", env=env)
    assert result.returncode == 0, result.stderr
    [feed] = json.loads(result.stdout)["feeds"]
    months = {m["month"]: m for m in feed["months"]}
    assert set(months) == {str(OLDER), str(NEWEST)}
    jan, mar = months[str(OLDER)], months[str(NEWEST)]
    assert jan["postgres"]["loaded_by"] == "kestra:exec-1" and jan["bigquery"]["loaded_by"] == "dagster:run-9"
    assert not jan["stores_differ"] and jan["source"]["republished"]
    assert mar["stores_differ"] and mar["postgres"]["rows"] == 301 and mar["bigquery"]["rows"] == 300
    assert mar["postgres"]["loaded_by"] == "cli" and mar["postgres"]["sha256"] == info.sha256
    assert not mar["source"]["republished"] or mar["bigquery"]["etag"] != mar["source"]["etag"]
    assert feed["missing_counted_up_to"] == str(NEWEST) and feed["newest_from_source"]
    assert feed["missing"]["postgres"][-1] == str(BETWEEN) and feed["missing"]["postgres"][0] == "2014-01"

    grid = run_cli("status", "--source", "tlc", "--taxi", "green", env=env)
    assert grid.returncode == 0, grid.stderr
    lines = grid.stdout.splitlines()
    assert lines[0] == "tlc_green (tlc green, table tlc_green_tripdata)"
    [jan_line] = [line for line in lines if line.startswith(f"  {OLDER}")]
    assert "kestra:exec-1" in jan_line and "dagster:run-9" in jan_line and "RE-PUBLISHED" in jan_line
    [mar_line] = [line for line in lines if line.startswith(f"  {NEWEST}")]
    assert "STORES DIFFER" in mar_line and "301" in mar_line
    for store in ledger.STORES:
        assert f"  missing in {store} (up to {NEWEST}): 2014-01..{OLDER.previous()}, {BETWEEN}" in lines


def test_status_offline_reads_only_the_ledgers(settings):
    _load_postgres(settings)
    env = settings_env(settings) | {
        "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
    }
    result = run_cli("status", "--source", "mirror", "--taxi", "green", "--offline", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("  2019-01") and "cli" in line for line in lines), result.stdout
    assert "  missing in postgres (up to 2021-07): 2019-02..2021-07" in lines
    assert any(line.startswith("bigquery: not read (") for line in lines), result.stdout
    assert "mirror marts in postgres: none; loaded, marts not built: 2019-01" in lines  # the marts ledger

    # A marts ledger that cannot be read is said so, in one line, not left out.
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA marts_mirror; CREATE TABLE marts_mirror.taxi_marts_builds (id int)")
    lines = run_cli("status", "--source", "mirror", "--taxi", "green", "--offline", env=env).stdout.splitlines()
    [unread] = [line for line in lines if line.startswith("marts ledger postgres marts_mirror: not read (")]
    assert "source" in unread and "does not exist" in unread, unread


def test_months_loaded_before_the_ledger_are_taken_in_from_their_partition_comments(settings, pg):
    """Earlier versions recorded a month's file only as its partition's comment: the ledger,
    when it is created, takes those months in, so they are not taken for unloaded."""
    info = _load_postgres(settings)
    pg.execute("DROP TABLE taxi_loads")
    origin = {"file": info.filename, "rows": ROWS, "sha256": info.sha256, "bytes": info.bytes, "etag": ""}
    pg.execute(f"COMMENT ON TABLE \"{partition_name(GREEN, JAN)}\" IS '{json.dumps(origin)}'")
    _load_postgres(settings, FEB)  # the first load since: creates the ledger
    migrated = ledger.held(settings, ledger.POSTGRES, GREEN, JAN, conn=pg)
    assert (migrated.loaded_by, migrated.sha256, migrated.rows, migrated.file) == (
        ledger.MIGRATED,
        info.sha256,
        ROWS,
        info.filename,
    )
    assert ledger.held(settings, ledger.POSTGRES, GREEN, FEB, conn=pg).loaded_by == "cli"
