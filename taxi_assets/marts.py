"""The dbt marts over the loaded tables, one month at a time, in Postgres or BigQuery.

The dbt project ships in the package (`PROJECT_DIR`). Its sources are the loaded tables of
`datasets.py` (`models/staging/sources.yml` is generated from it by `sources_yaml`, and a test
checks it is current). A run builds one FILE month of one source:

    dbt build --target postgres|bigquery --vars '{month: "2019-02", source: mirror}' --select tag:monthly

and replaces that month's slice of each monthly mart (Postgres: delete the month, insert it, in
one transaction; BigQuery: a static insert_overwrite of the month's partition), nothing else.
The marts of a source live in their own schema (`marts_schema`): the mirror and the TLC overlap
(2019-2021) and must never mix. dim_zones and the seeds (`tag:dims`) are built when missing.

Plain functions for any caller: `python -m taxi_assets marts`, Dagster and Kestra. The profile
(`write_profiles`) is written from `Settings` into a private folder (0700, the file 0600); its
secrets (the Postgres password, GCP credentials) are never printed or logged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from taxi_assets.config import STORE_NAMES, Settings
from taxi_assets.datasets import DATASETS_BY_SOURCE, FILENAME_COLUMN, ROW_ID_COLUMN, SOURCES, TaxiDataset
from taxi_assets.errors import ConfigError, TaxiError
from taxi_assets.months import Month

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent / "dbt_project"
PROJECT_NAME = "taxi_marts"  # `name:` in dbt_project.yml
PROFILE = "taxi_assets"  # `profile:` in dbt_project.yml
STORES = STORE_NAMES  # also the profile's target names
POSTGRES, BIGQUERY = STORES
SOURCES_YAML = PROJECT_DIR / "models" / "staging" / "sources.yml"
MONTHLY = "tag:monthly"  # the models (and their tests) rebuilt per month
DIMS = "tag:dims"  # the seeds and dim_zones, built once
POSTGRES_RAW_SCHEMA = "public"  # where load-postgres creates the taxi tables
# The monthly marts of each source, and the column naming a row's (file) month.
MONTH_COLUMNS = {
    "fct_trips": "file_month",
    "fct_monthly_zone_revenue": "revenue_month",
    "fct_monthly_fhvhv_zone_pay": "pay_month",
}
MARTS = {
    "mirror": ("fct_trips", "fct_monthly_zone_revenue"),
    "tlc": ("fct_trips", "fct_monthly_zone_revenue", "fct_monthly_fhvhv_zone_pay"),
}
TRIPS = "fct_trips"  # a view over the loaded tables (every month), the others tables of monthly slices
SERVICE_TYPES = {"green": "Green", "yellow": "Yellow", "fhv": "FHV", "fhvhv": "FHVHV"}


class MartsError(TaxiError):
    """dbt failed to build a month's marts (a model, or a test of error severity)."""


# ---------------------------------------------------------------------------------------------
# The sources, from datasets.py


def _source_table(ds: TaxiDataset) -> dict:
    columns = (ROW_ID_COLUMN, FILENAME_COLUMN, *ds.columns)
    return {
        "name": ds.taxi,
        "identifier": ds.table,
        "description": f"{ds.source.name} {ds.taxi}: one partition per loaded month file",
        "config": {
            "meta": {
                "file_name": ds.file_name(Month(1900, 1)).replace("1900-01", "{month}"),
                "service_type": SERVICE_TYPES[ds.taxi],
            }
        },
        "columns": [
            {"name": c.sql_name, "config": {"meta": {"postgres_type": c.pg_type, "bigquery_type": c.bq_type}}}
            for c in columns
        ],
    }


