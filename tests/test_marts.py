"""The dbt marts (issue 19): one month at a time, in Postgres and on the BigQuery emulator.

Months are generated (the local release server, or a test's own), loaded by the steps, and the
marts built by `taxi_assets.marts.build_marts` and `python -m taxi_assets marts`.
"""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import yaml
from helpers import run_cli, settings_env

from taxi_assets import database, marts_ledger
from taxi_assets.datasets import FHV, GREEN, YELLOW, TaxiDataset
from taxi_assets.marts import (
    BIGQUERY,
    POSTGRES,
    PROJECT_DIR,
    SOURCES_YAML,
    MartsError,
    build_marts,
    dbt_vars,
    marts_schema,
    run_dbt,
    sources_yaml,
    write_profiles,
)
from taxi_assets.months import Month
from taxi_assets.samples.mirror_data import write_month
from taxi_assets.steps.extract import extract, purge_download
from taxi_assets.steps.postgres import load_postgres

JAN, FEB, MAR = Month(2019, 1), Month(2019, 2), Month(2019, 3)
FEEDS = (GREEN, YELLOW, FHV)
REVENUE = "fct_monthly_zone_revenue"


def _load_postgres(settings, month: Month, feeds: tuple[TaxiDataset, ...] = FEEDS) -> None:
    with database.connect(settings) as conn:
        for ds in feeds:
            info = extract(settings, ds, month)
            load_postgres(conn, ds, month, Path(info.path), expected_rows=info.data_lines)


