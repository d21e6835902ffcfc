"""The Dagster code location: every asset, check, job, schedule and resource, assembled here."""

from dagster import Definitions

from taxi_assets.datasets import DATASETS
from taxi_assets.defs.assets import build_taxi_chain
from taxi_assets.defs.checks import build_bigquery_checks, build_gcs_check, build_postgres_checks
from taxi_assets.defs.getting_started import avg_price_by_brand, products
from taxi_assets.defs.jobs import build_job, build_schedule
from taxi_assets.defs.resources import resources_from_env

_jobs = {taxi: build_job(ds) for taxi, ds in DATASETS.items()}

defs = Definitions(
    assets=[*(a for ds in DATASETS.values() for a in build_taxi_chain(ds)), products, avg_price_by_brand],
    asset_checks=[
        check
        for ds in DATASETS.values()
        for check in (build_postgres_checks(ds), build_gcs_check(ds), build_bigquery_checks(ds))
    ],
    jobs=list(_jobs.values()),
    schedules=[build_schedule(_jobs[taxi], ds) for taxi, ds in DATASETS.items()],
    resources=resources_from_env(),
)
