"""Dagster's own conventions: the `dg` CLI works on the project as it is laid out (`[tool.dg]` in
pyproject.toml: root module `taxi_assets`, Definitions in `taxi_assets.definitions` loading the folder
taxi_assets/defs/, one `defs.yaml` per source), and nothing imports Dagster's private modules
(`dagster._…` can change in any release).

tests/fixtures/dg_list_defs.json is what `dg list defs --json` listed before the folder layout (the
definitions were assembled by hand then), normalized by `normalized_listing`; the layout must list
the same. Its `marts` entry is the dbt marts' part (taxi_assets/defs/marts/defs.yaml, issue 19),
added since and compared on its own, so the chains' part stays what it was. Rewrite it only for a
change meant to change the definitions:
`.venv/bin/dg list defs --json | .venv/bin/python tests/test_dg.py > tests/fixtures/dg_list_defs.json`."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES, ROOT, unconfigured_env

from taxi_assets import checks, marts
from taxi_assets.datasets import MIRROR_DATASETS, TLC_DATASETS

pytestmark = pytest.mark.slow
DG = Path(sys.executable).parent / "dg"
LISTING = FIXTURES / "dg_list_defs.json"


def normalized_listing(listed: dict) -> dict:
    """What `dg list defs --json` says of the definitions, sorted, without what describes where they
    are written (descriptions, the `source` file a Component's definitions carry)."""
    return {
        "assets": sorted(
            (
                {
                    "key": a["asset_key"],
                    "group": a["group_name"],
                    "kinds": sorted(a["kinds"]),
                    "deps": sorted(a["dependency_keys"]),
                }
                for a in listed["assets"]
            ),
            key=lambda a: a["key"],
        ),
        "asset_checks": sorted(
            ({"key": c["key"], "asset": c["asset_key"]} for c in listed["asset_checks"]), key=lambda c: c["key"]
        ),
        "jobs": sorted(j["name"] for j in listed["jobs"]),
        "schedules": {s["name"]: s["cron_schedule"] for s in sorted(listed["schedules"], key=lambda s: s["name"])},
        "sensors": sorted(s["name"] for s in listed["sensors"]),
        "resources": {r["name"]: r["type"] for r in sorted(listed["resources"], key=lambda r: r["name"])},
    }


def _is_marts(kind: str, item) -> bool:
    """Whether a normalized entry is the dbt marts' (keys `marts/...`, their sensors, the dbt resource)."""
    if kind in ("assets", "asset_checks"):
        return item["key"].startswith("marts/")
    if kind in ("sensors", "jobs"):
        return item.startswith("marts_")
    return kind == "resources" and item == "dbt"


def split_listing(normalized: dict) -> tuple[dict, dict]:
    """A normalized listing as (the chains' part, the marts' part), each in the same shape."""
    parts: tuple[dict, dict] = ({}, {})
    for kind, items in normalized.items():
        for part in (False, True):
            if isinstance(items, dict):
                parts[part][kind] = {k: v for k, v in items.items() if _is_marts(kind, k) == part}
            else:
                parts[part][kind] = [i for i in items if _is_marts(kind, i) == part]
    return parts


def fixture_listing(normalized: dict) -> dict:
    """The fixture's form: the chains' part, and the marts' part under `marts`."""
    chains, marts_part = split_listing(normalized)
    return {**chains, "marts": marts_part}


def _dg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`dg …` in the project folder as a newcomer runs it: `.venv/bin/dg` without activating the
    venv, nothing configured, the project's instance settings (in a DAGSTER_HOME of the test's own)."""
    if not DG.exists():
        pytest.fail(f"no {DG}: dagster-dg-cli is a dependency, `pip install -e '.[test]'`", pytrace=False)
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in unconfigured_env().items() if k != "VIRTUAL_ENV"} | {"DAGSTER_HOME": str(home)}
    return subprocess.run([DG, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_dg_check_defs_loads_the_project_and_says_nothing_else(tmp_path):
    result = _dg(tmp_path, "check", "defs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "All component YAML validated successfully.",
        "All definitions loaded successfully.",
    ]
    assert result.stderr == ""  # no venv-mismatch notice, no preview warnings, no telemetry banner


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> dict:
    """`dg list defs --json`, once for the tests that read it."""
    result = _dg(tmp_path_factory.mktemp("dg"), "list", "defs", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_dg_list_defs_lists_what_the_hand_assembled_definitions_did(listed):
    """The folder layout (a Component per source, resources and single definitions discovered)
    lists exactly the assets, checks, jobs, schedules, sensors and resources listed before it,
    and besides them the marts as recorded since."""
    expected = json.loads(LISTING.read_text())
    chains, marts_part = split_listing(normalized_listing(listed))
    assert chains == {k: v for k, v in expected.items() if k != "marts"}
    assert marts_part == expected["marts"]


def test_dg_list_defs_lists_the_marts_of_each_source_in_each_store(listed):
    """Per source x store (one document of taxi_assets/defs/marts/defs.yaml): its dbt models and
    seeds as `marts/<store>/<source>/<node>`, group `marts_<source>_<store>`, kinds {dbt, <store>},
    downstream of that store's load assets of the source; dbt's tests as their checks; an
    automation sensor and a sensor reporting the builds of its marts ledger; one dbt resource."""
    assets = {a["asset_key"]: a for a in listed["assets"] if a["asset_key"].startswith("marts/")}
    check_keys = {c["key"] for c in listed["asset_checks"]}
    expected_keys = set()
    for source, feeds in (("mirror", MIRROR_DATASETS), ("tlc", TLC_DATASETS)):
        for store in marts.STORES:
            prefix = f"marts/{store}/{source}"
            nodes = (*marts.MARTS[source], "dim_zones", "taxi_zone_lookup", "payment_type_lookup")
            expected_keys |= {f"{prefix}/{node}" for node in nodes}
            for node in nodes:
                asset = assets[f"{prefix}/{node}"]
                assert asset["group_name"] == f"marts_{source}_{store}" and set(asset["kinds"]) == {"dbt", store}
            loads = {f"{'tlc_' if source == 'tlc' else ''}{taxi}_trips_{store}" for taxi in feeds}
            assert loads <= set(assets[f"{prefix}/fct_trips"]["dependency_keys"])
            assert f"{prefix}/fct_trips:unique_fct_trips_trip_id" in check_keys
            assert f"{prefix}/fct_monthly_zone_revenue:revenue_reconciles" in check_keys
            assert any(s["name"] == f"marts_{source}_{store}_automation" for s in listed["sensors"])
            assert any(s["name"] == f"marts_{source}_{store}_from_the_ledger" for s in listed["sensors"])
            assert any(j["name"] == f"marts_{source}_{store}_job" for j in listed["jobs"])
    assert set(assets) == expected_keys
    assert {r["name"]: r["type"] for r in listed["resources"]}["dbt"] == "dagster_dbt.core.resource.DbtCliResource"


def test_each_chain_comes_from_its_source_s_defs_yaml(listed):
    """Each source's chains are its `defs.yaml` (the Component); the getting-started assets and
    the ledger sensor are Python definitions found in the folder."""

    def yaml_file(name: str) -> str:
        folder = "marts" if name.startswith("marts") else "tlc" if name.startswith("tlc_") else "mirror"
        return f"taxi_assets/defs/{folder}/defs.yaml"

    def written_in(item: dict) -> str:
        return (item.get("source") or "").rsplit(":", 1)[0]  # `path:line`, none for Python definitions

    for asset in listed["assets"]:
        python = asset["group_name"] == "getting_started"
        assert written_in(asset) == ("" if python else yaml_file(asset["asset_key"])), asset
    for check in listed["asset_checks"]:
        assert written_in(check) == yaml_file(check["asset_key"]), check
    for item in [*listed["jobs"], *listed["schedules"], *listed["sensors"]]:
        assert written_in(item) == ("" if item["name"] == "loads_from_the_ledgers" else yaml_file(item["name"])), item


def test_dg_list_defs_lists_every_chain_with_its_checks_job_and_schedule(listed):
    chains = {f"{t}_trips_{s}" for t in MIRROR_DATASETS for s in ("csv", "postgres", "gcs", "bigquery")}
    tlc = {f"tlc_{t}_trips_{s}" for t in TLC_DATASETS for s in ("parquet", "postgres", "gcs", "bigquery")}
    listed_chains = {a["asset_key"] for a in listed["assets"] if not a["asset_key"].startswith("marts/")}
    assert listed_chains == chains | tlc | {"products", "avg_price_by_brand"}
    groups = {a["asset_key"]: a["group_name"] for a in listed["assets"]}
    assert all(groups[f"{t}_trips_csv"] == f"{t}_taxi" for t in MIRROR_DATASETS)
    check_keys = {c["key"] for c in listed["asset_checks"]}
    for taxi in [*MIRROR_DATASETS, *(f"tlc_{t}" for t in TLC_DATASETS)]:
        for name in (
            checks.ROWS_MATCH_FILE,
            checks.ROW_IDS_PRESENT,
            checks.DUPLICATE_ROWS_WITHIN_TOLERANCE,
            checks.OUT_OF_MONTH_WITHIN_TOLERANCE,
        ):
            assert f"{taxi}_trips_postgres:{name}" in check_keys
    listed_jobs = {j["name"] for j in listed["jobs"] if not j["name"].startswith("marts_")}
    assert listed_jobs == {f"{t}_trips_job" for t in MIRROR_DATASETS} | {f"tlc_{t}_trips_job" for t in TLC_DATASETS}
    listed_sensors = {s["name"] for s in listed["sensors"] if not s["name"].startswith("marts_")}
    assert listed_sensors == {f"tlc_{t}_published_months" for t in TLC_DATASETS} | {"loads_from_the_ledgers"}
    assert {s["name"]: s["cron_schedule"] for s in listed["schedules"]} == {
        "green_trips_monthly": "0 9 1 * *",
        "yellow_trips_monthly": "0 10 1 * *",
        "fhv_trips_monthly": "0 11 1 * *",
    }
    assert {r["name"] for r in listed["resources"]} >= {"source", "postgres", "gcs", "bigquery"}


@pytest.mark.skipif(
    "registry_modules" not in (ROOT / "pyproject.toml").read_text(),
    reason='pyproject.toml lacks `registry_modules = ["taxi_assets.components.*"]` under [tool.dg.project]',
)
def test_dg_list_components_lists_the_taxi_chain_component(tmp_path):
    result = _dg(tmp_path, "list", "components", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = {c["key"]: c["summary"] for c in json.loads(result.stdout)["items"]}
    assert listed["taxi_assets.components.taxi_chain.TaxiChainComponent"].startswith("The chains of one source's feeds")


def _private_dagster_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.startswith("dagster._")]
    return found


def test_nothing_imports_dagster_private_modules():
    files = [p for folder in ("taxi_assets", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")]
    files += [ROOT / "dev.py"]
    assert len(files) > 30
    assert [hit for path in files for hit in _private_dagster_imports(path)] == []


if __name__ == "__main__":  # `dg list defs --json` on stdin: the fixture, normalized
    print(json.dumps(fixture_listing(normalized_listing(json.load(sys.stdin))), indent=1))
