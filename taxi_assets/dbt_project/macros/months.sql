{#- The month a run rebuilds: `--vars '{month: "2019-02", source: mirror}'`. A mart's month is the
    loaded FILE's month (the `filename` column names it), never the pickup's. -#}

{% macro month_ym() -%}
  {%- set raw = var('month', '') | string | trim -%}
  {%- if raw == '' -%}
    {%- if execute -%}
      {{ exceptions.raise_compiler_error("set the month to build: --vars '{month: YYYY-MM, source: mirror|tlc}'") }}
    {%- endif -%}
    {{ return('1900-01') }}
  {%- endif -%}
  {%- set ym = raw[:7] -%}
  {%- if modules.re.match('^[0-9]{4}-(0[1-9]|1[0-2])$', ym) is none or (raw | length > 7 and raw[7:] != '-01') -%}
    {{ exceptions.raise_compiler_error("month must be YYYY-MM, got '" ~ raw ~ "'") }}
  {%- endif -%}
  {{ return(ym) }}
{%- endmacro %}

{% macro month_start() -%}{{ return(month_ym() ~ '-01') }}{%- endmacro %}

{% macro next_month_start() -%}
  {%- set y, m = month_ym().split('-') | map('int') | list -%}
  {%- set y2, m2 = (y + 1, 1) if m == 12 else (y, m + 1) -%}
  {{ return('%04d-%02d-01' % (y2, m2)) }}
{%- endmacro %}

{#- SQL literals, valid in Postgres and BigQuery alike. -#}
{% macro month_literal() -%}{{ return("date '" ~ month_start() ~ "'") }}{%- endmacro %}

{% macro in_month(column) -%}
  ({{ column }} >= timestamp '{{ month_start() }} 00:00:00' and {{ column }} < timestamp '{{ next_month_start() }} 00:00:00')
{%- endmacro %}

{#- The file of `taxi`'s month in this run's source, from the generated sources' meta
    (taxi_assets.marts.sources_yaml, from datasets.py). -#}
{% macro month_file(taxi) -%}
  {%- if not execute -%}{{ return('') }}{%- endif -%}
  {%- set key = 'source.taxi_marts.' ~ var('source') ~ '.' ~ taxi -%}
  {%- set node = graph.sources.get(key) -%}
  {%- if node is none -%}
    {{ exceptions.raise_compiler_error("no source table " ~ var('source') ~ "." ~ taxi) }}
  {%- endif -%}
  {%- set meta = node.config.meta if node.config.meta else node.meta -%}
  {{ return(meta.file_name.replace('{month}', month_ym())) }}
{%- endmacro %}

{#- The rows of `taxi`'s loaded file for the month: one LIST partition in Postgres, one `month`
    partition in BigQuery (its tables are partitioned on the file's month). -#}
{% macro month_rows(taxi) -%}
  filename = '{{ month_file(taxi) }}'
  {%- if target.type == 'bigquery' %} and month = {{ month_literal() }}{% endif %}
{%- endmacro %}

{#- A loaded row's file month: BigQuery's tables hold it (`month`, their partition); in Postgres
    it is read from the file's name (`filename`, the LIST partition key; make_date, several
    times cheaper per row than to_date). -#}
{% macro file_month_of(taxi) -%}
  {%- if target.type == 'bigquery' -%}
    month
  {%- else -%}
    {%- set at = file_name_pattern(taxi).find('{month}') -%}
    make_date(cast(substr(filename, {{ at + 1 }}, 4) as integer), cast(substr(filename, {{ at + 6 }}, 2) as integer), 1)
  {%- endif -%}
{%- endmacro %}

{% macro file_name_pattern(taxi) -%}
  {%- if not execute -%}{{ return('{month}') }}{%- endif -%}
  {%- set node = graph.sources.get('source.taxi_marts.' ~ var('source') ~ '.' ~ taxi) -%}
  {%- set meta = node.config.meta if node.config.meta else node.meta -%}
  {{ return(meta.file_name) }}
{%- endmacro %}

{#- The feeds of this run's source. -#}
{% macro source_feeds() -%}
  {{ return(['green', 'yellow', 'fhv', 'fhvhv'] if var('source', 'mirror') == 'tlc' else ['green', 'yellow', 'fhv']) }}
{%- endmacro %}

{#- The filter of fct_trips (a view over every loaded month) to the run's month. Postgres: the
    month's files by name, so that each loaded table reads its month's partition only; BigQuery:
    the `month` partition. -#}
{% macro trips_in_month() -%}
  {%- if target.type == 'bigquery' -%}
    file_month = {{ month_literal() }}
  {%- else -%}
    filename in (
    {%- for taxi in source_feeds() -%}'{{ month_file(taxi) }}'{{ ', ' if not loop.last }}{%- endfor -%}
    )
  {%- endif -%}
{%- endmacro %}
