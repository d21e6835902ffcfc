"""Dagster's own conventions: the `dg` CLI works on the project as it is laid out (`[tool.dg]` in
pyproject.toml: root module `taxi_assets`, Definitions in `taxi_assets.definitions`), and nothing
imports Dagster's private modules (`dagster._…` can change in any release)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, unconfigured_env

from taxi_assets import checks
from taxi_assets.datasets import MIRROR_DATASETS, TLC_DATASETS

pytestmark = pytest.mark.slow
DG = Path(sys.executable).parent / "dg"


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


def test_dg_list_defs_lists_every_chain_with_its_checks_job_and_schedule(tmp_path):
    result = _dg(tmp_path, "list", "defs", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(result.stdout)
    chains = {f"{t}_trips_{s}" for t in MIRROR_DATASETS for s in ("csv", "postgres", "gcs", "bigquery")}
    tlc = {f"tlc_{t}_trips_{s}" for t in TLC_DATASETS for s in ("parquet", "postgres", "gcs", "bigquery")}
    assert {a["asset_key"] for a in listed["assets"]} == chains | tlc | {"products", "avg_price_by_brand"}
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
    assert {j["name"] for j in listed["jobs"]} == {f"{t}_trips_job" for t in MIRROR_DATASETS} | {
        f"tlc_{t}_trips_job" for t in TLC_DATASETS
    }
    assert {s["name"] for s in listed["sensors"]} == {f"tlc_{t}_published_months" for t in TLC_DATASETS} | {
        "loads_from_the_ledgers"
    }
    assert {s["name"]: s["cron_schedule"] for s in listed["schedules"]} == {
        "green_trips_monthly": "0 9 1 * *",
        "yellow_trips_monthly": "0 10 1 * *",
        "fhv_trips_monthly": "0 11 1 * *",
    }
    assert {r["name"] for r in listed["resources"]} >= {"source", "postgres", "gcs", "bigquery"}


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
