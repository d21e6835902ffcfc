{{ feed_select('green') }}
