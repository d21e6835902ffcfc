"""The taxi-chain Component: a source's chains are one `defs.yaml`, so a new source (or a subset of
a source's feeds) is one more YAML file in a defs folder, and nothing else changes."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml
from helpers import ROOT

from taxi_assets.components.taxi_chain import TaxiChainComponent

DEFS = ROOT / "taxi_assets" / "defs"
# Dagster's own, silenced where the code location loads (taxi_assets.definitions.DAGSTER_INTERNAL_BETA).
pytestmark = pytest.mark.filterwarnings("ignore:Parameter `execution_type` of function `AssetsDefinition")


def _project(tmp_path: Path, monkeypatch, name: str, yamls: dict[str, dict]) -> Path:
    """A dg project of its own under `tmp_path` (package `name`) whose defs folder holds these
    `defs.yaml` files, by folder, and the project's resources (its `@definitions` of them)."""
    root = tmp_path / name
    (root / name / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
            [project]
            name = "{name}"
            version = "0"

            [tool.dg]
            directory_type = "project"

            [tool.dg.project]
            root_module = "{name}"
            defs_module = "{name}.defs"
        """)
    )
    (root / name / "__init__.py").write_text("")
    (root / name / "defs" / "__init__.py").write_text("")
    (root / name / "defs" / "resources.py").write_text(
        "from taxi_assets.defs.resources import resources  # noqa: F401\n"
    )
    for folder, content in yamls.items():
        (root / name / "defs" / folder).mkdir()
        (root / name / "defs" / folder / "defs.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    monkeypatch.syspath_prepend(str(root))
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        monkeypatch.delitem(sys.modules, module)
    return root


def _the_project_s(source: str) -> dict:
    """The project's own `defs.yaml` of `source`, as data."""
    return yaml.safe_load((DEFS / source / "defs.yaml").read_text())


def test_a_source_is_one_defs_yaml_with_its_feeds_chains(tmp_path, monkeypatch):
    """The project's TLC file with one feed, and its mirror file with another, copied into an
    empty defs folder: their chains appear, the TLC's with a sensor and the mirror's with a schedule."""
    tlc, mirror = _the_project_s("tlc"), _the_project_s("mirror")
    tlc["attributes"]["feeds"] = ["fhvhv"]
    mirror["attributes"]["feeds"] = ["green"]
    root = _project(tmp_path, monkeypatch, "one_yaml_per_source", {"tlc_fhvhv": tlc, "green": mirror})

    defs = dg.load_from_defs_folder(path_within_project=root)

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {f"tlc_fhvhv_trips_{s}" for s in ("parquet", "postgres", "gcs", "bigquery")} | {
        f"green_trips_{s}" for s in ("csv", "postgres", "gcs", "bigquery")
    }
    check_keys = {k.to_user_string() for k in defs.resolve_asset_graph().asset_check_keys}
    assert {k.split(":")[0] for k in check_keys} == {
        f"{feed}_trips_{store}" for feed in ("tlc_fhvhv", "green") for store in ("postgres", "gcs", "bigquery")
    }
    assert {j.name for j in defs.jobs} == {"tlc_fhvhv_trips_job", "green_trips_job"}
    assert [s.name for s in defs.schedules] == ["green_trips_monthly"]
    assert [s.name for s in defs.sensors] == ["tlc_fhvhv_published_months"]
    assert defs.resolve_job_def("tlc_fhvhv_trips_job").partitions_def.get_partition_keys()[0] == "2019-02"


def test_the_project_s_defs_yaml_are_the_component_with_every_feed():
    assert _the_project_s("mirror") == {
        "type": "taxi_assets.components.taxi_chain.TaxiChainComponent",
        "attributes": {"source": "mirror", "feeds": ["green", "yellow", "fhv"], "new_months": "schedule"},
    }
    assert _the_project_s("tlc") == {
        "type": "taxi_assets.components.taxi_chain.TaxiChainComponent",
        "attributes": {"source": "tlc", "feeds": ["yellow", "green", "fhv", "fhvhv"], "new_months": "sensor"},
    }


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            {"source": "s3", "feeds": ["green"], "new_months": "schedule"},
            "unknown source 's3'; choose one of mirror, tlc",
        ),
        ({"source": "tlc", "feeds": ["purple"], "new_months": "sensor"}, "unknown taxi type 'purple' for source tlc"),
        ({"source": "tlc", "feeds": ["green"], "new_months": "schedule"}, "its new months need `new_months: sensor`"),
        ({"source": "mirror", "feeds": ["green"], "new_months": "daily"}, "new_months"),
        ({"source": "mirror", "feeds": [], "new_months": "schedule"}, "feeds"),
    ],
)
def test_a_wrong_defs_yaml_says_what_is_wrong(attributes, message):
    with pytest.raises(Exception, match=message.replace("(", r"\(")) as raised:
        TaxiChainComponent.resolve_from_yaml(yaml.safe_dump(attributes))
    assert "Traceback" not in str(raised.value)


def test_a_wrong_defs_yaml_fails_the_folder_naming_its_file(tmp_path, monkeypatch):
    wrong = _the_project_s("tlc")
    wrong["attributes"]["feeds"] = ["purple"]
    root = _project(tmp_path, monkeypatch, "wrong_yaml", {"tlc": wrong})
    with pytest.raises(Exception, match=r"tlc\s+└── defs.yaml \(TaxiChainComponent\) \(error\)") as raised:
        dg.load_from_defs_folder(path_within_project=root)
    assert "unknown taxi type 'purple' for source tlc" in str(raised.value.__cause__)
