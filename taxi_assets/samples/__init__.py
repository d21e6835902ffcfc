"""Generated sample months and local stand-ins for the download hosts: for offline runs, tests and benchmarks."""
