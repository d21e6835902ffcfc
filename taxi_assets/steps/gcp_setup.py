"""The BigQuery half of gcp-setup (the bucket half lives with the upload, in gcs.py)."""

from __future__ import annotations

import logging

from google.api_core import exceptions as gexc

from taxi_assets.config import Settings
from taxi_assets.errors import ConfigError
from taxi_assets.gcp import bigquery_client

log = logging.getLogger(__name__)


def ensure_dataset(settings: Settings) -> bool:
    """Create the dataset in GCP_LOCATION if missing; True if it was created."""
    from google.cloud import bigquery

    client = bigquery_client(settings)
    ref = f"{settings.gcp_project}.{settings.gcp_dataset}"
    try:
        client.get_dataset(ref)
        return False
    except gexc.NotFound:
        pass
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise ConfigError(f"not allowed to read dataset {ref}: {exc.message}") from None
    dataset = bigquery.Dataset(ref)
    dataset.location = settings.gcp_location
    client.create_dataset(dataset, exists_ok=True)
    log.info("created dataset %s in %s", ref, settings.gcp_location)
    return True
