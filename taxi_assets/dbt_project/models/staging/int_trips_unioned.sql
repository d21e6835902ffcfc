{#- Every feed of the run's source in the one shape (fhvhv without its pay columns). -#}
{%- set feeds = ['stg_green_tripdata', 'stg_yellow_tripdata', 'stg_fhv_tripdata'] -%}
{%- if var('source', 'mirror') == 'tlc' -%}{%- do feeds.append('stg_fhvhv_tripdata') -%}{%- endif -%}
{%- set columns = ['unique_row_id', 'filename', 'file_month', 'service_type'] -%}
{%- for name, kind in trip_columns() -%}{%- do columns.append(name) -%}{%- endfor -%}
{%- do columns.append('pickup_in_month') -%}
{%- for feed in feeds %}
select {{ columns | join(', ') }} from {{ ref(feed) }}
{%- if not loop.last %}
union all
{%- endif -%}
{%- endfor %}
