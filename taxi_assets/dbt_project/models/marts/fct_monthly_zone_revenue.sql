{#- The course's revenue mart (green and yellow), per pickup zone x file month x service type,
    over the trips whose pickup lies in their file's month (the others are counted by the test
    `out_of_month_pickups`). Money rounded to the cent. Rebuilt one month at a time. -#}
{{ config(
    materialized='incremental',
    incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'month_replace'),
    meta={'month_column': 'revenue_month'},
    partition_by=({'field': 'revenue_month', 'data_type': 'date', 'granularity': 'month'} if target.type == 'bigquery' else none),
    partitions=([month_literal()] if target.type == 'bigquery' else none),
    on_schema_change='fail',
    full_refresh=false,
    tags=['monthly'],
    post_hook=["{{ month_index('revenue_month') }}"],
) }}
select
  pickup_location_id,
  pickup_borough,
  pickup_zone,
  file_month as revenue_month,
  service_type,
  {{ money_sum('fare_amount') }} as revenue_monthly_fare,
  {{ money_sum('extra') }} as revenue_monthly_extra,
  {{ money_sum('mta_tax') }} as revenue_monthly_mta_tax,
  {{ money_sum('tip_amount') }} as revenue_monthly_tip_amount,
  {{ money_sum('tolls_amount') }} as revenue_monthly_tolls_amount,
  {{ money_sum('ehail_fee') }} as revenue_monthly_ehail_fee,
  {{ money_sum('improvement_surcharge') }} as revenue_monthly_improvement_surcharge,
  {{ money_sum('total_amount') }} as revenue_monthly_total_amount,
  count(*) as total_monthly_trips,
  avg(passenger_count) as avg_monthly_passenger_count,
  avg(trip_distance) as avg_monthly_trip_distance
from {{ ref('fct_trips') }}
where file_month = {{ month_literal() }}
  and pickup_in_month
  and service_type in ('Green', 'Yellow')
group by pickup_location_id, pickup_borough, pickup_zone, file_month, service_type
