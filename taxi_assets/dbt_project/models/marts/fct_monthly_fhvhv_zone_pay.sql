{#- What the course lacks: the TLC's high-volume for-hire trips (Uber, Lyft, ...), passenger
    fares against driver pay, per pickup zone x file month (in-month pickups). TLC only. -#}
{{ config(
    enabled=(var('source', 'mirror') == 'tlc'),
    materialized='incremental',
    incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'month_replace'),
    meta={'month_column': 'pay_month'},
    partition_by=({'field': 'pay_month', 'data_type': 'date', 'granularity': 'month'} if target.type == 'bigquery' else none),
    partitions=([month_literal()] if target.type == 'bigquery' else none),
    on_schema_change='fail',
    full_refresh=false,
    tags=['monthly'],
    post_hook=["{{ month_index('pay_month') }}"],
) }}
with trips as (
  select * from {{ ref('stg_fhvhv_tripdata') }} where pickup_in_month
),
by_zone as (
  select
    pickup_location_id,
    file_month as pay_month,
    count(*) as total_monthly_trips,
    {{ money_sum('fare_amount') }} as monthly_base_passenger_fare,
    {{ money_sum('tolls_amount') }} as monthly_tolls,
    {{ money_sum('black_car_fund') }} as monthly_black_car_fund,
    {{ money_sum('sales_tax') }} as monthly_sales_tax,
    {{ money_sum('congestion_surcharge') }} as monthly_congestion_surcharge,
    {{ money_sum('airport_fee') }} as monthly_airport_fee,
    {{ money_sum('cbd_congestion_fee') }} as monthly_cbd_congestion_fee,
    {{ money_sum('tip_amount') }} as monthly_tips,
    {{ money_sum('driver_pay') }} as monthly_driver_pay,
    {{ money_avg('trip_distance') }} as avg_monthly_trip_miles,
    avg(trip_seconds) / 60.0 as avg_monthly_trip_minutes
  from trips
  group by pickup_location_id, file_month
)
select
  b.pickup_location_id,
  z.borough as pickup_borough,
  z.zone as pickup_zone,
  b.pay_month,
  b.total_monthly_trips,
  b.monthly_base_passenger_fare,
  b.monthly_tolls,
  b.monthly_black_car_fund,
  b.monthly_sales_tax,
  b.monthly_congestion_surcharge,
  b.monthly_airport_fee,
  b.monthly_cbd_congestion_fee,
  b.monthly_tips,
  b.monthly_driver_pay,
  -- the driver's pay per dollar of the passenger's base fare, and the part of the tips
  round(b.monthly_driver_pay / nullif(b.monthly_base_passenger_fare, 0), 4) as driver_pay_per_fare_dollar,
  round((b.monthly_driver_pay - coalesce(b.monthly_tips, 0)) / nullif(b.monthly_base_passenger_fare, 0), 4)
    as driver_pay_ex_tips_per_fare_dollar,
  b.avg_monthly_trip_miles,
  b.avg_monthly_trip_minutes
from by_zone as b
left join {{ ref('dim_zones') }} as z on z.location_id = b.pickup_location_id
