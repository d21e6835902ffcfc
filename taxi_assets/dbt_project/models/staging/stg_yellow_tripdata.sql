{#- Yellow has no trip type (street-hail: 1) and no e-hail fee (0), as the course sets them. -#}
{{ staging_select('yellow', 'Yellow', {
    'vendor_id': 'vendorid', 'rate_code_id': 'ratecodeid',
    'pickup_location_id': 'pulocationid', 'dropoff_location_id': 'dolocationid',
    'pickup_datetime': 'tpep_pickup_datetime', 'dropoff_datetime': 'tpep_dropoff_datetime',
    'store_and_fwd_flag': 'store_and_fwd_flag', 'passenger_count': 'passenger_count',
    'trip_distance': 'trip_distance', 'trip_type': '1', 'payment_type': 'payment_type',
    'fare_amount': 'fare_amount', 'extra': 'extra', 'mta_tax': 'mta_tax', 'tip_amount': 'tip_amount',
    'tolls_amount': 'tolls_amount', 'ehail_fee': '0',
    'improvement_surcharge': 'improvement_surcharge', 'congestion_surcharge': 'congestion_surcharge',
    'airport_fee': ('airport_fee' if var('source') == 'tlc' else 'null'),
    'total_amount': 'total_amount',
}) }}
