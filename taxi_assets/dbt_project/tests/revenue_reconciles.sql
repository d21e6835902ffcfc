{#- The revenue mart holds every in-month trip of the month's green and yellow files: per
    service type, its trips and total_amount summed over zones equal the loaded table's count
    and sum (to the cent). Returns the feeds that differ. -#}
{{ config(tags=['monthly']) }}
with loaded as (
  {%- for taxi in ['green', 'yellow'] %}
  {%- set service_type, pickup = feed(taxi)['service_type'], feed(taxi)['exprs']['pickup_datetime'] %}
  {%- set table = source(var('source'), taxi) %}
  {%- if (not execute) or adapter.get_relation(table.database, table.schema, table.identifier) is not none %}
  select
    '{{ service_type }}' as service_type,
    count(*) as trips,
    coalesce({{ money_sum(as_micros('total_amount')) }}, 0) as total_amount
  from {{ table }}
  where {{ month_rows(taxi) }} and {{ in_month(pickup) }}
  {%- else %}
  {#- never loaded in this store: no trips #}
  select '{{ service_type }}' as service_type, 0 as trips, {{ as_money('0') }} as total_amount
  {%- endif %}
  {%- if not loop.last %}
  union all
  {%- endif %}
  {%- endfor %}
),
mart as (
  select
    service_type,
    sum(total_monthly_trips) as trips,
    coalesce(sum(revenue_monthly_total_amount), 0) as total_amount
  from {{ ref('fct_monthly_zone_revenue') }}
  where revenue_month = {{ month_literal() }}
  group by service_type
)
select
  l.service_type,
  l.trips as loaded_trips,
  coalesce(m.trips, 0) as mart_trips,
  l.total_amount as loaded_total_amount,
  coalesce(m.total_amount, 0) as mart_total_amount
from loaded as l
left join mart as m on m.service_type = l.service_type
where l.trips != coalesce(m.trips, 0) or abs(l.total_amount - coalesce(m.total_amount, 0)) >= 0.005
