"""The Dagster layer: thin assets over `taxi_assets.steps`, assembled in `taxi_assets.definitions`."""
