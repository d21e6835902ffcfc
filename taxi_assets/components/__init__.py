"""The project's own Dagster Components (`dg list components` lists them; `defs.yaml` files use them)."""
