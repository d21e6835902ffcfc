{#- Casts into the one staging shape, the same in Postgres and BigQuery: money as exact
    decimals (Postgres holds it as double precision, BigQuery as NUMERIC), ids as integers (the
    mirror's Postgres tables hold them as text). -#}
{% macro as_int(expr) -%}cast({{ expr }} as {{ dbt.type_int() }}){%- endmacro %}
{% macro as_money(expr) -%}cast({{ expr }} as {{ 'numeric' if target.type == 'bigquery' else 'numeric(18,6)' }}){%- endmacro %}
{% macro as_text(expr) -%}cast({{ expr }} as {{ 'string' if target.type == 'bigquery' else 'text' }}){%- endmacro %}
{% macro as_date(expr) -%}cast({{ expr }} as date){%- endmacro %}
{% macro as_timestamp(expr) -%}cast({{ expr }} as {{ 'timestamp' }}){%- endmacro %}

{#- A month's staging (stg_*, ephemeral) holds money in Postgres as exact micro-dollars (bigint:
    a double's round(x * 10^6), the same number as its numeric(18,6) for any amount of up to six
    decimals), because Postgres's double-to-numeric cast costs several times the scan (a sum
    over 7.7 M rows: 8.8 s against 2.4 s); summed as bigint (exact, int128) and made dollars
    after. BigQuery: NUMERIC, as everywhere. fct_trips keeps numeric(18,6) (as_money). -#}
{% macro as_micros(expr) -%}
  {%- if target.type == 'postgres' -%}cast(round(cast({{ expr }} as double precision) * 1000000) as bigint)
  {%- else -%}{{ as_money(expr) }}{%- endif -%}
{%- endmacro %}
{% macro money_sum(expr) -%}
  {%- if target.type == 'postgres' -%}round(sum({{ expr }}) / 1000000.0, 2)
  {%- else -%}round(sum({{ expr }}), 2){%- endif -%}
{%- endmacro %}
{% macro money_avg(expr) -%}
  {%- if target.type == 'postgres' -%}avg({{ expr }}) / 1000000.0
  {%- else -%}avg({{ expr }}){%- endif -%}
{%- endmacro %}
