{#- The TLC's 265 taxi zones (seed taxi_zone_lookup). Built once (`tag:dims`); cheap to rebuild. -#}
{{ config(tags=['dims']) }}
select
  {{ adapter.quote('LocationID') }} as location_id,
  {{ adapter.quote('Borough') }} as borough,
  {{ adapter.quote('Zone') }} as zone,
  replace({{ adapter.quote('service_zone') }}, 'Boro', 'Green') as service_zone
from {{ ref('taxi_zone_lookup') }}
