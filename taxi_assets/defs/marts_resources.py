"""The dbt resource of the marts (taxi_assets/defs/marts/defs.yaml), defined once, under the key
`dbt`: the packaged dbt project. Each run gives it its own profile (`marts.write_profiles`), the
store's target and its own target folder (taxi_assets.components.taxi_marts)."""

import dagster as dg

from taxi_assets.components.taxi_marts import DBT_RESOURCE_KEY, default_dbt_resource


@dg.definitions
def marts_resources() -> dg.Definitions:
    return dg.Definitions(resources={DBT_RESOURCE_KEY: default_dbt_resource()})
