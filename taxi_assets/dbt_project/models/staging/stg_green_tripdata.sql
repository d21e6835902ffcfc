{{ staging_select('green', 'Green', {
    'vendor_id': 'vendorid', 'rate_code_id': 'ratecodeid',
    'pickup_location_id': 'pulocationid', 'dropoff_location_id': 'dolocationid',
    'pickup_datetime': 'lpep_pickup_datetime', 'dropoff_datetime': 'lpep_dropoff_datetime',
    'store_and_fwd_flag': 'store_and_fwd_flag', 'passenger_count': 'passenger_count',
    'trip_distance': 'trip_distance', 'trip_type': 'trip_type', 'payment_type': 'payment_type',
    'fare_amount': 'fare_amount', 'extra': 'extra', 'mta_tax': 'mta_tax', 'tip_amount': 'tip_amount',
    'tolls_amount': 'tolls_amount', 'ehail_fee': 'ehail_fee',
    'improvement_surcharge': 'improvement_surcharge', 'congestion_surcharge': 'congestion_surcharge',
    'total_amount': 'total_amount',
}) }}
