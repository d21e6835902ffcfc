{#- One schema (dataset) of marts per source: the mirror and the TLC overlap (2019-2021), and
    their marts must never mix. Postgres: `marts_mirror`, `marts_tlc` beside the loaded tables;
    BigQuery: `<GCP_DATASET>_marts_mirror`, `<GCP_DATASET>_marts_tlc` (datasets are project-wide,
    so they carry the raw dataset's name). The target's own schema is the loaded tables'. -#}

{% macro marts_schema() -%}
  {%- set source = var('source', 'mirror') -%}
  {%- if source not in ('mirror', 'tlc') -%}
    {{ exceptions.raise_compiler_error("source must be mirror or tlc, got '" ~ source ~ "'") }}
  {%- endif -%}
  {%- if target.type == 'bigquery' -%}
    {{ return(target.schema ~ '_marts_' ~ source) }}
  {%- else -%}
    {{ return('marts_' ~ source) }}
  {%- endif -%}
{%- endmacro %}

{% macro generate_schema_name(custom_schema_name, node) -%}
  {{ marts_schema() }}
{%- endmacro %}
