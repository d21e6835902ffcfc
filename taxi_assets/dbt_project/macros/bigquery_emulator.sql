{#- BigQuery's static insert_overwrite of a month's partition, as dbt-bigquery writes it (a
    MERGE ... ON FALSE), except on the local BigQuery emulator (`--vars {bigquery_emulator: true}`,
    which taxi_assets.marts sets for it): there that MERGE runs, but its cost grows with the
    product of the month's and the table's rows (a 300,000-row month over 300,000 rows: 334 s),
    so the month is replaced by DELETE + INSERT in one transaction instead, the same statements
    the emulator path of load-bigquery uses. Same rows either way (tested both ways). -#}
{% macro bq_static_insert_overwrite_sql(
    tmp_relation, target_relation, sql, partition_by, partitions, dest_columns, tmp_relation_exists, copy_partitions
) %}
  {%- if var('bigquery_emulator', false) and not copy_partitions -%}
    {%- set columns = get_quoted_csv(dest_columns | map(attribute='name')) -%}
    {%- set source_sql = bq_static_select_insert_overwrite_sql(tmp_relation, sql, partition_by, tmp_relation_exists) -%}
    begin transaction;
    delete from {{ target_relation }} where {{ partition_by.field }} in ({{ partitions | join(', ') }});
    insert into {{ target_relation }} ({{ columns }})
    select {{ columns }} from {{ source_sql }};
    commit transaction;
    {%- if tmp_relation_exists %}
    drop table if exists {{ tmp_relation }};
    {%- endif -%}
  {%- else -%}
    {{ dbt.bq_static_insert_overwrite_sql(
        tmp_relation, target_relation, sql, partition_by, partitions, dest_columns, tmp_relation_exists, copy_partitions
    ) }}
  {%- endif -%}
{% endmacro %}
