"""`python -m taxi_assets demo`: run one month's Dagster chain here and show what landed.

README command 1 ends here. With nothing configured it uses the embedded Postgres; with
`DAGSTER_HOME` set the run is recorded in that instance, so `dagster dev` shows it afterwards.
"""

from __future__ import annotations

import os

from dagster import DagsterInstance

from taxi_assets import database
from taxi_assets.config import Settings
from taxi_assets.datasets import dataset
from taxi_assets.defs.jobs import job_name
from taxi_assets.months import Month
from taxi_assets.steps.postgres import partition_name


def run_demo(taxi: str, month: Month) -> None:
    from taxi_assets.definitions import defs

    ds = dataset(taxi)
    settings = Settings.from_env()
    where = (
        database.describe(settings.postgres_dsn)
        if settings.postgres_dsn
        else f"embedded Postgres in {settings.embedded_postgres_dir}"
    )
    print(f"Materializing {taxi} {month} from {settings.source_url} into {where} ...", flush=True)
    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    result = defs.resolve_job_def(job_name(ds)).execute_in_process(
        partition_key=str(month),
        instance=instance,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        rows = mat.metadata.get("dagster/row_count")
        print(f"  materialized {mat.asset_key.to_user_string()}: {rows.value if rows else '?'} rows")
    for check in result.get_asset_check_evaluations():
        state = "passed" if check.passed else "warning" if check.severity.value == "WARN" else "FAILED"
        detail = ", ".join(f"{k}={v.value}" for k, v in check.metadata.items())
        print(f"  check {check.check_name}: {state} [{detail}]")
    if not result.success:
        raise SystemExit(f"error: the {job_name(ds)} run for {month} failed; see the log above")
    with database.connect(settings) as conn:
        rows = conn.execute(f'SELECT count(*) FROM "{partition_name(ds, month)}"').fetchone()[0]
        months = conn.execute(f"SELECT count(DISTINCT filename), count(*) FROM {ds.table}").fetchone()
        cur = conn.execute(
            f"SELECT unique_row_id, {ds.pickup_column.lower()}, pulocationid, dolocationid"
            f"{', total_amount' if 'total_amount' in ds.sql_names else ''} FROM {ds.table} WHERE filename = %s LIMIT 3",
            (ds.file_name(month),),
        )
        sample = cur.fetchall()
        names = [d.name for d in cur.description]
    print(f"\n{ds.table}: {rows:,} rows for {month}; {months[1]:,} rows over {months[0]} month(s) in all")
    from taxi_assets.defs.checks import month_totals_bigquery
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.steps.bigquery import table_id

    cloud = with_local_cloud(settings)
    bq = month_totals_bigquery(cloud, ds, month)
    where_bq = "BigQuery emulator" if cloud.bigquery_emulator else "BigQuery"
    print(f"{table_id(cloud, ds)} ({where_bq}): {bq['rows']:,} rows for {month}")
    print("  " + " | ".join(names))
    for row in sample:
        print("  " + " | ".join(str(v) for v in row))
