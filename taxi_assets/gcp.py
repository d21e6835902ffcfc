"""Google Cloud clients from Settings: real credentials, or an emulator endpoint.

Credentials come from GCP_CREDENTIALS (a key file or its JSON) or application-default
credentials. Their content is never logged or echoed in an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials

from taxi_assets.config import GCP_CREDENTIALS, Settings
from taxi_assets.errors import ConfigError


def credentials(settings: Settings, *, emulator: str | None) -> Credentials | None:
    """Anonymous for an emulator; else the configured key; else None (application-default)."""
    if emulator:
        return AnonymousCredentials()
    raw = settings.gcp_credentials
    if not raw:
        return None
    from google.oauth2 import service_account

    try:
        if raw.lstrip().startswith("{"):
            return service_account.Credentials.from_service_account_info(json.loads(raw))
        if Path(raw).expanduser().is_file():
            return service_account.Credentials.from_service_account_file(str(Path(raw).expanduser()))
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{GCP_CREDENTIALS} is not a usable service-account key ({type(exc).__name__})") from None
    raise ConfigError(f"{GCP_CREDENTIALS} is neither a readable key file nor key JSON")


def storage_client(settings: Settings):
    from google.cloud import storage

    emulator = settings.storage_emulator
    return storage.Client(
        project=settings.gcp_project,
        credentials=credentials(settings, emulator=emulator),
        client_options=ClientOptions(api_endpoint=emulator) if emulator else None,
    )


def bigquery_client(settings: Settings):
    """dagster-gcp's BigQueryResource cannot take an endpoint; this client can."""
    from google.cloud import bigquery

    emulator = settings.bigquery_emulator
    return bigquery.Client(
        project=settings.gcp_project,
        location=settings.gcp_location,
        credentials=credentials(settings, emulator=emulator),
        client_options=ClientOptions(api_endpoint=emulator) if emulator else None,
    )
