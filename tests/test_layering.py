"""Issue 18: the steps call the modules below them, never the reverse. Nothing under
taxi_assets/ but the steps themselves and what sits above them (the CLI, the demo, the Dagster
layer) imports `taxi_assets.steps`, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "taxi_assets"
ABOVE_THE_STEPS = ("steps", "cli.py", "demo.py", "defs", "components")


def _below_the_steps() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in ABOVE_THE_STEPS]


def _package_of(path: Path) -> str:
    """The package a module's relative imports start from."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


def _imported(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in `source`, wherever it is (a function's included),
    relative ones resolved from `package`; `from a import b` counts as `a` and as `a.b` (b may
    be a module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found += [(node.lineno, base), *((node.lineno, f"{base}.{alias.name}") for alias in node.names)]
    return found


def _steps_imports(source: str, package: str) -> list[tuple[int, str]]:
    return [
        (line, name)
        for line, name in _imported(source, package)
        if name == "taxi_assets.steps" or name.startswith("taxi_assets.steps.")
    ]


def test_every_form_of_importing_the_steps_is_seen():
    source = (
        "import taxi_assets.steps.extract\n"
        "from taxi_assets import steps\n"
        "def f():\n"
        "    from taxi_assets.steps.gcs import upload_gcs\n"
        "    from .steps import postgres\n"
        "    from . import steps as s\n"
        "from taxi_assets import stores\n"
        "from taxi_assets.monthfile import open_month_file\n"
        "from .csvgz import CHUNK_BYTES\n"
    )
    assert sorted({line for line, _ in _steps_imports(source, "taxi_assets")}) == [1, 2, 4, 5, 6]
    from_monthfile = "from .. import steps\nfrom . import steps\n"  # the second: monthfile's own
    assert _steps_imports(from_monthfile, "taxi_assets.monthfile") == [(1, "taxi_assets.steps")]


def test_nothing_below_the_steps_imports_them():
    offenders = sorted(
        {
            f"{path.relative_to(ROOT)}:{line}: imports taxi_assets.steps"
            for path in _below_the_steps()
            for line, _ in _steps_imports(path.read_text(), _package_of(path))
        }
    )
    assert not offenders, "\n".join(offenders)


def test_the_modules_below_the_steps_are_the_ones_checked():
    checked = {p.relative_to(PACKAGE).as_posix() for p in _below_the_steps()}
    assert {"checks.py", "ledger.py", "status.py", "stores.py", "source.py", "monthfile/csvgz.py"} <= checked
    assert not any(p.split("/")[0] in ABOVE_THE_STEPS for p in checked)
