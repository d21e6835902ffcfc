{#- The TLC's high-volume for-hire trips (no such feed in the mirror). The passenger's fare and
    the driver's pay follow the shape. -#}
{{ config(enabled=(var('source', 'mirror') == 'tlc')) }}
{{ staging_select('fhvhv', 'FHVHV', {
    'dispatching_base_num': 'dispatching_base_num',
    'pickup_location_id': 'pulocationid', 'dropoff_location_id': 'dolocationid',
    'pickup_datetime': 'pickup_datetime', 'dropoff_datetime': 'dropoff_datetime',
    'trip_distance': 'trip_miles', 'fare_amount': 'base_passenger_fare', 'tip_amount': 'tips',
    'tolls_amount': 'tolls', 'congestion_surcharge': 'congestion_surcharge', 'airport_fee': 'airport_fee',
}, extra=[
    ('hvfhs_license_num', 'text', 'hvfhs_license_num'),
    ('trip_seconds', 'int', 'trip_time'),
    ('black_car_fund', 'money', 'bcf'),
    ('sales_tax', 'money', 'sales_tax'),
    ('driver_pay', 'money', 'driver_pay'),
    ('cbd_congestion_fee', 'money', 'cbd_congestion_fee'),
]) }}
