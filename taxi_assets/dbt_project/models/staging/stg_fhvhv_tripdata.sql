{#- The TLC's high-volume for-hire trips (no such feed in the mirror). The passenger's fare and
    the driver's pay follow the shape. -#}
{{ config(enabled=(var('source', 'mirror') == 'tlc')) }}
{{ feed_select('fhvhv') }}
