{{ staging_select('fhv', 'FHV', {
    'dispatching_base_num': 'dispatching_base_num',
    'pickup_location_id': 'pulocationid', 'dropoff_location_id': 'dolocationid',
    'pickup_datetime': 'pickup_datetime', 'dropoff_datetime': 'dropoff_datetime',
}) }}
