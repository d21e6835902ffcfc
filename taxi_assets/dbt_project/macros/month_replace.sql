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

{#- Postgres: one build at a time replaces a schema's view (`replaced_view`: two replacements at
    once can fail on the catalog's row), for the rest of the build's transaction. -#}
{% macro view_lock() -%}
  {%- if target.type == 'postgres' -%}
    select pg_advisory_xact_lock(hashtext('taxi_assets marts view {{ this }}'))
  {%- else -%}
    select 1
  {%- endif -%}
{%- endmacro %}

{#- The copy numbering's window: by the id first, in byte order in Postgres (no collation's cost,
    and the sort's abbreviated keys decide: the ids are md5 hex), and the file (so that a query
    of one month's files reads only their partitions: a filter on a window's partition column
    goes below it). -#}
{% macro row_id_key() -%}
  {{- 'unique_row_id collate "C", filename' if target.type == 'postgres' else 'unique_row_id, filename' -}}
{%- endmacro %}

{#- A test's `where: __month__` on fct_trips: the run's month (macros/months.sql, trips_in_month). -#}
{% macro default__get_where_subquery(relation) -%}
  {%- set where = config.get('where', '') -%}
  {%- if where -%}
    {%- if '__month__' in where -%}{%- set where = where.replace('__month__', trips_in_month()) -%}{%- endif -%}
    {%- set filtered -%}
      (select * from {{ relation }} where {{ where }}) dbt_subquery
    {%- endset -%}
    {%- do return(filtered) -%}
  {%- else -%}
    {%- do return(relation) -%}
  {%- endif -%}
{%- endmacro %}

{#- Postgres: a unique index on a dimension's key (made once, under view_lock), so that a query of
    fct_trips that reads nothing of the dimension does not join it (join removal). -#}
{% macro unique_key(model, column) -%}
  {%- if target.type == 'postgres' -%}
    {%- set relation = ref(model) -%}
    create unique index if not exists {{ relation.identifier }}_{{ column }}_key on {{ relation }} ({{ column }})
  {%- else -%}
    select 1
  {%- endif -%}
{%- endmacro %}
