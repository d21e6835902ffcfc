{#- A view replaced in place (Postgres's `create or replace view`), for fct_trips: months built at
    once (a backfill) each replace it while the others' tests read it. dbt's own view
    materialization renames the old view to `__dbt_backup`, renames the new one in and drops the
    backup after the commit: a reader could find no view of that name, and a second build could
    rename its old view onto a backup not yet dropped. In place, the view keeps its oid, a reader
    waits for the replacement and reads the new definition, and `view_lock` (a pre-hook) orders
    the replacements. The columns stay those of the first build (Postgres may only add some at the
    end); fct_trips' are fixed by `trip_columns`. BigQuery replaces views in place already. -#}
{% materialization replaced_view, adapter='postgres' %}
  {%- set target_relation = this.incorporate(type='view') -%}
  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {% call statement('main') -%}
    create or replace view {{ target_relation }} as (
      {{ sql }}
    )
  {%- endcall %}
  {% do persist_docs(target_relation, model) %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
