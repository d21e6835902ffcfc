"""taxi-assets: NYC taxi months into Postgres, GCS and BigQuery, driven by Dagster or Kestra.

The steps (`taxi_assets.steps`) are plain functions; `python -m taxi_assets` is their
command line; `taxi_assets.definitions` holds the Dagster `Definitions`.
"""
