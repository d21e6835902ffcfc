"""The getting-started pipeline: products from a REST API, a few columns, an average by brand.

Mirrors the reference's first flow in both orchestrators with one implementation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import requests

from taxi_assets.config import PRODUCTS_URL
from taxi_assets.errors import DownloadError

DEFAULT_PRODUCTS_URL = "https://dummyjson.com/products"
DEFAULT_COLUMNS = ("brand", "price")


def products_url() -> str:
    return os.environ.get(PRODUCTS_URL) or DEFAULT_PRODUCTS_URL


def fetch_products(url: str, columns: list[str] | tuple[str, ...], dest: Path) -> int:
    """Download the products, keep `columns` (missing ones as null), write JSON; return the count."""
    try:
        resp = requests.get(url, timeout=30)
        resp.raise_for_status()
        payload = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise DownloadError(f"products from {url}: {exc}") from None
    rows = payload["products"] if isinstance(payload, dict) else payload
    kept = [{c: row.get(c) for c in columns} for row in rows]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(kept))
    return len(kept)


def average_price_by_brand(path: Path) -> list[tuple[str | None, float]]:
    """The reference's DuckDB query over the kept columns."""
    import duckdb

    with duckdb.connect() as con:
        return con.execute(
            "SELECT brand, round(avg(price), 2) AS avg_price FROM read_json_auto(?) GROUP BY brand ORDER BY avg_price DESC, brand",
            [str(path)],
        ).fetchall()
