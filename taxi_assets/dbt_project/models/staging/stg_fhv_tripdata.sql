{{ feed_select('fhv') }}
