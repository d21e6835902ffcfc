{#- Casts into the one staging shape, the same in Postgres and BigQuery: money as exact
    decimals (Postgres holds it as double precision, BigQuery as NUMERIC), ids as integers (the
    mirror's Postgres tables hold them as text). -#}
{% macro as_int(expr) -%}cast({{ expr }} as {{ dbt.type_int() }}){%- endmacro %}
{% macro as_money(expr) -%}cast({{ expr }} as {{ 'numeric' if target.type == 'bigquery' else 'numeric(18,6)' }}){%- endmacro %}
{% macro as_text(expr) -%}cast({{ expr }} as {{ 'string' if target.type == 'bigquery' else 'text' }}){%- endmacro %}
{% macro as_timestamp(expr) -%}cast({{ expr }} as {{ 'timestamp' }}){%- endmacro %}
{% macro money_sum(expr) -%}round(sum({{ expr }}), 2){%- endmacro %}
