"""Getting started: the reference's first flow as two Dagster assets over `taxi_assets.products`."""

from pathlib import Path

from dagster import Config, MaterializeResult, MetadataValue, asset

from taxi_assets.config import Settings
from taxi_assets.defs.assets import markdown_table, one_line_failures
from taxi_assets.products import DEFAULT_COLUMNS, average_price_by_brand, fetch_products, products_url


class ProductsConfig(Config):
    columns_to_keep: list[str] = list(DEFAULT_COLUMNS)


def _products_file() -> Path:
    return Settings.from_env().state_dir / "getting_started" / "products.json"


@asset(group_name="getting_started", kinds={"json"}, description="Products from the REST API, selected columns.")
@one_line_failures
def products(config: ProductsConfig) -> MaterializeResult:
    count = fetch_products(products_url(), config.columns_to_keep, _products_file())
    return MaterializeResult(metadata={"dagster/row_count": count, "path": MetadataValue.path(str(_products_file()))})


@asset(group_name="getting_started", kinds={"duckdb"}, deps=[products], description="Average price by brand (DuckDB).")
@one_line_failures
def avg_price_by_brand() -> MaterializeResult:
    result = average_price_by_brand(_products_file())
    return MaterializeResult(
        metadata={
            "dagster/row_count": len(result),
            "preview": MetadataValue.md(markdown_table(["brand", "avg_price"], result[:10])),
        }
    )
