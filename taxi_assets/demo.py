"""`python -m taxi_assets demo`: run one month's Dagster chain here and show what landed.

README command 1 ends here. With nothing configured it uses the embedded Postgres and the
embedded emulators, and records the run in the Dagster instance the README's UI opens
(`dagster_home` below), so `dg dev` shows the month materialized with its checks afterwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
import sys
from pathlib import Path

from taxi_assets import config, database
from taxi_assets.config import Settings
from taxi_assets.datasets import TaxiDataset, dataset
from taxi_assets.errors import ConfigError, NotPublishedError, TaxiError
from taxi_assets.months import Month
from taxi_assets.redact import redact_url

# The project's instance settings (queued runs, at most two at once; no telemetry), copied into
# the default instance folder. Found beside the package in a checkout (`pip install -e .`, as
# dev.py installs it); an installed copy without it leaves Dagster's defaults.
INSTANCE_SETTINGS = Path(__file__).resolve().parent.parent / "dagster_home" / "dagster.yaml"
DAGSTER_HOME = "DAGSTER_HOME"


def dagster_home(settings: Settings) -> Path:
    """The Dagster instance folder: `$DAGSTER_HOME` when set, else `dagster/` under the state folder.

    The default sits beside what the runs it records describe (the embedded Postgres, the
    emulators' data, the downloads), so `TAXI_STATE_DIR` moves them together, and a Dagster
    command started with `DAGSTER_HOME=$(python -m taxi_assets dagster-home)` opens the very
    instance the demo wrote to. Its `dagster.yaml` is refreshed from the project's
    `dagster_home/dagster.yaml`; a DAGSTER_HOME the user set is left as it is.
    """
    given = os.environ.get(DAGSTER_HOME)
    if given:
        home = Path(given)
        if not home.is_absolute():  # Dagster's own rule, said before Dagster says it with a traceback
            raise ConfigError(f"{DAGSTER_HOME} must be an absolute path, got {given!r}")
        if not home.is_dir():
            raise ConfigError(f"{DAGSTER_HOME} is {given}, which is not a folder; create it or unset {DAGSTER_HOME}")
        return home
    home = settings.state_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    if INSTANCE_SETTINGS.is_file():
        wanted = (
            f"# Copied from {INSTANCE_SETTINGS} by taxi_assets (the demo, `python -m taxi_assets\n"
            "# dagster-home`), and refreshed from it: edit that file, not this copy.\n" + INSTANCE_SETTINGS.read_text()
        )
        target = home / "dagster.yaml"
        if not target.is_file() or target.read_text() != wanted:
            part = target.with_name(f".dagster.yaml.{os.getpid()}")
            part.write_text(wanted)
            part.replace(target)  # atomic: a Dagster process starting now reads the old or the new file
    return home


# What the demo ran with that a Dagster UI started from another shell would lack (a one-off
# `TAXI_SOURCE_URL=http://127.0.0.1:8765 python3 dev.py demo`, a .env in another folder): where the
# month files come from and where the data goes. Never a secret: TAXI_POSTGRES_DSN and
# GCP_CREDENTIALS are not among them, and a URL carrying credentials is left out (`ui_command`).
UI_SETTINGS = (
    config.SOURCE_URL,
    config.TLC_URL,
    config.STATE_DIR,
    config.EMULATED_GCS_PORT,
    config.EMULATED_BIGQUERY_PORT,
    config.STORAGE_EMULATOR_HOST,
    config.BIGQUERY_EMULATOR_HOST,
    config.GCP_PROJECT_ID,
    config.GCP_LOCATION,
    config.GCP_BUCKET_NAME,
    config.GCP_DATASET,
)
_DEFAULTS = {
    config.SOURCE_URL: config.DEFAULT_SOURCE_URL,
    config.TLC_URL: config.DEFAULT_TLC_URL,
    config.STATE_DIR: config.DEFAULT_STATE_DIR,
    **{name: str(port) for name, port in config.DEFAULT_EMULATED_PORTS.items()},
}


def ui_settings(env=None) -> tuple[dict[str, str], list[str]]:
    """The UI_SETTINGS the demo ran with (set, and not their defaults), as (shown, withheld): a URL
    with a password, token or signed query is withheld, named but not shown."""
    env = os.environ if env is None else env
    shown, withheld = {}, []
    for name in UI_SETTINGS:
        value = env.get(name, "").strip()
        if not value or value == _DEFAULTS.get(name):
            continue
        if name == config.STATE_DIR:  # the line may start in another folder (`cd PROJECT && ...`)
            value = str(Path(value).expanduser().absolute())
        if "://" in value and redact_url(value) != value:
            withheld.append(name)
        else:
            shown[name] = value
    return shown, withheld


def ui_command(home: Path) -> str:
    """How to open `home` in the Dagster UI: a line to paste (`dg dev`, which reads the project's
    pyproject.toml, in the project folder), with the settings the demo ran with (`ui_settings`),
    so that a run launched from the UI reads the same source and writes to the same stores."""
    bin_dir = Path(sys.executable).parent
    tool = bin_dir / "dg" if (bin_dir / "dg").exists() else bin_dir / "dagster"
    project = INSTANCE_SETTINGS.parent.parent
    cd = (project / "workspace.yaml").is_file() and project != Path.cwd()
    where = project if cd else Path.cwd()
    line = f"{shlex.quote(os.path.relpath(tool, where) if tool.is_relative_to(where) else str(tool))} dev"
    if not os.environ.get(DAGSTER_HOME):
        line = f"DAGSTER_HOME={shlex.quote(str(home))} {line}"
    shown, withheld = ui_settings()
    line = " ".join([*(f"{name}={shlex.quote(value)}" for name, value in shown.items()), line])
    line = f"cd {shlex.quote(str(project))} && {line}" if cd else line
    if withheld:
        line += f"\n  (with your {' and '.join(withheld)} too, not shown here: set it in .env or the environment)"
    return line


class _ShowOnce(logging.Filter):
    """Drops a log line already shown: the chain's steps each confirm the month's verified download,
    and one such line says it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _taxi_error_names() -> set[str]:
    names, todo = set(), [TaxiError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def failure_line(result, job: str, month: Month, home: Path) -> str:
    """What a failed run of the demo says: one line. A step's TaxiError (no network, a month the
    server lacks, a bad file …) is its own message, which says what to do; anything else names
    the step and the error, and where the whole log is."""
    for event in result.all_events:
        if event.is_step_failure:
            failed = event.step_failure_data.user_failure_data
            if failed is not None and "error" in failed.metadata:  # a TaxiError, as our assets report it
                return failed.description
            error = event.step_failure_data.error
            while error.cause is not None:  # Dagster's wrappers first, the step's own error last
                error = error.cause
            message = " ".join(error.message.split(": ", 1)[-1].split())
            if error.cls_name in _taxi_error_names():
                return message
            return (
                f"the {job} run for {month} failed in {event.step_key}: {error.cls_name}: {message} "
                f"(the whole log: run {result.run_id[:8]} in the Dagster instance at {home}, or "
                "`python -m taxi_assets -v demo` prints it here)"
            )
    return f"the {job} run for {month} failed (run {result.run_id[:8]} in the Dagster instance at {home})"


def check_source(settings: Settings, ds: TaxiDataset, month: Month) -> None:
    """One look at the month's file (a HEAD) before any run is launched: no network, a wrong
    TAXI_SOURCE_URL or a month the source lacks ends the demo in its one line, and leaves no
    failed run in the instance the UI opens. A local copy needs no source (the run uses it), so
    a demo run before still runs offline."""
    from taxi_assets.files import local_path, record_path
    from taxi_assets.source import remote_file, source_url

    if record_path(local_path(settings, ds, month)).is_file():
        return
    if remote_file(settings, ds, month) is None:
        url = redact_url(source_url(settings, ds, month))
        if ds.published(month) is False:
            raise NotPublishedError(
                f"{ds.name} {month} is not published ({url} is not there); months available {ds.published_range()}"
            )
        raise NotPublishedError(
            f"{ds.name} {month}: the source has no such file ({url}), though the month is within the published"
            f" range {ds.published_range()}: is {ds.source.url_variable} right?"
        )


def _show(result) -> None:
    """What a run materialized (rows) and its checks' verdicts, a line each."""
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        rows = mat.metadata.get("dagster/row_count")
        print(f"  materialized {mat.asset_key.to_user_string()}: {rows.value if rows else '?'} rows")
    for check in result.get_asset_check_evaluations():
        state = "passed" if check.passed else "warning" if check.severity.value == "WARN" else "FAILED"
        detail = ", ".join(f"{k}={v.value}" for k, v in check.metadata.items())
        print(f"  check {check.check_name}: {state} [{detail}]")


def run_demo(taxi: str, month: Month, verbose: bool = False) -> None:
    ds = dataset(taxi)
    settings = Settings.from_env()
    home = dagster_home(settings)
    where = (
        database.describe(settings.postgres_dsn)
        if settings.postgres_dsn
        else f"embedded Postgres in {settings.embedded_postgres_dir}"
    )
    print(f"Materializing {taxi} {month} from {redact_url(settings.source_url)} into {where} ...", flush=True)
    check_source(settings, ds, month)  # before Dagster: a run that cannot start is not recorded

    from dagster import DagsterInstance

    from taxi_assets import marts
    from taxi_assets.checks import month_totals_bigquery
    from taxi_assets.components.taxi_marts import marts_job_name
    from taxi_assets.definitions import defs  # first: it silences the preview warnings we accept
    from taxi_assets.defs.jobs import job_name
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.stores import partition_name, table_id

    once = _ShowOnce()
    for handler in logging.getLogger().handlers:
        handler.addFilter(once)
    # Failures end in one line (below), the whole log stays in the instance; -v: here too.
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING" if verbose else "CRITICAL"}}}}
    # The month's chain, then its marts in Postgres (what the automation sensor would request).
    for job in (job_name(ds), marts_job_name(ds.source.name, marts.POSTGRES)):
        # dagster-dbt re-emits dbt's own log on stdout (a run's captured log in the UI); here the
        # lines below say what was built, and -v shows dbt's log too.
        hush = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with DagsterInstance.from_config(str(home)) as instance, hush:
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=str(month), instance=instance, raise_on_error=False, run_config=quiet
            )
        _show(result)
        if not result.success:
            raise TaxiError(failure_line(result, job, month, home))
    with database.connect(settings) as conn:
        rows = conn.execute(f'SELECT count(*) FROM "{partition_name(ds, month)}"').fetchone()[0]
        months = conn.execute(f"SELECT count(DISTINCT filename), count(*) FROM {ds.table}").fetchone()
        cur = conn.execute(
            f"SELECT unique_row_id, {ds.pickup_column.lower()}, pulocationid, dolocationid"
            f"{', total_amount' if 'total_amount' in ds.sql_names else ''} FROM {ds.table} WHERE filename = %s LIMIT 3",
            (ds.file_name(month),),
        )
        sample = cur.fetchall()
        names = [d.name for d in cur.description]
    print(f"\n{ds.table}: {rows:,} rows for {month}; {months[1]:,} rows over {months[0]} month(s) in all")
    cloud = with_local_cloud(settings)
    bq = month_totals_bigquery(cloud, ds, month)
    where_bq = "BigQuery emulator" if cloud.bigquery_emulator else "BigQuery"
    print(f"{table_id(cloud, ds)} ({where_bq}): {bq['rows']:,} rows for {month}")
    print("  " + " | ".join(names))
    for row in sample:
        print("  " + " | ".join(str(v) for v in row))
    print(f"\nTop 5 pickup zones by revenue, {month} ({marts.marts_schema(settings, marts.POSTGRES, ds.source.name)}"
          ".fct_monthly_zone_revenue):")  # fmt: skip
    for zone, borough, service, revenue, trips in marts.top_zones(settings, ds.source.name, month):
        print(f"  {zone} ({borough}), {service}: ${revenue:,.2f} from {trips:,} trips")
    print(f"\nDagster runs are in the instance at {home}; the UI (http://localhost:3000):")
    print(f"  {ui_command(home)}")
