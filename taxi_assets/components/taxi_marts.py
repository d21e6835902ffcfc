"""The taxi-marts Component: one source's dbt marts in one store, as Dagster assets, declared in YAML.

    type: taxi_assets.components.taxi_marts.TaxiMartsComponent
    attributes:
      source: mirror      # whose loaded tables: mirror | tlc (taxi_assets.datasets.SOURCES)
      store: postgres     # where: postgres | bigquery (taxi_assets.marts.STORES)

The dbt project of `taxi_assets.marts` (PROJECT_DIR), read from its manifest: the models tagged
`monthly` (fct_trips, fct_monthly_zone_revenue, and for the TLC fct_monthly_fhvhv_zone_pay) are
one partitioned multi-asset, a month per partition, whose dbt tests are its asset checks; the
dims (the seeds and dim_zones, tag `dims`) another, unpartitioned. Keys
`marts/<store>/<source>/<node>`, group `marts_<source>_<store>`, kinds {dbt, <store>}. The dbt
sources are our load assets (`green_trips_postgres`, `tlc_fhvhv_trips_bigquery`, ...), so the
lineage runs file -> table -> marts. A month's marts are requested by declarative automation once
a load of that month landed and no load of it is running (`marts_condition`); an automation
sensor per instance evaluates it. A new source or store is one more YAML document.

The manifest differs per source (tlc-only models are enabled by the `source` var), so it is
parsed per source and store, with a placeholder month and a placeholder profile (parsing connects
to nothing), and kept under the state folder keyed by the project's contents (`manifest_for`).
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import yaml
from dagster import AssetExecutionContext
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field, model_validator

from taxi_assets import ledger, marts, marts_ledger
from taxi_assets.config import POSTGRES_DSN, Settings
from taxi_assets.datasets import DATASETS_BY_SOURCE, SOURCES, dataset
from taxi_assets.defs.assets import bigquery_key, one_line_failures, postgres_key
from taxi_assets.defs.partitions import partitions_for
from taxi_assets.defs.resources import TaxiBigQueryResource, TaxiPostgresResource
from taxi_assets.months import Month

PLACEHOLDER_MONTH = "1900-01"  # parsing needs a month; any will do (it only shapes the SQL, not the graph)
DBT_RESOURCE_KEY = "dbt"  # defined once, in taxi_assets/defs/marts_resources.py


def marts_key(store: str, source: str, node: str) -> dg.AssetKey:
    """`marts/<store>/<source>/<node>`: the same mart of two sources or two stores never collides."""
    return dg.AssetKey(["marts", store, source, node])


def marts_group(source: str, store: str) -> str:
    return f"marts_{source}_{store}"


def marts_partitions(source: str) -> dg.MonthlyPartitionsDefinition:
    """The source's months, from its earliest feed's first month to its last (open: the TLC's):
    the definition of the feed whose range that is (one definition per range, `partitions_for`)."""
    feeds = DATASETS_BY_SOURCE[source].values()
    first = min(ds.first_month for ds in feeds)
    last = None if any(ds.last_month is None for ds in feeds) else max(ds.last_month for ds in feeds)
    widest = next((ds for ds in feeds if (ds.first_month, ds.last_month) == (first, last)), None)
    if widest is None:
        raise ValueError(f"no {source} feed spans {first}..{last or 'open'}: the marts' months need one")
    return partitions_for(widest)


def marts_condition(dims: dg.AssetSelection) -> dg.AutomationCondition:
    """A month's marts, once a load of that month landed (in Dagster, or reported from the ledgers)
    and none of the month's loads is running. Not `eager()`: it waits for every upstream partition
    (`any_deps_missing`), and a month's marts depend on all the source's feeds, some never loaded
    for that month (fhv), nor `in_latest_time_window`: loads are backfills of any month, and the
    TLC's newest month lags the calendar. `since_last_handled` keeps a load's update until the
    month is requested, so a month whose green load lands while yellow's still runs is built
    once, after both. The dims (unpartitioned, built by the first month) are ignored: their update
    would otherwise request every month."""
    return (
        dg.AutomationCondition.any_deps_updated().ignore(dims).since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress().ignore(dims)
        & ~dg.AutomationCondition.in_progress()
    ).with_label("a load of the month landed, none running")


# ---------------------------------------------------------------------------------------------
# The manifest


def _placeholder_profile(store: str, settings: Settings) -> dict:
    """A profile of the store's adapter for `dbt parse`, which connects to nothing: no secrets,
    no server started (the real profile, `marts.write_profiles`, starts the embedded Postgres)."""
    output = (
        {"type": "postgres", "host": "localhost", "port": 5432, "user": "parse", "password": "", "dbname": "parse"}
        | {"schema": marts.POSTGRES_RAW_SCHEMA, "threads": 1}
        if store == marts.POSTGRES
        else {"type": "bigquery", "method": "oauth-secrets", "token": "parse", "project": "parse"}
        | {"dataset": settings.gcp_dataset, "threads": 1}
    )
    return {marts.PROFILE: {"target": store, "outputs": {store: output}}}


def _project_digest(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode())
    for path in sorted(marts.PROJECT_DIR.rglob("*")):
        relative = path.relative_to(marts.PROJECT_DIR)
        if path.is_file() and relative.parts[0] not in ("target", "logs", "dbt_packages"):
            digest.update(str(relative).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _attach_singular_tests(manifest: dict) -> dict:
    """A singular test reading sources besides one model (revenue_reconciles) is that model's
    check, as dagster-dbt does when the test names it in `meta: {dagster: {ref: ...}}`; without
    it dagster-dbt logs the result as an observation."""
    for node in manifest["nodes"].values():
        meta = node.setdefault("config", {}).setdefault("meta", {})
        if node["resource_type"] != "test" or node.get("attached_node") or meta.get("dagster", {}).get("ref"):
            continue
        refs = [u for u in node["depends_on"]["nodes"] if u.split(".")[0] in ("model", "seed", "snapshot")]
        if len(refs) == 1 and len(node["depends_on"]["nodes"]) > 1:
            meta.setdefault("dagster", {})["ref"] = {"name": manifest["nodes"][refs[0]]["name"]}
    return manifest


@cache
def manifest_for(source: str, store: str) -> tuple[Path, dict]:
    """The dbt manifest of `source`'s marts in `store` (its folder, and its contents): parsed once
    per version of the project (parsing takes seconds, and every process that loads the code
    location needs it), into `manifest_cache`."""
    settings = Settings.from_env()
    profile = _placeholder_profile(store, settings)
    variables = json.dumps(marts.dbt_vars(source, Month.parse(PLACEHOLDER_MONTH)))
    key = _project_digest(source, store, variables, json.dumps(profile, sort_keys=True), _dbt_version())
    folder = manifest_cache(settings) / f"{source}-{store}-{key}"
    if not (folder / "manifest.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{source}-{store}-", dir=folder.parent))
        try:
            (work / "profiles").mkdir()
            (work / "profiles" / "profiles.yml").write_text(yaml.safe_dump(profile))
            result = marts.run_dbt(["parse", "--target", store, "--vars", variables], work / "profiles", work)
            if not result.success:
                raise marts.MartsError(f"dbt parse of the {source} marts for {store} failed: {result.exception}")
            (work / "target" / "profiles").mkdir()  # kept for DbtProject, which wants a profiles folder
            shutil.copy(work / "profiles" / "profiles.yml", work / "target" / "profiles" / "profiles.yml")
            try:
                os.replace(work / "target", folder)  # atomic: a concurrent parse of the same version loses
            except OSError:
                if not (folder / "manifest.json").exists():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder, _attach_singular_tests(json.loads((folder / "manifest.json").read_text()))


def manifest_cache(settings: Settings) -> Path:
    """Where parsed manifests are kept. Each is derived from the packaged project alone, and its
    key names all it depends on (the project's files, vars, placeholder profile, dbt's version),
    so every state folder of the user shares them, as pip shares its cache: ~/.cache/taxi-assets
    (or $XDG_CACHE_HOME's). The state folder's dbt/manifests/ where that is not writable."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taxi-assets" / "dbt-manifests"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if os.access(cache, os.W_OK):
            return cache
    except OSError:
        pass
    return settings.state_dir / "dbt" / "manifests"


def _dbt_version() -> str:
    from importlib.metadata import version

    return version("dbt-core")


# ---------------------------------------------------------------------------------------------
# Keys, groups, kinds, partitions, automation


class TaxiMartsTranslator(DagsterDbtTranslator):
    """dbt nodes as our assets: models and seeds `marts/<store>/<source>/<node>` in group
    `marts_<source>_<store>`, kinds {dbt, <store>}; the dbt sources, our load assets of the store
    (`mirror.green` -> `green_trips_postgres`); the monthly models automated by `marts_condition`."""

    def __init__(self, source: str, store: str, automation: dg.AutomationCondition | None = None):
        super().__init__()
        self.source, self.store, self.automation = source, store, automation

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            ds = dataset(props["name"], props["source_name"])
            return spec.replace_attributes(key=postgres_key(ds) if self.store == marts.POSTGRES else bigquery_key(ds))
        monthly = "monthly" in props.get("config", {}).get("tags", [])
        return spec.replace_attributes(
            key=marts_key(self.store, self.source, props["name"]),
            group_name=marts_group(self.source, self.store),
            kinds={"dbt", self.store},
            automation_condition=self.automation if monthly else None,
        )


# ---------------------------------------------------------------------------------------------
# Running dbt


def store_settings(store: str, postgres: TaxiPostgresResource, bigquery: TaxiBigQueryResource) -> Settings:
    """The settings of the store's resource (BigQuery: its emulator started when not configured)."""
    return postgres.settings() if store == marts.POSTGRES else bigquery.settings()


def dbt_for_run(dbt: DbtCliResource, profiles_dir: Path, store: str) -> DbtCliResource:
    """The configured dbt resource with this run's profile (written per run: it holds secrets,
    and the embedded Postgres's port is known once it runs) and the store's target."""
    return DbtCliResource(
        project_dir=dbt.project_dir,
        profiles_dir=str(profiles_dir),
        target=store,
        dbt_executable=dbt.dbt_executable,
        global_config_flags=list(dbt.global_config_flags),
    )


def default_dbt_resource() -> DbtCliResource:
    """The dbt resource: the packaged project, the dbt beside this Python (a venv need not be on PATH)."""
    beside = Path(sys.executable).parent / "dbt"
    return DbtCliResource(
        project_dir=str(marts.PROJECT_DIR),
        dbt_executable=str(beside) if beside.exists() else "dbt",
        global_config_flags=["--no-use-colors", "--no-partial-parse"],
    )


# ---------------------------------------------------------------------------------------------
# The Component


class TaxiMartsComponent(dg.Component, dg.Model, dg.Resolvable):
    """One source's dbt marts in one store: the monthly marts (a partition per month, dbt tests as
    asset checks, built when a month's loads land) and the dims, downstream of the source's loads."""

    source: str = Field(description=f"Whose loaded tables: one of {', '.join(SOURCES)}.")
    store: Literal["postgres", "bigquery"] = Field(description="Where the loaded tables and the marts are.")

    @model_validator(mode="after")
    def _source_exists(self) -> "TaxiMartsComponent":
        if self.source not in DATASETS_BY_SOURCE:
            raise ValueError(f"unknown source {self.source!r}; choose one of {', '.join(DATASETS_BY_SOURCE)}")
        return self

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_marts_defs(self.source, self.store)


def build_marts_defs(source: str, store: str) -> dg.Definitions:
    """The marts of `source` in `store`: the dims, the monthly marts, their automation sensor."""
    folder, manifest = manifest_for(source, store)
    project = DbtProject(project_dir=marts.PROJECT_DIR, target_path=folder, profiles_dir=folder / "profiles")
    plain = TaxiMartsTranslator(source, store)
    name = f"marts_{source}_{store}"

    @dbt_assets(
        manifest=manifest,
        select=marts.DIMS,
        name=f"{name}_dims",
        dagster_dbt_translator=plain,
        project=project,
    )
    def dims(context: AssetExecutionContext, dbt: DbtCliResource, postgres: TaxiPostgresResource, bigquery: TaxiBigQueryResource):  # fmt: skip
        settings = store_settings(store, postgres, bigquery)
        with marts.private_folder(settings, prefix="dagster-") as work:
            run = dbt_for_run(dbt, marts.write_profiles(settings, store, work / "profiles"), store)
            emulator = marts.on_emulator(settings, store)
            variables = json.dumps(marts.dbt_vars(source, Month.parse(PLACEHOLDER_MONTH), bigquery_emulator=emulator))
            args = ["build", "--vars", variables, "--indirect-selection", "cautious"]
            yield from run.cli(args, context=context, target_path=work / "target").stream()

    translator = TaxiMartsTranslator(source, store, marts_condition(dg.AssetSelection.assets(*dims.keys)))

    @dbt_assets(
        manifest=manifest,
        select=marts.MONTHLY,
        name=f"{name}_monthly",
        partitions_def=marts_partitions(source),
        # One month per run: the month reaches dbt as --vars.
        backfill_policy=dg.BackfillPolicy.multi_run(1),
        dagster_dbt_translator=translator,
        project=project,
    )
    @one_line_failures
    def monthly(context: AssetExecutionContext, dbt: DbtCliResource, postgres: TaxiPostgresResource, bigquery: TaxiBigQueryResource):  # fmt: skip
        month = Month.parse(context.partition_key)
        settings = store_settings(store, postgres, bigquery)
        if not (feeds := marts.loaded_feeds(settings, store, source, month)):
            raise marts.MartsError(marts.not_loaded(store, source, month))
        context.log.info(
            f"{source} {month} in {store}, from " + ", ".join(f"{t} ({n:,} rows)" for t, n in feeds.items())
        )
        variables = json.dumps(marts.dbt_vars(source, month, bigquery_emulator=marts.on_emulator(settings, store)))
        with marts.private_folder(settings, prefix="dagster-") as work:
            run = dbt_for_run(dbt, marts.write_profiles(settings, store, work / "profiles"), store)
            first = not marts.dims_present(settings, store, source)
            with marts.first_build_lock(settings, store, marts.marts_schema(settings, store, source), first):
                if first and not marts.dims_present(settings, store, source):  # another run may have built them
                    # The dims' materializations are reported as such; their own checks run when
                    # the dims asset is materialized on its own.
                    args = ["build", "--vars", variables, "--select", marts.DIMS, "--indirect-selection", "cautious"]
                    built = run.cli(args, manifest=manifest, dagster_dbt_translator=plain, target_path=work / "dims")
                    yield from (e for e in built.stream() if isinstance(e, dg.AssetMaterialization))
            yield from run.cli(["build", "--vars", variables], context=context, target_path=work / "target").stream()
        # The build in the store's marts ledger, as the CLI's and Kestra's are (`marts_ledger`).
        built = marts_ledger.build(
            source, month, marts.month_rows(settings, store, source, month), by=ledger.loaded_by_dagster(context.run_id)
        )
        marts_ledger.write(settings, store, marts.marts_schema(settings, store, source), built)

    sensor = dg.AutomationConditionSensorDefinition(
        f"{name}_automation",
        target=dg.AssetSelection.assets(*monthly.keys),
        # Like the ledger sensor: running where a taxi-data Postgres is configured (the stack).
        default_status=dg.DefaultSensorStatus.RUNNING
        if os.environ.get(POSTGRES_DSN)
        else dg.DefaultSensorStatus.STOPPED,
        description=f"Requests the {source} marts in {store} of each month whose loads landed.",
    )
    job = dg.define_asset_job(
        marts_job_name(source, store),
        selection=dg.AssetSelection.assets(*monthly.keys),
        partitions_def=marts_partitions(source),
        executor_def=dg.in_process_executor,  # one dbt build per month: nothing to spread over processes
        description=f"Build one month of the {source} marts in {store} (`dagster job backfill` for many).",
        tags={"source": source, "store": store},
    )
    reported = build_marts_ledger_sensor(source, store, monthly.keys)
    return dg.Definitions(assets=[dims, monthly], sensors=[sensor, reported], jobs=[job])


def build_marts_ledger_sensor(source: str, store: str, keys: set[dg.AssetKey]) -> dg.SensorDefinition:
    """Dagster's catalog shows every build of the marts: each month's newest build in the store's
    marts ledger that a Dagster run did not make (Kestra's, the CLI's) becomes a runless
    materialization of the month's marts (`keys`), with who built it and each mart's rows. As the
    loads' sensor (`loads_from_the_ledgers`): the cursor holds a fingerprint of each month's build
    reported, so a sensor stopped for a while misses none and a month built twice shows its newest."""
    partitions = marts_partitions(source)

    @dg.sensor(
        name=f"marts_{source}_{store}_from_the_ledger",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING
        if os.environ.get(POSTGRES_DSN)
        else dg.DefaultSensorStatus.STOPPED,
        description=f"Reports the {source} marts Kestra and the CLI built in {store} as materializations.",
    )
    def builds_from_the_ledger(
        context: dg.SensorEvaluationContext, postgres: TaxiPostgresResource, bigquery: TaxiBigQueryResource
    ):
        settings = (
            postgres.settings()
            if store == marts.POSTGRES
            else ledger.bigquery_available(bigquery.settings(start=False))
        )
        if settings is None:
            return dg.SkipReason(
                "BigQuery is not configured and its emulator is not running: its marts ledger is not read"
            )
        reported = set(json.loads(context.cursor)) if context.cursor else set()
        events, seen = [], set()
        for month, entry in marts_ledger.builds(settings, store, marts.marts_schema(settings, store, source)).items():
            seen.add(
                mark := hashlib.sha256(f"{month}|{entry.built_at.isoformat()}|{entry.built_by}".encode()).hexdigest()[
                    :12
                ]
            )
            if mark in reported or entry.orchestrator == ledger.DAGSTER or not partitions.has_partition_key(str(month)):
                continue
            events += [
                dg.AssetMaterialization(
                    asset_key=key,
                    partition=str(month),
                    description=f"built by {entry.built_by} (reported from the {store} marts ledger)",
                    metadata={
                        "dagster/row_count": entry.rows.get(key.path[-1], 0),
                        "built_by": entry.built_by,
                        "orchestrator": entry.orchestrator,
                        "run_id": entry.run_id,
                        "built_at": entry.built_at.isoformat(),
                        "code_version": entry.code_version,
                    },
                )
                for key in sorted(keys, key=lambda k: k.to_user_string())
            ]
        cursor = json.dumps(sorted(seen))
        if not events:
            return dg.SensorResult(skip_reason=dg.SkipReason("no new builds"), cursor=cursor)
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return builds_from_the_ledger


def marts_job_name(source: str, store: str) -> str:
    return f"marts_{source}_{store}_job"
