"""The Dagster layer, loaded as a folder (`dg.load_from_defs_folder` in `taxi_assets.definitions`).

Each `defs.yaml` below (`mirror/`, `tlc/`) is one source's chains (the taxi-chain Component,
`taxi_assets.components.taxi_chain`); `resources.py`, `ledger_sensor.py` and `getting_started.py`
add the resources, the ledger sensor and the getting-started assets. The other modules are the
factories they build from: thin assets over `taxi_assets.steps`, their checks, jobs and sensors.
"""
