{#- The fhvhv pay mart holds every in-month trip of the month's fhvhv file: its trips, base
    fares and driver pay summed over zones equal the loaded table's (to the cent). TLC only. -#}
{{ config(enabled=(var('source', 'mirror') == 'tlc'), tags=['monthly']) }}
{%- set table = source(var('source', 'mirror'), 'fhvhv') if var('source', 'mirror') == 'tlc' else none %}
with loaded as (
  {%- if (not execute) or adapter.get_relation(table.database, table.schema, table.identifier) is not none %}
  select
    count(*) as trips,
    coalesce({{ money_sum(as_micros('base_passenger_fare')) }}, 0) as fare,
    coalesce({{ money_sum(as_micros('driver_pay')) }}, 0) as driver_pay
  from {{ table }}
  where {{ month_rows('fhvhv') }} and {{ in_month('pickup_datetime') }}
  {%- else %}
  select 0 as trips, {{ as_money('0') }} as fare, {{ as_money('0') }} as driver_pay
  {%- endif %}
),
mart as (
  select
    coalesce(sum(total_monthly_trips), 0) as trips,
    coalesce(sum(monthly_base_passenger_fare), 0) as fare,
    coalesce(sum(monthly_driver_pay), 0) as driver_pay
  from {{ ref('fct_monthly_fhvhv_zone_pay') }}
  where pay_month = {{ month_literal() }}
)
select l.trips as loaded_trips, m.trips as mart_trips, l.fare as loaded_fare, m.fare as mart_fare,
  l.driver_pay as loaded_driver_pay, m.driver_pay as mart_driver_pay
from loaded as l cross join mart as m
where l.trips != m.trips or abs(l.fare - m.fare) >= 0.005 or abs(l.driver_pay - m.driver_pay) >= 0.005
