{#- Yellow has no trip type (street-hail: 1) and no e-hail fee (0), as the course sets them. -#}
{{ feed_select('yellow') }}
