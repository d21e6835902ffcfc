{#- Rows whose pickup lies outside their file's month: kept in fct_trips, left out of the
    monthly marts. A warning with their count, never a failure (real files hold a few). -#}
{{ config(severity='warn', tags=['monthly']) }}
select unique_row_id, service_type, pickup_datetime
from {{ ref('fct_trips') }}
where {{ trips_in_month() }} and not pickup_in_month
