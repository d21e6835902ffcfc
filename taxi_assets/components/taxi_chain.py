"""The taxi-chain Component: one source's feeds as Dagster definitions, declared in a `defs.yaml`.

    type: taxi_assets.components.taxi_chain.TaxiChainComponent
    attributes:
      source: mirror            # a source of taxi_assets.datasets.SOURCES
      feeds: [green, yellow]    # its taxi types
      new_months: schedule      # or `sensor`

Per feed: the four assets of its chain (`defs.assets.build_taxi_chain`), their checks
(`defs.checks`), its job (`defs.jobs.build_job`), and what requests new months: a monthly schedule
(a fixed range of months, the mirror's) or a sensor asking the source (an open range, the TLC's).
A new source or a subset of feeds is one more `defs.yaml` under taxi_assets/defs/.
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field, model_validator

from taxi_assets.datasets import DATASETS_BY_SOURCE, TaxiDataset, dataset
from taxi_assets.defs.assets import build_taxi_chain
from taxi_assets.defs.checks import build_bigquery_checks, build_gcs_check, build_postgres_checks
from taxi_assets.defs.jobs import build_job, build_schedule
from taxi_assets.defs.sensors import build_new_month_sensor


class TaxiChainComponent(dg.Component, dg.Model, dg.Resolvable):
    """The chains of one source's feeds: assets, checks, a job per feed, and its new-month trigger.

    Each feed's month file, its Postgres and BigQuery tables and its Parquet in GCS, with the
    checks of each store, one partitioned job, and a schedule (`new_months: schedule`, for a
    source whose months are a fixed range) or a sensor asking the source for new and re-published
    months (`new_months: sensor`).
    """

    source: str = Field(description=f"Where the month files come from: one of {', '.join(DATASETS_BY_SOURCE)}.")
    feeds: list[str] = Field(min_length=1, description="The source's taxi types to define chains for.")
    new_months: Literal["schedule", "sensor"] = Field(
        description="How new months are requested: `schedule` (a fixed range of months, on the 1st of each"
        " month) or `sensor` (an open range: asks the source for new and re-published files)."
    )

    @model_validator(mode="after")
    def _feeds_exist_and_fit_new_months(self) -> TaxiChainComponent:
        for ds in self.datasets():  # an unknown source or taxi type raises here, naming the choices
            if self.new_months == "schedule" and ds.last_month is None:
                raise ValueError(
                    f"{ds.name} has no last month (an open range): its new months need `new_months: sensor`"
                )
        return self

    def datasets(self) -> list[TaxiDataset]:
        return [dataset(feed, self.source) for feed in self.feeds]

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        assets, asset_checks, jobs, schedules, sensors = [], [], [], [], []
        for ds in self.datasets():
            assets += build_taxi_chain(ds)
            asset_checks += [build_postgres_checks(ds), build_gcs_check(ds), build_bigquery_checks(ds)]
            jobs.append(job := build_job(ds))
            if self.new_months == "schedule":
                schedules.append(build_schedule(job, ds))
            else:
                sensors.append(build_new_month_sensor(job, ds))
        return dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=jobs, schedules=schedules, sensors=sensors)
