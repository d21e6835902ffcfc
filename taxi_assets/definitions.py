"""The Dagster code location: everything under taxi_assets/defs/, loaded as a folder.

`[tool.dg.project]` in pyproject.toml names this module and that folder. Each `defs.yaml` there
is one source's taxi chains (the Component `taxi_assets.components.taxi_chain`); the Python
modules add the resources, the ledger sensor and the getting-started assets.
"""

import re
import warnings
from pathlib import Path

import dagster as dg

# Dagster features these definitions use knowingly although Dagster marks them preview. Their
# warnings would print in every process that loads this code location (the demo, the code server
# of `dg dev`, the daemon's run workers, each step's subprocess), 21 times each, and tell a user
# nothing they can act on. Silenced here, at the source, by category and message, before the
# folder loads: any other preview, beta or supersession warning still shows, so a new one is a
# decision, not noise (tests/test_project.py and tests/test_dagster_processes.py fail on one).
ACCEPTED_PREVIEW_FEATURES = ("Specifying a partitions_def on an AssetCheckSpec",)  # per-month check results
for _feature in ACCEPTED_PREVIEW_FEATURES:
    warnings.filterwarnings("ignore", message=re.escape(_feature), category=dg.PreviewWarning)
# Not a feature we use: Dagster's own. A Component's definitions get its YAML file as metadata
# (`Definitions.with_definition_metadata_update`), which rebuilds each asset check as a plain
# AssetsDefinition; the repository turns it back into an AssetChecksDefinition passing the beta
# parameter `execution_type` (repository_data.get_asset_checks_defs_by_key), once per check.
DAGSTER_INTERNAL_BETA = ("Parameter `execution_type` of function `AssetsDefinition.__init__`",)
for _internal in DAGSTER_INTERNAL_BETA:
    warnings.filterwarnings("ignore", message=re.escape(_internal), category=dg.BetaWarning)

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
