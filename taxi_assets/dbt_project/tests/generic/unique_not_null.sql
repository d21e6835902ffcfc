{#- `unique` and `not_null` of one column in one pass (one aggregate over the month, not two
    scans): the values that repeat, and a null. -#}
{% test unique_not_null(model, column_name) %}
select {{ column_name }} as unique_field, count(*) as n_records
from {{ model }}
group by {{ column_name }}
having count(*) > 1 or {{ column_name }} is null
{% endtest %}
