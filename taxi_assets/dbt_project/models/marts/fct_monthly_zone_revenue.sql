{#- The course's revenue mart (green and yellow), per pickup zone x file month x service type,
    over the trips whose pickup lies in their file's month, read from the month's loaded files
    (not the view fct_trips: no copy numbering, one scan) (the others are counted by the test
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
with trips as (
  {%- for feed in ['stg_green_tripdata', 'stg_yellow_tripdata'] %}
  select pickup_location_id, file_month, service_type, fare_amount, extra, mta_tax, tip_amount, tolls_amount,
    ehail_fee, improvement_surcharge, total_amount, passenger_count, trip_distance
  from {{ ref(feed) }}
  where pickup_in_month
  {%- if not loop.last %}
  union all
  {%- endif %}
  {%- endfor %}
),
by_zone as (
  select
    pickup_location_id,
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
    {{ money_avg('trip_distance') }} as avg_monthly_trip_distance
  from trips
  group by pickup_location_id, file_month, service_type
)
select
  b.pickup_location_id,
  z.borough as pickup_borough,
  z.zone as pickup_zone,
  b.revenue_month,
  b.service_type,
  b.revenue_monthly_fare,
  b.revenue_monthly_extra,
  b.revenue_monthly_mta_tax,
  b.revenue_monthly_tip_amount,
  b.revenue_monthly_tolls_amount,
  b.revenue_monthly_ehail_fee,
  b.revenue_monthly_improvement_surcharge,
  b.revenue_monthly_total_amount,
  b.total_monthly_trips,
  b.avg_monthly_passenger_count,
  b.avg_monthly_trip_distance
from by_zone as b
left join {{ ref('dim_zones') }} as z on z.location_id = b.pickup_location_id
