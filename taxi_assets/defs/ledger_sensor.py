"""The sensor reporting the loads Kestra and the CLI made, found here by `load_from_defs_folder`.

A `@definitions` function, not a top-level sensor: its default status depends on the environment
(`build_ledger_sensor`), read each time the code location loads.
"""

import dagster as dg

from taxi_assets.defs.sensors import build_ledger_sensor


@dg.definitions
def ledger_sensor() -> dg.Definitions:
    return dg.Definitions(sensors=[build_ledger_sensor()])
