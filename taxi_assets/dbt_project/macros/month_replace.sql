{#- Postgres's per-month incremental strategy: delete the month, insert it, in the one
    transaction dbt runs an incremental model in. The month's rows are exactly the model's
    select (it reads only that month's file); other months are not touched. The model names its
    month column in its config: meta={'month_column': ...}. (BigQuery: static insert_overwrite instead.) -#}
{% macro get_incremental_month_replace_sql(arg_dict) %}
  {%- set target = arg_dict['target_relation'] -%}
  {%- set source = arg_dict['temp_relation'] -%}
  {%- set month_column = (config.get('meta') or {}).get('month_column') -%}
  {%- if not month_column -%}
    {{ exceptions.raise_compiler_error("month_replace needs the model's config meta={'month_column': ...}") }}
  {%- endif -%}
  {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
  delete from {{ target }} where {{ adapter.quote(month_column) }} = {{ month_literal() }};
  insert into {{ target }} ({{ columns }})
  select {{ columns }} from {{ source }}
{% endmacro %}

{#- An index on a monthly model's month column (Postgres): the delete finds the month by it.
    Made once, when missing: CREATE INDEX takes a SHARE lock, which two months' builds at once
    (each holding ROW EXCLUSIVE from its delete and insert) would deadlock on. -#}
{% macro month_index(column) -%}
  {%- set name = this.identifier ~ '_' ~ column ~ '_idx' -%}
  {%- if target.type == 'postgres' and execute -%}
    {%- set found = run_query("select 1 from pg_indexes where schemaname = '" ~ this.schema ~ "' and indexname = '" ~ name ~ "'") -%}
    {%- if found.rows | length == 0 -%}
      create index if not exists {{ name }} on {{ this }} ({{ column }})
    {%- else -%}
      select 1
    {%- endif -%}
  {%- else -%}
    select 1
  {%- endif -%}
{%- endmacro %}
