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

{% macro typed(kind, expr) -%}
  {%- if kind == 'int' -%}{{ as_int(expr) }}
  {%- elif kind == 'money' -%}{{ as_money(expr) }}
  {%- elif kind == 'timestamp' -%}{{ as_timestamp(expr) }}
  {%- else -%}{{ as_text(expr) }}{%- endif -%}
{%- endmacro %}

{#- select ... from the month's file of `taxi` in this run's source. `extra` are columns after
    the shape (fhvhv's pay), as (name, kind, expression). -#}
{% macro staging_select(taxi, service_type, exprs, extra=[]) -%}
{%- set table = source(var('source'), taxi) -%}
{%- set loaded = (not execute) or adapter.get_relation(table.database, table.schema, table.identifier) is not none -%}
{%- if not loaded -%}{%- set exprs = {} -%}{%- endif -%}
select
  {{ 'unique_row_id' if loaded else as_text('null') ~ ' as unique_row_id' }},
  {{ 'filename' if loaded else as_text('null') ~ ' as filename' }},
  {{ month_literal() }} as file_month,
  '{{ service_type }}' as service_type,
  {%- for name, kind in trip_columns() %}
  {{ typed(kind, exprs.get(name, 'null')) }} as {{ name }},
  {%- endfor %}
  {%- for name, kind, expr in extra %}
  {{ typed(kind, expr if loaded else 'null') }} as {{ name }},
  {%- endfor %}
  {{ in_month(as_timestamp(exprs.get('pickup_datetime', 'null'))) }} as pickup_in_month
{%- if loaded %}
from {{ table }}
where {{ month_rows(taxi) }}
{%- else %}
{#- never loaded in this store: the feed has no rows, in the same shape #}
limit 0
{%- endif %}
{%- endmacro %}