def sources_yaml() -> str:
    """The dbt sources of the loaded tables, generated from datasets.py (`SOURCES_YAML`)."""
    doc = {
        "version": 2,
        "sources": [
            {
                "name": source,
                "description": f"the loaded tables of the {source} source (taxi_assets/datasets.py)",
                # The loaded tables are in the target's own schema: Postgres `public`, BigQuery GCP_DATASET.
                "schema": "{{ target.schema }}",
                "tables": [_source_table(ds) for ds in DATASETS_BY_SOURCE[source].values()],
            }
            for source in SOURCES
        ],
    }
    header = (
        "# Generated from taxi_assets/datasets.py by taxi_assets.marts.sources_yaml(); do not edit.\n"
        "# Regenerate: python -c 'import taxi_assets.marts as m; m.write_sources_yaml()'\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def write_sources_yaml() -> Path:
    SOURCES_YAML.write_text(sources_yaml())
    return SOURCES_YAML


# ---------------------------------------------------------------------------------------------
# Names


def _check(store: str, source: str) -> None:
    if store not in STORES:
        raise ConfigError(f"unknown store {store!r}; choose one of {', '.join(STORES)}")
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")


def marts_schema(settings: Settings, store: str, source: str) -> str:
    """Where a source's marts live: Postgres schema `marts_<source>`; BigQuery dataset
    `<GCP_DATASET>_marts_<source>` (the dbt macro `marts_schema` says the same)."""
    _check(store, source)
    return f"{settings.gcp_dataset}_marts_{source}" if store == BIGQUERY else f"marts_{source}"


def dbt_vars(source: str, month: Month, *, bigquery_emulator: bool = False) -> dict[str, str | bool]:
    """The `--vars` of a month's build. `bigquery_emulator`: the target is the local BigQuery
    emulator (a month is replaced by DELETE + INSERT there, not dbt's MERGE: see
    macros/bigquery_emulator.sql); `on_emulator(settings, store)` tells."""
    variables: dict[str, str | bool] = {"month": str(month), "source": source}
    if bigquery_emulator:
        variables["bigquery_emulator"] = True
    return variables


def on_emulator(settings: Settings, store: str) -> bool:
    """Whether `store` is the local BigQuery emulator (then pass `dbt_vars(..., bigquery_emulator=True)`)."""
    return store == BIGQUERY and bool(settings.bigquery_emulator)


# ---------------------------------------------------------------------------------------------
# The profile


def _postgres_output(settings: Settings) -> dict:
    import psycopg

    from taxi_assets import database
    from taxi_assets.config import POSTGRES_DSN

    conninfo = database.dsn(settings)  # the configured server, else the embedded one (started)
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error:  # never echo libpq's parse error: it may quote the password
        raise ConfigError(f"{POSTGRES_DSN} is not a valid Postgres DSN or URI") from None
    output = {
        "type": "postgres",
        "host": info.get("host") or "localhost",
        "port": int(info.get("port") or 5432),
        "user": info.get("user") or os.environ.get("PGUSER") or "postgres",
        "password": info.get("password") or "",
        "dbname": info.get("dbname") or info.get("user") or "postgres",
        "schema": POSTGRES_RAW_SCHEMA,
        "threads": 2,
        "connect_timeout": 15,
        "application_name": "taxi_assets marts",
    }
    if info.get("sslmode"):
        output["sslmode"] = info["sslmode"]
    return output


def _bigquery_output(settings: Settings) -> dict:
    from taxi_assets.config import GCP_CREDENTIALS

    output = {
        "type": "bigquery",
        "project": settings.gcp_project,
        "dataset": settings.gcp_dataset,
        "location": settings.gcp_location,
        "threads": 2,
        "job_execution_timeout_seconds": int(settings.bigquery_timeout),
        "job_retries": 1,
        "priority": "interactive",
    }
    if settings.bigquery_emulator:  # as taxi_assets.gcp decides: an endpoint given is used
        # The emulator takes any token; dbt-bigquery reaches it through api_endpoint.
        return {**output, "method": "oauth-secrets", "token": "emulator", "api_endpoint": settings.bigquery_emulator}
    raw = settings.gcp_credentials
    if not raw:
        return {**output, "method": "oauth"}  # application-default credentials
    if raw.lstrip().startswith("{"):
        try:
            return {**output, "method": "service-account-json", "keyfile_json": json.loads(raw)}
        except ValueError:
            raise ConfigError(f"{GCP_CREDENTIALS} is not a usable service-account key (invalid JSON)") from None
    path = os.path.expanduser(raw)
    if not os.path.isfile(path):  # never quote the value: it might be a mangled key
        raise ConfigError(f"{GCP_CREDENTIALS} is neither a readable key file nor key JSON")
    return {**output, "method": "service-account", "keyfile": path}


def profile(settings: Settings, store: str) -> dict:
    """The dbt profile (`PROFILE`) with the store's target (named as the store)."""
    _check(store, "mirror")
    output = _postgres_output(settings) if store == POSTGRES else _bigquery_output(settings)
    return {PROFILE: {"target": store, "outputs": {store: output}}}


def write_profiles(settings: Settings, store: str, folder: Path) -> Path:
    """Write `folder/profiles.yml` for `store` (the folder made 0700, the file 0600: it holds
    the Postgres password or the GCP key) and return the folder, dbt's `--profiles-dir`.
    For BigQuery, `settings` must already name the emulator or Google Cloud (`with_local_cloud`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / "profiles.yml"
    text = yaml.safe_dump(profile(settings, store), sort_keys=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return folder


# ---------------------------------------------------------------------------------------------
# Running dbt


@dataclass
class NodeResult:
    """One model, seed or test of a dbt run."""

    name: str
    kind: str  # model, seed, test
    status: str  # success, pass, warn, fail, error, skipped
    seconds: float
    rows: int | None = None  # rows written (models, seeds), when the adapter says
    failures: int | None = None  # rows a test found
    message: str = ""


@dataclass
class MartsReport:
    store: str
    source: str
    month: str
    schema: str  # the Postgres schema or BigQuery dataset of the marts
    feeds: dict[str, int]  # the month's loaded feeds (per the ledger) and their rows
    rows: dict[str, int]  # per monthly mart: its rows for the month after the build
    nodes: list[NodeResult] = field(default_factory=list)
    dims_built: bool = False
    seconds: float = 0.0

    @property
    def warnings(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status == "warn"]

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def private_folder(settings: Settings, prefix: str = "run-") -> Iterator[Path]:
    """A folder of this run's own (0700) under the state folder: the profile, dbt's target and
    logs. Removed afterwards (it holds the profile's secrets). The CLI's and Dagster's runs alike."""
    root = settings.state_dir / "dbt"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_DBT_LEVELS = {"warn": logging.WARNING, "error": logging.ERROR}
# Events we turn into our own lines (from the results), or that only repeat them.
_QUIET_EVENTS = {"LogModelResult", "LogTestResult", "LogSeedResult", "RunResultError", "RunResultFailure",
                 "RunResultWarning", "RunResultWarningMessage", "RunResultErrorNoMessage", "EndOfRunSummary",
                 "StatsLine", "LogStartLine", "CheckNodeTestFailure", "SQLCompiledPath"}  # fmt: skip


def _on_event(event) -> None:
    """dbt's events into our log: warnings and errors at their level, the rest at debug."""
    info = event.info
    if info.name in _QUIET_EVENTS:
        return
    level = _DBT_LEVELS.get(info.level, logging.DEBUG)
    if level == logging.DEBUG and not log.isEnabledFor(logging.DEBUG):
        return
    message = (info.msg or "").strip()
    if message.startswith("BigQuery adapter: https://console.cloud.google.com/"):  # a job's link, not news
        level = logging.DEBUG
    if message and log.isEnabledFor(level):
        log.log(level, "dbt: %s", message)


# Postgres session settings of a build's connections (libpq's PGOPTIONS: dbt-postgres's profile
# has no such field): the tests' aggregate over the month's trip ids (7.7 M keys) and the copy
# numbering's sort fit in memory instead of spilling to disk; and no parallel workers, as dbt's
# two threads already keep two cores busy (the trip-id test alone took as long either way, and
# its workers slowed the other thread's queries).
POSTGRES_SESSION = ("-c work_mem=512MB", "-c max_parallel_workers_per_gather=0")


@contextmanager
def _session_options(store: str) -> Iterator[None]:
    if store != POSTGRES:
        yield
        return
    before = os.environ.get("PGOPTIONS")
    os.environ["PGOPTIONS"] = " ".join(filter(None, (before, *POSTGRES_SESSION)))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PGOPTIONS", None)
        else:
            os.environ["PGOPTIONS"] = before


def run_dbt(args: list[str], profiles_dir: Path, work_dir: Path):
    """`dbt <args>` in process on the packaged project, quiet on stdout; dbt's own files (target,
    logs) in `work_dir`. Returns dbt's result object (`dbtRunnerResult`)."""
    from dbt.cli.main import dbtRunner

    command, *rest = args
    full = [
        command,
        "--project-dir", str(PROJECT_DIR),
        "--profiles-dir", str(profiles_dir),
        "--target-path", str(work_dir / "target"),
        "--log-path", str(work_dir / "logs"),
        "--log-level", "none",  # nothing on stdout (Kestra's outputs go there): the events come to _on_event
        "--log-level-file", "none",
        "--no-partial-parse",
        "--no-use-colors",
        "--no-send-anonymous-usage-stats",
        "--no-version-check",
        *rest,
    ]  # fmt: skip
    log.debug("dbt %s", " ".join(full))
    return dbtRunner(callbacks=[_on_event]).invoke(full)


def _node_results(result) -> list[NodeResult]:
    nodes = []
    for r in getattr(result, "results", None) or []:
        node = r.node
        response = r.adapter_response or {}
        rows = response.get("rows_affected") if node.resource_type in ("model", "seed") else None
        nodes.append(
            NodeResult(
                name=node.name,
                kind=str(node.resource_type),
                status=str(r.status),
                seconds=round(r.execution_time or 0.0, 2),
                rows=rows if isinstance(rows, int) and rows >= 0 else None,
                failures=r.failures if node.resource_type == "test" else None,
                message=" ".join(str(r.message or "").split()).split(" compiled code at ")[0],
            )
        )
    return nodes


def _log_nodes(nodes: list[NodeResult], what: str) -> None:
    for n in nodes:
        if n.kind == "test":
            verdict = {"pass": "passed", "warn": "warns", "fail": "FAILED", "error": "ERROR", "skipped": "skipped"}
            found = f"{n.failures:,} rows, " if n.failures else ""
            level = {"pass": logging.INFO, "skipped": logging.DEBUG}.get(n.status, logging.WARNING)
            log.log(level, "%s: test %s %s (%s%.1f s)", what, n.name, verdict.get(n.status, n.status), found, n.seconds)
        else:
            rows = f", {n.rows:,} rows" if n.rows is not None else ""
            level = logging.INFO if n.status == "success" else logging.ERROR
            log.log(level, "%s: %s %s %s (%.1f s%s)", what, n.kind, n.name, n.status, n.seconds, rows)


def _failure(result, nodes: list[NodeResult], what: str) -> str | None:
    """One line for a failed run, or None when it succeeded (warnings are no failure)."""
    bad = [n for n in nodes if n.status in ("error", "fail")]
    if bad:
        first = bad[0]
        detail = f": {first.message}" if first.message and first.status == "error" else ""
        names = ", ".join(f"{n.kind} {n.name} {'failed' if n.status == 'fail' else 'errored'}" for n in bad)
        return f"{what}: {names}{detail}"[:2000]
    if not result.success:
        exc = result.exception
        reason = " ".join(str(exc).split()) if exc is not None else "dbt failed"
        return f"{what}: dbt failed: {reason}"[:2000]
    return None


# ---------------------------------------------------------------------------------------------
# The store: what is loaded, whether dims exist, rows per mart


def loaded_feeds(settings: Settings, store: str, source: str, month: Month) -> dict[str, int]:
    """The month's feeds the store's ledger holds, and their rows."""
    from taxi_assets import ledger

    held = ledger.holdings(settings, store)
    return {
        taxi: held[(source, taxi, month)].rows for taxi in DATASETS_BY_SOURCE[source] if (source, taxi, month) in held
    }


def _postgres_query(settings: Settings, query: str, params: tuple = ()) -> list[tuple]:
    from taxi_assets import database

    with database.connect(settings) as conn:
        return conn.execute(query, params).fetchall()


def _bigquery_query(settings: Settings, query: str) -> list[tuple]:
    from taxi_assets.gcp import bigquery_client

    client = bigquery_client(settings)
    return [tuple(row.values()) for row in client.query(query).result(timeout=settings.bigquery_timeout)]


DIM_TABLES = ("dim_zones", "taxi_zone_lookup", "payment_type_lookup")


def _tables(settings: Settings, store: str, schema: str) -> set[str]:
    """The tables in the marts' schema (dataset); none when it does not exist yet."""
    if store == POSTGRES:
        rows = _postgres_query(
            settings, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        return {name for (name,) in rows}
    from google.api_core.exceptions import NotFound

    from taxi_assets.gcp import bigquery_client

    try:
        return {t.table_id for t in bigquery_client(settings).list_tables(f"{settings.gcp_project}.{schema}")}
    except NotFound:
        return set()


def dims_present(settings: Settings, store: str, source: str) -> bool:
    """Whether the store holds the source's seeds and dim_zones."""
    return set(DIM_TABLES) <= _tables(settings, store, marts_schema(settings, store, source))


@contextmanager
def first_build_lock(settings: Settings, store: str, schema: str, first: bool) -> Iterator[None]:
    """While the schema's tables are made (the first build, or the dims'): one build at a time,
    so that two months built at once (a backfill) do not both create them. Postgres: a session
    advisory lock on the schema's name; BigQuery: none (build a source's first month alone)."""
    if not first or store != POSTGRES:
        yield
        return
    from taxi_assets import database

    with database.connect(settings) as conn:
        conn.autocommit = True
        key = f"taxi_assets marts {schema}"
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def month_rows(settings: Settings, store: str, source: str, month: Month) -> dict[str, int]:
    """Each monthly mart's rows for `month` (0 for a mart not built yet). fct_trips, a view over
    the loaded tables, holds the month's loaded rows: the ledger's count (no scan of the month)."""
    schema = marts_schema(settings, store, source)
    counts = {}
    for mart in MARTS[source]:
        column = MONTH_COLUMNS[mart]
        first = month.start.date().isoformat()
        if mart == TRIPS:  # the view over the loaded tables: the month's loaded rows, as the ledger holds them
            counts[mart] = sum(loaded_feeds(settings, store, source, month).values())
            continue
        try:
            if store == POSTGRES:
                rows = _postgres_query(
                    settings, f'SELECT count(*) FROM "{schema}"."{mart}" WHERE {column} = %s', (first,)
                )
            else:
                table = f"`{settings.gcp_project}.{schema}.{mart}`"
                rows = _bigquery_query(settings, f"SELECT count(*) FROM {table} WHERE {column} = DATE '{first}'")
        except Exception as exc:  # not built yet
            log.debug("counting %s.%s: %s", schema, mart, exc)
            rows = [(0,)]
        counts[mart] = int(rows[0][0])
    return counts


def top_zones(settings: Settings, source: str, month: Month, n: int = 5) -> list[tuple]:
    """The month's `n` pickup zones with the most revenue in Postgres's revenue mart: (zone,
    borough, service type, revenue, trips)."""
    schema = marts_schema(settings, POSTGRES, source)
    return _postgres_query(
        settings,
        f"SELECT pickup_zone, pickup_borough, service_type, revenue_monthly_total_amount, total_monthly_trips"
        f' FROM "{schema}".fct_monthly_zone_revenue WHERE revenue_month = %s'
        f" ORDER BY revenue_monthly_total_amount DESC, pickup_location_id LIMIT {int(n)}",
        (month.start.date(),),
    )


def not_loaded(store: str, source: str, month: Month) -> str:
    """What to say when the store holds no load of the month."""
    step = "load-postgres" if store == POSTGRES else "load-bigquery"
    feeds = "|".join(DATASETS_BY_SOURCE[source])
    return (
        f"{source} {month}: no feed of the month is loaded in {store} (its ledger records none), so there are no"
        f" marts to build; load it first: python -m taxi_assets {step} --source {source} --taxi {feeds} --month {month}"
    )


# ---------------------------------------------------------------------------------------------
# A month's build


def build_marts(
    settings: Settings,
    store: str,
    source: str,
    month: Month,
    *,
    refresh_dims: bool = False,
) -> MartsReport:
    """Rebuild `source`'s marts for the file month `month` in `store` from that month's loaded
    rows; the seeds and dim_zones first when missing (or `refresh_dims`). Raises `MartsError`
    (one line) when a model or a test of error severity fails; tests that warn are reported.
    For BigQuery, `settings` must name the emulator or Google Cloud (`with_local_cloud`)."""
    _check(store, source)
    started = time.monotonic()
    what = f"{source} {month} marts in {store}"
    feeds = loaded_feeds(settings, store, source, month)
    if not feeds:
        raise MartsError(not_loaded(store, source, month))
    schema = marts_schema(settings, store, source)
    log.info("%s: building from %s", what, ", ".join(f"{taxi} ({rows:,} rows)" for taxi, rows in feeds.items()))
    report = MartsReport(store, source, str(month), schema, feeds, {})
    variables = json.dumps(dbt_vars(source, month, bigquery_emulator=on_emulator(settings, store)))
    needed = {*DIM_TABLES, *MARTS[source]}
    first = refresh_dims or not needed <= _tables(settings, store, schema)
    with (
        private_folder(settings) as work,
        first_build_lock(settings, store, schema, first),
        _session_options(store),
    ):
        profiles_dir = write_profiles(settings, store, work / "profiles")
        if refresh_dims or (first and not dims_present(settings, store, source)):
            result = run_dbt(
                ["build", "--target", store, "--vars", variables, "--select", DIMS, "--indirect-selection", "cautious"],
                profiles_dir,
                work,
            )
            nodes = _node_results(result.result)
            _log_nodes(nodes, what)
            report.nodes += nodes
            report.dims_built = True
            if problem := _failure(result, nodes, what):
                raise MartsError(problem)
        result = run_dbt(["build", "--target", store, "--vars", variables, "--select", MONTHLY], profiles_dir, work)
        nodes = _node_results(result.result)
        report.nodes += nodes
        if problem := _failure(result, nodes, what):
            _log_nodes(nodes, what)
            raise MartsError(problem)
    report.rows = month_rows(settings, store, source, month)
    for node in nodes:  # BigQuery's scripts report no rows: the month's, counted
        if node.kind == "model" and node.rows is None and node.name in report.rows:
            node.rows = report.rows[node.name]
    _log_nodes(nodes, what)
    from taxi_assets import marts_ledger

    marts_ledger.write(settings, store, schema, marts_ledger.build(source, month, report.rows))
    report.seconds = round(time.monotonic() - started, 2)
    log.info(
        "%s: built in %.1f s: %s",
        what,
        report.seconds,
        ", ".join(f"{schema}.{mart} {rows:,} rows" for mart, rows in report.rows.items()),
    )
    return report


def compile_marts(settings: Settings, store: str, source: str, month: Month) -> Path:
    """`dbt compile` of the month's models (no store is changed); returns the folder of the
    compiled SQL, kept under the state folder (dbt/compiled-<store>-<source>)."""
    _check(store, source)
    out = settings.state_dir / "dbt" / f"compiled-{store}-{source}"
    with private_folder(settings) as work:
        profiles_dir = write_profiles(settings, store, work / "profiles")
        result = run_dbt(
            ["compile", "--target", store, "--vars", json.dumps(dbt_vars(source, month))], profiles_dir, work
        )
        if not result.success:
            raise MartsError(f"{source} {month} marts in {store}: dbt compile failed: {result.exception}")
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(work / "target" / "compiled", out)
    return out
