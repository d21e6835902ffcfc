{#- Every trip of the loaded files (all feeds of the source, every loaded month), with its zones,
    payment type and duration: a view over the loaded tables, so it is always in line with the
    loads and costs nothing to rebuild (a month of it is read by `where {{ trips_in_month() }}`:
    each loaded table then reads that month's partition only). Keyed by `trip_id`: our
    `unique_row_id`, and for an exact duplicate row (they exist, and are kept) its copy number
    after a dash; the copies are identical rows, so which one gets which number is moot (and a
    query that does not read trip_id skips the numbering, and one that reads no zone or payment
    description skips their joins: Postgres drops a left join on a unique key it does not read). `file_month` is the file's month;
    `pickup_in_month` is false for the rows a file holds from other months. -#}
{{ config(
    materialized='replaced_view' if target.type == 'postgres' else 'view',
    tags=['monthly'],
    pre_hook=["{{ view_lock() }}", "{{ unique_key('dim_zones', 'location_id') }}",
              "{{ unique_key('payment_type_lookup', 'payment_type') }}"],
) }}
{%- set columns = ['unique_row_id', 'filename', 'file_month', 'service_type'] -%}
{%- for name, kind in trip_columns() -%}{%- do columns.append(name) -%}{%- endfor -%}
{%- do columns.append('pickup_in_month') %}
with trips as (
  {%- for taxi in source_feeds() %}
  select
    {{ columns | join(', ') }},
    row_number() over (partition by {{ row_id_key() }}) as copy_number
  from ({{ feed_select(taxi, all_months=true) }}) as {{ taxi }}
  {%- if not loop.last %}
  union all
  {%- endif %}
  {%- endfor %}
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
