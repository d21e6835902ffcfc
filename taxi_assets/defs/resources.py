"""Resources: where files come from, and the taxi-data Postgres. Configured by environment.

Values come from the same variables the CLI reads (`taxi_assets.config`), through `EnvVar`
so that a DSN with a password is resolved at run time and never shown in the UI.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import psycopg
from dagster import ConfigurableResource, EnvVar

from taxi_assets import config, database
from taxi_assets.config import Settings


class TaxiSourceResource(ConfigurableResource):
    """The release server the month files come from, and the local state folder."""

    source_url: str = config.DEFAULT_SOURCE_URL
    state_dir: str = config.DEFAULT_STATE_DIR

    def settings(self) -> Settings:
        # HTTP retry/timeout knobs are operational, not per-deployment: read like the CLI does.
        return replace(
            Settings.from_env(), source_url=self.source_url, state_dir=Path(self.state_dir).expanduser().absolute()
        )


class TaxiPostgresResource(ConfigurableResource):
    """The taxi-data Postgres: `dsn`, or an embedded server under `state_dir` when it is empty."""

    dsn: str = ""
    state_dir: str = config.DEFAULT_STATE_DIR

    def settings(self) -> Settings:
        return Settings(state_dir=Path(self.state_dir).expanduser().absolute(), postgres_dsn=self.dsn or None)

    def connect(self) -> psycopg.Connection:
        return database.connect(self.settings())


def _env(name: str, default: str) -> str | EnvVar:
    """`EnvVar(name)` when the variable is set (resolved per run), else the built-in default."""
    return EnvVar(name) if os.environ.get(name) else default


def resources_from_env() -> dict:
    state_dir = _env(config.STATE_DIR, config.DEFAULT_STATE_DIR)
    return {
        "source": TaxiSourceResource(
            source_url=_env(config.SOURCE_URL, config.DEFAULT_SOURCE_URL), state_dir=state_dir
        ),
        "postgres": TaxiPostgresResource(dsn=_env(config.POSTGRES_DSN, ""), state_dir=state_dir),
    }