def _pg(settings, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(settings.postgres_dsn) as conn:
        return conn.execute(query, params).fetchall()


def _slices(settings, table: str, column: str) -> dict[str, list[tuple]]:
    """Every row of a Postgres mart by month, in a stable order, as text."""
    rows = _pg(settings, f"SELECT {column}::text, t::text FROM marts_mirror.{table} t ORDER BY 1, 2")
    slices: dict[str, list[tuple]] = {}
    for month, row in rows:
        slices.setdefault(month[:7], []).append(row)
    return slices


def test_sources_yaml_is_generated_from_datasets():
    assert SOURCES_YAML.read_text() == sources_yaml(), (
        "run: python -c 'import taxi_assets.marts as m; m.write_sources_yaml()'"
    )
    doc = yaml.safe_load(SOURCES_YAML.read_text())
    tables = {(s["name"], t["name"]): t for s in doc["sources"] for t in s["tables"]}
    assert tables[("tlc", "fhvhv")]["identifier"] == "tlc_fhvhv_tripdata"
    assert [c["name"] for c in tables[("mirror", "green")]["columns"]][:3] == ["unique_row_id", "filename", "vendorid"]
    zones = (PROJECT_DIR / "seeds" / "taxi_zone_lookup.csv").read_text().splitlines()
    assert len(zones) == 266 and zones[0] == '"LocationID","Borough","Zone","service_zone"'


def test_profile_is_private(tmp_path, settings):
    secret = replace(settings, postgres_dsn="postgresql://taxi:s3cret-pw@db.example:6543/ny_taxi")
    folder = write_profiles(secret, POSTGRES, tmp_path / "profiles")
    path = folder / "profiles.yml"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    output = yaml.safe_load(path.read_text())["taxi_assets"]["outputs"]["postgres"]
    assert (output["host"], output["port"], output["user"], output["dbname"]) == ("db.example", 6543, "taxi", "ny_taxi")
    assert output["schema"] == "public"
    emulated = replace(settings, bigquery_emulator="http://127.0.0.1:9", gcp_dataset="ds")
    output = yaml.safe_load((write_profiles(emulated, BIGQUERY, tmp_path / "bq") / "profiles.yml").read_text())
    target = output["taxi_assets"]["outputs"]["bigquery"]
    assert (target["method"], target["api_endpoint"], target["dataset"]) == (
        "oauth-secrets",
        "http://127.0.0.1:9",
        "ds",
    )
    assert (
        marts_schema(emulated, BIGQUERY, "tlc") == "ds_marts_tlc"
        and marts_schema(emulated, POSTGRES, "tlc") == "marts_tlc"
    )


def test_months_back_fill_and_reload_in_postgres(tmp_path, local_release, pg_dsn):
    """Months 2 and 3, then month 1 back-filled, then month 2 re-published with other rows: each
    build changes exactly its month's slice."""
    from taxi_assets.config import Settings

    settings = Settings(
        source_url=local_release.url, state_dir=tmp_path / "state", postgres_dsn=pg_dsn, http_backoff=0.01
    )
    _load_postgres(settings, FEB)
    _load_postgres(settings, MAR)
    first = build_marts(settings, POSTGRES, "mirror", FEB)
    assert first.dims_built and first.schema == "marts_mirror"
    assert first.rows["fct_trips"] == 3 * 2_000
    assert [n.name for n in first.warnings] == ["out_of_month_pickups"]  # the generator plants 2 per file
    assert next(n for n in first.nodes if n.name == "out_of_month_pickups").failures == 6
    march = build_marts(settings, POSTGRES, "mirror", MAR)
    assert not march.dims_built and march.rows["fct_trips"] == 6_000
    # The revenue mart: the in-month trips of green and yellow, by zone.
    in_month = _pg(
        settings,
        "SELECT count(*), round(sum(total_amount)::numeric, 2) FROM green_tripdata"
        " WHERE filename = 'green_tripdata_2019-03.csv.gz' AND lpep_pickup_datetime >= '2019-03-01'",
    )[0]
    mart = _pg(
        settings,
        "SELECT sum(total_monthly_trips), sum(revenue_monthly_total_amount) FROM marts_mirror.fct_monthly_zone_revenue"
        " WHERE revenue_month = '2019-03-01' AND service_type = 'Green'",
    )[0]
    assert mart == in_month and mart[0] == 1_998
    before = {t: _slices(settings, t, c) for t, c in (("fct_trips", "file_month"), (REVENUE, "revenue_month"))}
    assert set(before["fct_trips"]) == {"2019-02", "2019-03"}

    # Back-fill January: it arrives, February and March stay as they were.
    _load_postgres(settings, JAN)
    build_marts(settings, POSTGRES, "mirror", JAN)
    after = {t: _slices(settings, t, c) for t, c in (("fct_trips", "file_month"), (REVENUE, "revenue_month"))}
    for table in after:
        assert set(after[table]) == {"2019-01", "2019-02", "2019-03"}
        assert {m: after[table][m] for m in before[table]} == before[table]
    assert len(after["fct_trips"]["2019-01"]) == 6_000

    # February re-published with other rows (green only): only February's slices change.
    purge_download(settings, GREEN, FEB)
    write_month(local_release.root / "green" / "green_tripdata_2019-02.csv.gz", GREEN, FEB, 1_500, seed=99)
    _load_postgres(settings, FEB, (GREEN,))
    rebuilt = build_marts(settings, POSTGRES, "mirror", FEB)
    assert rebuilt.rows["fct_trips"] == 1_500 + 2 * 2_000
    again = {t: _slices(settings, t, c) for t, c in (("fct_trips", "file_month"), (REVENUE, "revenue_month"))}
    for table in again:
        assert again[table]["2019-01"] == after[table]["2019-01"]
        assert again[table]["2019-03"] == after[table]["2019-03"]
        assert again[table]["2019-02"] != after[table]["2019-02"]
    green_feb = _pg(
        settings,
        "SELECT count(*) FROM marts_mirror.fct_trips WHERE file_month = '2019-02-01' AND service_type = 'Green'",
    )
    assert green_feb == [(1_500,)]


def test_cli_builds_a_month_and_fails_in_one_line(settings):
    env = settings_env(settings)
    _load_postgres(settings, FEB, (GREEN, YELLOW))  # fhv never loaded: its staging is empty
    done = run_cli("marts", "--month", "2019-02", env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    outputs = json.loads(done.stdout.splitlines()[0].strip(":"))["outputs"]
    assert outputs["rows"]["fct_trips"] == 4_000 and outputs["schema"] == "marts_mirror"
    assert outputs["feeds"] == {"green": 2_000, "yellow": 2_000} and outputs["warned"] == ["out_of_month_pickups"]
    assert "model fct_trips success" in done.stderr and "test revenue_reconciles passed" in done.stderr
    assert "rows" in done.stderr and "dbt" not in done.stdout.replace("::", "")
    # The build in the store's marts ledger, where Dagster's sensor finds it (test_dagster_marts).
    built = marts_ledger.builds(settings, POSTGRES, "marts_mirror")
    assert list(built) == [FEB] and built[FEB].built_by == "cli" and built[FEB].rows == outputs["rows"]
    status = run_cli("status", "--source", "mirror", "--offline", env=env)
    assert status.returncode == 0, status.stderr
    assert any(
        line.startswith("mirror marts in postgres: 2019-02; newest build 2019-02 by cli at ")
        for line in status.stdout.splitlines()
    )
    assert (
        json.loads(run_cli("status", "--offline", "--json", env=env).stdout)["marts"]["mirror"]["postgres"]["2019-02"][
            "rows"
        ]
        == outputs["rows"]
    )

    missing = run_cli("marts", "--month", "2019-05", env=env)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        "error: mirror 2019-05: no feed of the month is loaded in postgres (its ledger records none), so there are no"
        " marts to build; load it first: python -m taxi_assets load-postgres --source mirror --taxi green|yellow|fhv"
        " --month 2019-05"
    ]

    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE green_tripdata RENAME COLUMN total_amount TO total")
    broken = run_cli("marts", "--month", "2019-02", env=env, timeout=180)
    assert broken.returncode == 1
    error = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "model fct_trips errored" in error[0] and "total_amount" in error[0]
    assert settings.postgres_dsn not in broken.stderr


def _bq_rows(settings, sql: str) -> list[tuple]:
    from taxi_assets.gcp import bigquery_client

    return [tuple(r.values()) for r in bigquery_client(settings).query(sql).result()]


def _cents(value) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


def test_bigquery_marts_equal_postgres_to_the_cent(tmp_path, cloud_settings):
    from taxi_assets.steps.bigquery import load_bigquery
    from taxi_assets.steps.gcp_setup import ensure_dataset
    from taxi_assets.steps.gcs import ensure_bucket, upload_gcs

    settings = cloud_settings
    ensure_bucket(settings)
    ensure_dataset(settings)
    for month in (FEB, MAR):
        _load_postgres(settings, month, (GREEN, YELLOW))
        for ds in (GREEN, YELLOW):
            info = extract(settings, ds, month)
            upload_gcs(settings, ds, month, Path(info.path))
            load_bigquery(settings, ds, month, info)
    for month in (FEB, MAR):
        bq = build_marts(settings, BIGQUERY, "mirror", month)
        pg = build_marts(settings, POSTGRES, "mirror", month)
        assert bq.rows == pg.rows and bq.schema == f"{settings.gcp_dataset}_marts_mirror"
    # Both stores' marts ledgers record the same builds: the months, their rows, who built them.
    in_bq, in_pg = (marts_ledger.builds(settings, s, marts_schema(settings, s, "mirror")) for s in (BIGQUERY, POSTGRES))
    assert list(in_bq) == list(in_pg) == [FEB, MAR]
    assert [(b.rows, b.built_by) for b in in_bq.values()] == [(b.rows, b.built_by) for b in in_pg.values()]
    columns = (
        "pickup_location_id, revenue_month, service_type, pickup_zone, revenue_monthly_fare, revenue_monthly_extra,"
        " revenue_monthly_mta_tax, revenue_monthly_tip_amount, revenue_monthly_tolls_amount,"
        " revenue_monthly_ehail_fee, revenue_monthly_improvement_surcharge, revenue_monthly_total_amount,"
        " total_monthly_trips, avg_monthly_passenger_count, avg_monthly_trip_distance"
    )
    order = "ORDER BY revenue_month, service_type, pickup_location_id"
    in_pg = _pg(settings, f"SELECT {columns} FROM marts_mirror.{REVENUE} {order}")
    in_bq = _bq_rows(settings, f"SELECT {columns} FROM `{settings.gcp_dataset}_marts_mirror.{REVENUE}` {order}")
    assert len(in_pg) == len(in_bq) > 500

    def cents(row):
        return (*row[:4], *(_cents(v) for v in row[4:12]), row[12], *(_cents(v) for v in row[13:]))

    assert [cents(r) for r in in_bq] == [cents(r) for r in in_pg]

    # dbt-bigquery's own static insert_overwrite (a MERGE; the emulator's builds use DELETE +
    # INSERT, see macros/bigquery_emulator.sql) replaces February with the same rows.
    work = tmp_path / "merge"
    profiles = write_profiles(settings, BIGQUERY, work / "profiles")
    variables = json.dumps(dbt_vars("mirror", FEB))
    merged = run_dbt(["build", "--target", BIGQUERY, "--vars", variables, "--select", "tag:monthly"], profiles, work)
    assert merged.success, [(r.node.name, r.message) for r in merged.result.results if r.status == "error"]
    again = _bq_rows(settings, f"SELECT {columns} FROM `{settings.gcp_dataset}_marts_mirror.{REVENUE}` {order}")
    assert again == in_bq


@pytest.mark.parametrize("source", ["mirror", "tlc"])
def test_compiles_for_bigquery(cloud_settings, source):
    """`dbt compile` (no store changed) of every model for BigQuery, for each source."""
    from taxi_assets.datasets import DATASETS_BY_SOURCE
    from taxi_assets.gcp import bigquery_client
    from taxi_assets.marts import compile_marts
    from taxi_assets.steps.bigquery import ensure_table
    from taxi_assets.steps.gcp_setup import ensure_dataset

    ensure_dataset(cloud_settings)
    client = bigquery_client(cloud_settings)
    for ds in DATASETS_BY_SOURCE[source].values():  # the loaded tables, empty
        ensure_table(client, cloud_settings, ds)
    out = compile_marts(cloud_settings, BIGQUERY, source, FEB) / "taxi_marts"
    sql = (out / "tests" / "revenue_reconciles.sql").read_text()
    ext = "csv.gz" if source == "mirror" else "parquet"
    assert f"filename = 'green_tripdata_2019-02.{ext}' and month = date '2019-02-01'" in sql
    assert (out / "models" / "marts" / "fct_monthly_fhvhv_zone_pay.sql").exists() == (source == "tlc")
    assert (out / "tests" / "fhvhv_pay_reconciles.sql").exists() == (source == "tlc")
    with pytest.raises(MartsError, match="no feed of the month is loaded"):
        build_marts(cloud_settings, POSTGRES, source, Month(2030, 1))


def test_tlc_marts_with_fhvhv_pay_in_both_stores(tmp_path, cloud_settings):
    """The TLC's four feeds of a month: fct_trips, the revenue mart and the fhvhv pay mart, in
    schemas of their own (never the mirror's), equal in Postgres and BigQuery."""
    from taxi_assets.datasets import TLC_DATASETS
    from taxi_assets.samples.tlc import TlcServer
    from taxi_assets.steps.bigquery import load_bigquery
    from taxi_assets.steps.gcp_setup import ensure_dataset
    from taxi_assets.steps.gcs import ensure_bucket, upload_gcs

    month = Month(2025, 2)
    server = TlcServer(tmp_path / "trip-data", rows=1_000, latest=month).start()
    try:
        settings = replace(cloud_settings, tlc_url=server.url)
        ensure_bucket(settings)
        ensure_dataset(settings)
        feeds = tuple(TLC_DATASETS.values())
        _load_postgres(settings, month, feeds)
        for ds in feeds:
            info = extract(settings, ds, month)
            upload_gcs(settings, ds, month, Path(info.path))
            load_bigquery(settings, ds, month, info)
    finally:
        server.shutdown()
    pg = build_marts(settings, POSTGRES, "tlc", month)
    bq = build_marts(settings, BIGQUERY, "tlc", month)
    assert pg.schema == "marts_tlc" and bq.schema == f"{settings.gcp_dataset}_marts_tlc"
    assert pg.rows == bq.rows and pg.rows["fct_trips"] == 4_000
    assert set(pg.rows) == {"fct_trips", REVENUE, "fct_monthly_fhvhv_zone_pay"}
    for report in (pg, bq):
        verdicts = {n.name: n.status for n in report.nodes}
        assert verdicts["fhvhv_pay_reconciles"] == verdicts["revenue_reconciles"] == "pass"
    columns = (
        "pickup_location_id, pay_month, total_monthly_trips, monthly_base_passenger_fare, monthly_tips,"
        " monthly_driver_pay, driver_pay_per_fare_dollar"
    )
    order = "ORDER BY pickup_location_id"
    in_pg = _pg(settings, f"SELECT {columns} FROM marts_tlc.fct_monthly_fhvhv_zone_pay {order}")
    in_bq = _bq_rows(settings, f"SELECT {columns} FROM `{bq.schema}.fct_monthly_fhvhv_zone_pay` {order}")

    def cents(row):
        return (*row[:3], *(_cents(v) for v in row[3:]))

    assert [cents(r) for r in in_bq] == [cents(r) for r in in_pg] and len(in_pg) > 100
    trips = _pg(settings, "SELECT sum(total_monthly_trips) FROM marts_tlc.fct_monthly_fhvhv_zone_pay")[0][0]
    fhvhv = _pg(
        settings,
        "SELECT count(*) FROM tlc_fhvhv_tripdata WHERE pickup_datetime >= '2025-02-01' AND pickup_datetime < '2025-03-01'",
    )[0][0]
    assert trips == fhvhv
    mirror = _pg(settings, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'marts_mirror'")
    assert mirror == [(0,)]


def test_two_months_built_at_once(settings):
    """A backfill builds months side by side: the first build of the schema, then the months'
    replacements, both at once, without a deadlock or a lost month. fct_trips, which each build
    replaces while the other's tests read it, is replaced in place: the same relation (oid)
    throughout, never renamed away (dbt's own view materialization swaps it by renames, and a
    build then failed now and then on `fct_trips__dbt_backup` or a missing fct_trips)."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    _load_postgres(settings, FEB, (GREEN,))
    _load_postgres(settings, MAR, (GREEN,))
    env = {**os.environ, **settings_env(settings)}
    views = []
    for _ in range(2):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "taxi_assets", "marts", "--month", month],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for month in ("2019-02", "2019-03")
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
        views += _pg(settings, "SELECT 'marts_mirror.fct_trips'::regclass::oid")
    assert views[0] == views[1]
    rows = _pg(settings, "SELECT file_month::text, count(*) FROM marts_mirror.fct_trips GROUP BY 1 ORDER BY 1")
    assert rows == [("2019-02-01", 2_000), ("2019-03-01", 2_000)]
