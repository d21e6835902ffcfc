{#- The month's trips' codes, in one pass (one scan, not one per column): pickup and drop-off
    zones present in `zones` (dim_zones), payment types among `payment_types`. The rows that
    fail, with what fails; nulls pass (as dbt's relationships and accepted_values tests). -#}
{% test trip_codes_known(model, zones, payment_types) %}
select *
from (
  select
    pickup_location_id,
    dropoff_location_id,
    payment_type,
    pickup_location_id is not null and pickup_location_id not in (select location_id from {{ zones }}) as unknown_pickup_zone,
    dropoff_location_id is not null and dropoff_location_id not in (select location_id from {{ zones }}) as unknown_dropoff_zone,
    payment_type is not null and payment_type not in ({{ payment_types | join(', ') }}) as unknown_payment_type
  from {{ model }}
) as codes
where unknown_pickup_zone or unknown_dropoff_zone or unknown_payment_type
{% endtest %}
