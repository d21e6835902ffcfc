{#- Rows whose pickup lies outside their file's month: kept in fct_trips, left out of the
    monthly marts. A warning with their count, never a failure (real files hold a few). -#}
{{ config(severity='warn', tags=['monthly']) }}
select trip_id, service_type, pickup_datetime
from {{ ref('fct_trips') }}
where file_month = {{ month_literal() }} and not pickup_in_month
