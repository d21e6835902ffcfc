"""Settings from the environment: the one list of variables (documented in `.env.example`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from taxi_assets.errors import ConfigError

DEFAULT_SOURCE_URL = "https://github.com/DataTalksClub/nyc-tlc-data/releases/download"
# The TLC's own Parquet files (the `tlc` source): `{base}/{feed}_tripdata_{YYYY-MM}.parquet`.
DEFAULT_TLC_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"
DEFAULT_STATE_DIR = "~/.local/share/taxi-assets"

# Environment variable names, referenced by the Dagster resources and the Kestra flows too.
SOURCE_URL = "TAXI_SOURCE_URL"
TLC_URL = "TAXI_TLC_URL"
STATE_DIR = "TAXI_STATE_DIR"
POSTGRES_DSN = "TAXI_POSTGRES_DSN"
# 0: a stack (the compose services, the images); never start an embedded Postgres or local emulator
EMBEDDED = "TAXI_EMBEDDED"
HTTP_RETRIES = "TAXI_HTTP_RETRIES"
HTTP_TIMEOUT = "TAXI_HTTP_TIMEOUT"
HTTP_BACKOFF = "TAXI_HTTP_BACKOFF"
BIGQUERY_TIMEOUT = "TAXI_BIGQUERY_TIMEOUT"
KEEP_DOWNLOADS = "TAXI_KEEP_DOWNLOADS"  # 1: purge-download keeps the file, even once every asked store holds it
# The stores this machine loads (comma-separated); unset: those its settings name a server of.
# purge-download keeps a month's download until each of them (and each store asked) holds it.
STORES = "TAXI_STORES"
STORE_NAMES = ("postgres", "bigquery")  # the stores, in the order the ledgers are read (`ledger.STORES`)
GCS_STORE = "gcs"  # the bucket: checked (`checks`), though no rows are loaded into it
CHECKED_STORES = (STORE_NAMES[0], GCS_STORE, STORE_NAMES[1])  # `checks.STORES`, the order checks run in
PRODUCTS_URL = "TAXI_PRODUCTS_URL"  # the getting-started pipeline's REST API
LOCK_WAIT = "TAXI_LOCK_WAIT"  # seconds load-postgres waits for readers of its month, then gives up
GCP_PROJECT_ID = "GCP_PROJECT_ID"
GCP_LOCATION = "GCP_LOCATION"
GCP_BUCKET_NAME = "GCP_BUCKET_NAME"
GCP_DATASET = "GCP_DATASET"
GCP_CREDENTIALS = "GCP_CREDENTIALS"  # a service-account key file, or its JSON; else application-default
STORAGE_EMULATOR_HOST = "STORAGE_EMULATOR_HOST"  # the variable google-cloud-storage itself honours
BIGQUERY_EMULATOR_HOST = "BIGQUERY_EMULATOR_HOST"
# Where the embedded emulators listen (bqemulator's gRPC port is the BigQuery port + 10).
EMULATED_GCS_PORT = "TAXI_EMULATED_GCS_PORT"
EMULATED_BIGQUERY_PORT = "TAXI_EMULATED_BIGQUERY_PORT"
DEFAULT_EMULATED_PORTS = {EMULATED_GCS_PORT: 4443, EMULATED_BIGQUERY_PORT: 9050}
# Read only where the project starts its own emulators: never in the compose stack (TAXI_EMBEDDED=0).
EMBEDDED_ONLY = frozenset(DEFAULT_EMULATED_PORTS)


def _int(name: str, default: int, env) -> int:
    raw = env.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def emulated_port(name: str, env=None) -> int:
    """The port an embedded emulator listens on (`EMULATED_GCS_PORT` or `EMULATED_BIGQUERY_PORT`)."""
    return _int(name, DEFAULT_EMULATED_PORTS[name], os.environ if env is None else env)


def _stores(env) -> tuple[str, ...] | None:
    """`TAXI_STORES` as store names in `STORE_NAMES` order; None when unset or empty."""
    names = [n.strip().lower() for n in env.get(STORES, "").split(",") if n.strip()]
    if unknown := [n for n in names if n not in STORE_NAMES]:
        raise ConfigError(
            f"{STORES} names {', '.join(unknown)}: the stores are {' and '.join(STORE_NAMES)} (comma-separated)"
        )
    return tuple(s for s in STORE_NAMES if s in names) or None


def _float(name: str, default: float, env) -> float:
    raw = env.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _embedded(env) -> bool:
    raw = env.get(EMBEDDED, "").strip().lower()
    if raw in ("", "1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ConfigError(f"{EMBEDDED} must be 0 (a stack: no embedded services) or 1, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    source_url: str = DEFAULT_SOURCE_URL
    tlc_url: str = DEFAULT_TLC_URL
    state_dir: Path = Path(DEFAULT_STATE_DIR).expanduser()
    postgres_dsn: str | None = None  # None: the embedded Postgres under state_dir
    # May an embedded Postgres or local emulator start? From the process environment even when
    # Settings is built field by field (the Dagster Postgres resource does): a stack never does.
    embedded: bool = field(default_factory=lambda: _embedded(os.environ))
    http_retries: int = 5
    http_timeout: float = 60.0
    http_backoff: float = 1.0  # seconds before the first retry; doubles each time
    bigquery_timeout: float = 1800.0  # seconds a BigQuery job may run (steps/bigquery.py)
    keep_downloads: bool = False
    stores: tuple[str, ...] | None = None  # TAXI_STORES; None: the stores the settings name a server of
    gcp_project: str = "taxi-assets-local"
    gcp_configured: bool = False  # GCP_PROJECT_ID was set: use Google Cloud, not local emulators
    gcp_location: str = "US"
    gcp_bucket: str = "taxi-assets-local"
    gcp_dataset: str = "ny_taxi"
    gcp_credentials: str | None = field(default=None, repr=False)  # a secret: never printed
    storage_emulator: str | None = None
    bigquery_emulator: str | None = None

    @classmethod
    def from_env(cls, env=None) -> Settings:
        env = os.environ if env is None else env
        embedded = _embedded(env)
        postgres_dsn = (env.get(POSTGRES_DSN) or "").strip() or None
        if postgres_dsn is None and POSTGRES_DSN in env and not embedded:
            # Given, but empty: an empty secret or .env value, never a cue for the embedded server.
            raise ConfigError(
                f"{POSTGRES_DSN} is empty (an empty secret or .env value?) and {EMBEDDED}=0 starts"
                " no embedded Postgres: give it the taxi-data Postgres's DSN"
            )
        return cls(
            source_url=env.get(SOURCE_URL) or DEFAULT_SOURCE_URL,
            tlc_url=env.get(TLC_URL) or DEFAULT_TLC_URL,
            state_dir=Path(env.get(STATE_DIR) or DEFAULT_STATE_DIR).expanduser().absolute(),
            postgres_dsn=postgres_dsn,
            embedded=embedded,
            http_retries=_int(HTTP_RETRIES, 5, env),
            http_timeout=_float(HTTP_TIMEOUT, 60.0, env),
            http_backoff=_float(HTTP_BACKOFF, 1.0, env),
            bigquery_timeout=_float(BIGQUERY_TIMEOUT, 1800.0, env),
            keep_downloads=env.get(KEEP_DOWNLOADS, "").strip().lower() in ("1", "true", "yes"),
            stores=_stores(env),
            gcp_project=env.get(GCP_PROJECT_ID) or cls.gcp_project,
            gcp_configured=bool(env.get(GCP_PROJECT_ID)),
            gcp_location=env.get(GCP_LOCATION) or cls.gcp_location,
            gcp_bucket=env.get(GCP_BUCKET_NAME) or cls.gcp_bucket,
            gcp_dataset=env.get(GCP_DATASET) or cls.gcp_dataset,
            gcp_credentials=env.get(GCP_CREDENTIALS) or None,
            storage_emulator=env.get(STORAGE_EMULATOR_HOST) or None,
            bigquery_emulator=env.get(BIGQUERY_EMULATOR_HOST) or None,
        )

    def base_url(self, variable: str) -> str:
        """The configured base URL of a source, by the variable that sets it (`Source.url_variable`)."""
        return {SOURCE_URL: self.source_url, TLC_URL: self.tlc_url}[variable]

    @property
    def download_dir(self) -> Path:
        return self.state_dir / "downloads"

    @property
    def emulators_dir(self) -> Path:
        return self.state_dir / "emulators"

    @property
    def embedded_postgres_dir(self) -> Path:
        return self.state_dir / "postgres"
