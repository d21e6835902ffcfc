"""The Dagster code location: every asset, check, job, schedule and resource, assembled here."""

import re
import warnings

from dagster import Definitions, PreviewWarning

from taxi_assets.datasets import ALL_DATASETS, MIRROR_DATASETS, TLC_DATASETS
from taxi_assets.defs.assets import build_taxi_chain
from taxi_assets.defs.checks import build_bigquery_checks, build_gcs_check, build_postgres_checks
from taxi_assets.defs.getting_started import avg_price_by_brand, products
from taxi_assets.defs.jobs import build_job, build_schedule
from taxi_assets.defs.resources import resources_from_env
from taxi_assets.defs.sensors import build_ledger_sensor, build_new_month_sensor

# Dagster features these definitions use knowingly although Dagster marks them preview. Their
# warnings would print in every process that loads this code location (the demo, the code server
# of `dg dev`, the daemon's run workers, each step's subprocess), 21 times each, and tell a user
# nothing they can act on. Silenced here, at the source, by category and message: any other
# preview, beta or supersession warning still shows, so a new one is a decision, not noise
# (tests/test_project.py and tests/test_dagster_processes.py fail on one).
ACCEPTED_PREVIEW_FEATURES = ("Specifying a partitions_def on an AssetCheckSpec",)  # per-month check results
for _feature in ACCEPTED_PREVIEW_FEATURES:
    warnings.filterwarnings("ignore", message=re.escape(_feature), category=PreviewWarning)

_jobs = {ds.name: build_job(ds) for ds in ALL_DATASETS}

defs = Definitions(
    assets=[*(a for ds in ALL_DATASETS for a in build_taxi_chain(ds)), products, avg_price_by_brand],
    asset_checks=[
        check
        for ds in ALL_DATASETS
        for check in (build_postgres_checks(ds), build_gcs_check(ds), build_bigquery_checks(ds))
    ],
    jobs=list(_jobs.values()),
    # The mirror's months are fixed: a schedule per taxi type. The TLC's come when they come: a sensor.
    schedules=[build_schedule(_jobs[ds.name], ds) for ds in MIRROR_DATASETS.values()],
    sensors=[*(build_new_month_sensor(_jobs[ds.name], ds) for ds in TLC_DATASETS.values()), build_ledger_sensor()],
    resources=resources_from_env(),
)
