"""Resources: where files come from, and the taxi-data Postgres. Configured by environment.

Values come from the same variables the CLI reads (`taxi_assets.config`), through `EnvVar`
so that a DSN with a password is resolved at run time and never shown in the UI.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import psycopg
from dagster import ConfigurableResource, Definitions, EnvVar, definitions

from taxi_assets import config, database
from taxi_assets.config import Settings


class TaxiSourceResource(ConfigurableResource):
    """The release server the month files come from, and the local state folder."""

    source_url: str = config.DEFAULT_SOURCE_URL
    tlc_url: str = config.DEFAULT_TLC_URL
    state_dir: str = config.DEFAULT_STATE_DIR

    def settings(self) -> Settings:
        # HTTP retry/timeout knobs are operational, not per-deployment: read like the CLI does.
        return replace(
            Settings.from_env(),
            source_url=self.source_url,
            tlc_url=self.tlc_url,
            state_dir=Path(self.state_dir).expanduser().absolute(),
        )


class TaxiPostgresResource(ConfigurableResource):
    """The taxi-data Postgres: `dsn`, or an embedded server under `state_dir` when it is empty."""

    dsn: str = ""
    state_dir: str = config.DEFAULT_STATE_DIR

    def settings(self) -> Settings:
        return Settings(state_dir=Path(self.state_dir).expanduser().absolute(), postgres_dsn=self.dsn or None)

    def connect(self) -> psycopg.Connection:
        return database.connect(self.settings())


class _CloudResource(ConfigurableResource):
    """Shared by the GCS and BigQuery resources: project, credentials, optional emulator."""

    project: str = ""  # empty: no Google Cloud configured, use the local emulators
    location: str = "US"
    credentials: str = ""  # key file path or key JSON; EnvVar, so never shown in the UI
    emulator_host: str = ""
    state_dir: str = config.DEFAULT_STATE_DIR

    def _settings(self, bigquery: bool, start: bool = True, **kw) -> Settings:
        """The settings; with `start`, the local emulators for what is not configured (started
        when not running)."""
        from taxi_assets.emulators import with_local_cloud

        base = replace(
            Settings.from_env(),
            state_dir=Path(self.state_dir).expanduser().absolute(),
            gcp_project=self.project or Settings.gcp_project,
            gcp_configured=bool(self.project),
            gcp_location=self.location,
            gcp_credentials=self.credentials or None,
            **kw,
        )
        return with_local_cloud(base, bigquery=bigquery) if start else base


class TaxiGcsResource(_CloudResource):
    """The bucket: Google Cloud Storage, or fake-gcs-server at `emulator_host`."""

    bucket: str = "taxi-assets-local"

    def settings(self) -> Settings:
        return self._settings(False, gcp_bucket=self.bucket, storage_emulator=self.emulator_host or None)


class TaxiBigQueryResource(_CloudResource):
    """BigQuery, or bqemulator at `emulator_host` (dagster-gcp's BigQueryResource takes no endpoint)."""

    dataset: str = "ny_taxi"
    bucket: str = "taxi-assets-local"  # where load jobs read the month's Parquet
    storage_emulator_host: str = ""

    def settings(self, *, start: bool = True) -> Settings:
        return self._settings(
            True,
            start,
            gcp_dataset=self.dataset,
            gcp_bucket=self.bucket,
            bigquery_emulator=self.emulator_host or None,
            storage_emulator=self.storage_emulator_host or None,
        )


def _env(name: str, default: str) -> str | EnvVar:
    """`EnvVar(name)` when the variable is set (resolved per run), else the built-in default."""
    return EnvVar(name) if os.environ.get(name) else default


def resources_from_env() -> dict:
    state_dir = _env(config.STATE_DIR, config.DEFAULT_STATE_DIR)
    cloud = {
        "project": _env(config.GCP_PROJECT_ID, ""),
        "location": _env(config.GCP_LOCATION, "US"),
        "credentials": _env(config.GCP_CREDENTIALS, ""),
        "state_dir": state_dir,
    }
    bucket = _env(config.GCP_BUCKET_NAME, "taxi-assets-local")
    gcs_emulator = _env(config.STORAGE_EMULATOR_HOST, "")
    return {
        "source": TaxiSourceResource(
            source_url=_env(config.SOURCE_URL, config.DEFAULT_SOURCE_URL),
            tlc_url=_env(config.TLC_URL, config.DEFAULT_TLC_URL),
            state_dir=state_dir,
        ),
        "postgres": TaxiPostgresResource(dsn=_env(config.POSTGRES_DSN, ""), state_dir=state_dir),
        "gcs": TaxiGcsResource(bucket=bucket, emulator_host=gcs_emulator, **cloud),
        "bigquery": TaxiBigQueryResource(
            dataset=_env(config.GCP_DATASET, "ny_taxi"),
            bucket=bucket,
            emulator_host=_env(config.BIGQUERY_EMULATOR_HOST, ""),
            storage_emulator_host=gcs_emulator,
            **cloud,
        ),
    }


@definitions
def resources() -> Definitions:
    """The resources of every definition in the folder, defined once (read when the code location loads)."""
    return Definitions(resources=resources_from_env())
