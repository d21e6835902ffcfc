"""Google Cloud clients from Settings: real credentials, or an emulator endpoint.

Credentials come from GCP_CREDENTIALS (a key file or its JSON) or application-default
credentials. Their content is never logged or echoed in an error.
"""

from __future__ import annotations

import json
import os

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
        if os.path.isfile(os.path.expanduser(raw)):  # never raises: an OSError would quote the value
            return service_account.Credentials.from_service_account_file(os.path.expanduser(raw))
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"{GCP_CREDENTIALS} is not a usable service-account key ({type(exc).__name__})") from None
    raise ConfigError(f"{GCP_CREDENTIALS} is neither a readable key file nor key JSON")


def _client(client_class, settings: Settings, emulator: str | None, **kwargs):
    """A Google client on `emulator` if given, else on Google Cloud with the configured credentials."""
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return client_class(
            project=settings.gcp_project,
            credentials=credentials(settings, emulator=emulator),
            client_options=ClientOptions(api_endpoint=emulator) if emulator else None,
            **kwargs,
        )
    except DefaultCredentialsError:
        raise ConfigError(
            f"no Google credentials: set {GCP_CREDENTIALS} (a key file or its JSON) or run"
            " `gcloud auth application-default login`; or unset GCP_PROJECT_ID to use the local emulators"
        ) from None


def storage_client(settings: Settings):
    from google.cloud import storage

    return _client(storage.Client, settings, settings.storage_emulator)


def bigquery_client(settings: Settings):
    """dagster-gcp's BigQueryResource cannot take an endpoint; this client can."""
    from google.cloud import bigquery

    return _client(bigquery.Client, settings, settings.bigquery_emulator, location=settings.gcp_location)
