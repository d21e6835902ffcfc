{#- The one staging shape of every feed, snake_case, in this order. A feed gives the
    expressions it has; the others are typed NULLs. -#}
{% macro trip_columns() -%}
  {{ return([
    ('vendor_id', 'int'), ('dispatching_base_num', 'text'), ('rate_code_id', 'int'),
    ('pickup_location_id', 'int'), ('dropoff_location_id', 'int'),
    ('pickup_datetime', 'timestamp'), ('dropoff_datetime', 'timestamp'),
    ('store_and_fwd_flag', 'text'), ('passenger_count', 'int'), ('trip_distance', 'money'),
    ('trip_type', 'int'), ('payment_type', 'int'),
    ('fare_amount', 'money'), ('extra', 'money'), ('mta_tax', 'money'), ('tip_amount', 'money'),
    ('tolls_amount', 'money'), ('ehail_fee', 'money'), ('improvement_surcharge', 'money'),
    ('congestion_surcharge', 'money'), ('airport_fee', 'money'), ('total_amount', 'money'),
  ]) }}
{%- endmacro %}

{% macro typed(kind, expr, micros=false) -%}
  {%- if kind == 'int' -%}{{ as_int(expr) }}
  {%- elif kind == 'money' and micros -%}{{ as_micros(expr) }}
  {%- elif kind == 'money' -%}{{ as_money(expr) }}
  {%- elif kind == 'timestamp' -%}{{ as_timestamp(expr) }}
  {%- else -%}{{ as_text(expr) }}{%- endif -%}
{%- endmacro %}

{#- select ... from the month's file of `taxi` in this run's source, money in micro-dollars in
    Postgres (types.sql, as_micros; sum with money_sum, average with money_avg); `all_months`:
    from every loaded month's file, each row's `file_month` its file's, money numeric (the view
    fct_trips). `extra` are
    columns after the shape (fhvhv's pay), as (name, kind, expression). -#}
{% macro staging_select(taxi, service_type, exprs, extra=[], all_months=false) -%}
{%- set table = source(var('source'), taxi) -%}
{%- set loaded = (not execute) or adapter.get_relation(table.database, table.schema, table.identifier) is not none -%}
{%- if not loaded -%}{%- set exprs = {} -%}{%- endif -%}
{%- set pickup = as_timestamp(exprs.get('pickup_datetime', 'null')) -%}
select
  {{ 'unique_row_id' if loaded else as_text('null') ~ ' as unique_row_id' }},
  {{ 'filename' if loaded else as_text('null') ~ ' as filename' }},
  {%- if all_months %}
  {{ file_month_of(taxi) if loaded else 'cast(null as date)' }} as file_month,
  {%- else %}
  {{ month_literal() }} as file_month,
  {%- endif %}
  '{{ service_type }}' as service_type,
  {%- for name, kind in trip_columns() %}
  {{ typed(kind, exprs.get(name, 'null'), micros=not all_months) }} as {{ name }},
  {%- endfor %}
  {%- for name, kind, expr in extra %}
  {{ typed(kind, expr if loaded else 'null', micros=not all_months) }} as {{ name }},
  {%- endfor %}
  {%- if all_months and not loaded %}
  cast(null as {{ dbt.type_boolean() }}) as pickup_in_month
  {%- elif all_months %}
  {{ as_date(dbt.date_trunc('month', pickup)) }} = {{ file_month_of(taxi) }} as pickup_in_month
  {%- else %}
  {{ in_month(pickup) }} as pickup_in_month
  {%- endif %}
{%- if loaded %}
from {{ table }}
{%- if not all_months %}
where {{ month_rows(taxi) }}
{%- endif %}
{%- else %}
{#- never loaded in this store: the feed has no rows, in the same shape (Postgres: `where false`,
    as `limit 0` would keep the query beside it from running in parallel) #}
{{ 'where false' if target.type == 'postgres' else 'limit 0' }}
{%- endif %}
{%- endmacro %}

{#- Each feed in the one shape: its service type, the expression of each staging column it has
    (the others are NULL) and its columns after the shape (`extra`, as staging_select takes them).
    The one place that says which published column is which (revenue_reconciles reads it too). -#}
{% macro feed(taxi) -%}
  {%- if taxi == 'green' -%}
  {{ return({'service_type': 'Green', 'exprs': {
    'vendor_id': 'vendorid', 'rate_code_id': 'ratecodeid',
    'pickup_location_id': 'pulocationid', 'dropoff_location_id': 'dolocationid',
    'pickup_datetime': 'lpep_pickup_datetime', 'dropoff_datetime': 'lpep_dropoff_datetime',
    'store_and_fwd_flag': 'store_and_fwd_flag', 'passenger_count': 'passenger_count',
    'trip_distance': 'trip_distance', 'trip_type': 'trip_type', 'payment_type': 'payment_type',
    'fare_amount': 'fare_amount', 'extra': 'extra', 'mta_tax': 'mta_tax', 'tip_amount': 'tip_amount',
    'tolls_amount': 'tolls_amount', 'ehail_fee': 'ehail_fee',
    'improvement_surcharge': 'improvement_surcharge', 'congestion_surcharge': 'congestion_surcharge',
    'total_amount': 'total_amount',
  }, 'extra': []}) }}
  {%- elif taxi == 'yellow' -%}
  {{ return({'service_type': 'Yellow', 'exprs': {
    'vendor_id': 'vendorid', 'rate_code_id': 'ratecodeid',
    'pickup_location_id': 'pulocationid', 'dropoff_location_id': 'dolocationid',
    'pickup_datetime': 'tpep_pickup_datetime', 'dropoff_datetime': 'tpep_dropoff_datetime',
    'store_and_fwd_flag': 'store_and_fwd_flag', 'passenger_count': 'passenger_count',
    'trip_distance': 'trip_distance', 'trip_type': '1', 'payment_type': 'payment_type',
    'fare_amount': 'fare_amount', 'extra': 'extra', 'mta_tax': 'mta_tax', 'tip_amount': 'tip_amount',
    'tolls_amount': 'tolls_amount', 'ehail_fee': '0',
    'improvement_surcharge': 'improvement_surcharge', 'congestion_surcharge': 'congestion_surcharge',
    'airport_fee': ('airport_fee' if var('source') == 'tlc' else 'null'),
    'total_amount': 'total_amount',
  }, 'extra': []}) }}
  {%- elif taxi == 'fhv' -%}
  {{ return({'service_type': 'FHV', 'exprs': {
    'dispatching_base_num': 'dispatching_base_num',
    'pickup_location_id': 'pulocationid', 'dropoff_location_id': 'dolocationid',
    'pickup_datetime': 'pickup_datetime', 'dropoff_datetime': 'dropoff_datetime',
  }, 'extra': []}) }}
  {%- elif taxi == 'fhvhv' -%}
  {{ return({'service_type': 'FHVHV', 'exprs': {
    'dispatching_base_num': 'dispatching_base_num',
    'pickup_location_id': 'pulocationid', 'dropoff_location_id': 'dolocationid',
    'pickup_datetime': 'pickup_datetime', 'dropoff_datetime': 'dropoff_datetime',
    'trip_distance': 'trip_miles', 'fare_amount': 'base_passenger_fare', 'tip_amount': 'tips',
    'tolls_amount': 'tolls', 'congestion_surcharge': 'congestion_surcharge', 'airport_fee': 'airport_fee',
  }, 'extra': [
    ('hvfhs_license_num', 'text', 'hvfhs_license_num'),
    ('trip_seconds', 'int', 'trip_time'),
    ('black_car_fund', 'money', 'bcf'),
    ('sales_tax', 'money', 'sales_tax'),
    ('driver_pay', 'money', 'driver_pay'),
    ('cbd_congestion_fee', 'money', 'cbd_congestion_fee'),
  ]}) }}
  {%- else -%}
  {{ exceptions.raise_compiler_error("no feed named " ~ taxi) }}
  {%- endif -%}
{%- endmacro %}

{#- `feed_select(taxi)` is the month's staging (stg_<taxi>_tripdata), `feed_select(taxi,
    all_months=true)` every loaded month's (the view fct_trips). -#}
{% macro feed_select(taxi, all_months=false) -%}
  {%- set f = feed(taxi) -%}
  {{ staging_select(taxi, f['service_type'], f['exprs'], extra=f['extra'], all_months=all_months) }}
{%- endmacro %}
