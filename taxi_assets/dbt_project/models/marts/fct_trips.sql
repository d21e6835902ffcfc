{#- Every trip of the month's loaded files (all feeds of the source), with its zones, payment
    type and duration. Keyed by `trip_id`: our `unique_row_id`, and for an exact duplicate row
    (they exist, and are kept) its copy number after a dash. `file_month` is the file's month;
    `pickup_in_month` is false for the rows a file holds from other months. Rebuilt one month at
    a time: Postgres deletes the month and inserts it, BigQuery overwrites its partition. -#}
{{ config(
    materialized='incremental',
    incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'month_replace'),
    meta={'month_column': 'file_month'},
    partition_by=({'field': 'file_month', 'data_type': 'date', 'granularity': 'month'} if target.type == 'bigquery' else none),
    partitions=([month_literal()] if target.type == 'bigquery' else none),
    cluster_by=(['service_type', 'pickup_location_id'] if target.type == 'bigquery' else none),
    on_schema_change='fail',
    full_refresh=false,
    tags=['monthly'],
    post_hook=["{{ month_index('file_month') }}"],
) }}
with trips as (
  select
    *,
    row_number() over (partition by service_type, unique_row_id order by unique_row_id) as copy_number
  from {{ ref('int_trips_unioned') }}
)
select
  case when t.copy_number = 1 then t.unique_row_id
       else {{ dbt.concat(['t.unique_row_id', "'-'", as_text('t.copy_number')]) }} end as trip_id,
  t.unique_row_id,
  t.filename,
  t.file_month,
  t.service_type,
  t.vendor_id,
  t.dispatching_base_num,
  t.rate_code_id,
  t.pickup_location_id,
  pz.borough as pickup_borough,
  pz.zone as pickup_zone,
  t.dropoff_location_id,
  dz.borough as dropoff_borough,
  dz.zone as dropoff_zone,
  t.pickup_datetime,
  t.dropoff_datetime,
  t.pickup_in_month,
  round({{ as_money(dbt.datediff('t.pickup_datetime', 't.dropoff_datetime', 'second')) }} / 60, 2) as trip_duration_minutes,
  t.store_and_fwd_flag,
  t.passenger_count,
  t.trip_distance,
  t.trip_type,
  t.payment_type,
  pt.description as payment_type_description,
  t.fare_amount,
  t.extra,
  t.mta_tax,
  t.tip_amount,
  t.tolls_amount,
  t.ehail_fee,
  t.improvement_surcharge,
  t.congestion_surcharge,
  t.airport_fee,
  t.total_amount
from trips as t
left join {{ ref('dim_zones') }} as pz on pz.location_id = t.pickup_location_id
left join {{ ref('dim_zones') }} as dz on dz.location_id = t.dropoff_location_id
left join {{ ref('payment_type_lookup') }} as pt on pt.payment_type = t.payment_type
