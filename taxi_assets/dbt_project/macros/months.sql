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
