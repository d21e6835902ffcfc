"""`python -m taxi_assets demo`: run one month's Dagster chain here and show what landed.

README command 1 ends here. With nothing configured it uses the embedded Postgres and the
embedded emulators, and records the run in the Dagster instance the README's UI opens
(`dagster_home` below), so `dg dev` shows the month materialized with its checks afterwards.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

from taxi_assets import database
from taxi_assets.config import Settings
from taxi_assets.datasets import dataset
from taxi_assets.errors import ConfigError, TaxiError
from taxi_assets.months import Month

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


def ui_command(home: Path) -> str:
    """How to open `home` in the Dagster UI: a line to paste (`dg dev`, which reads the project's
    pyproject.toml, in the project folder)."""
    bin_dir = Path(sys.executable).parent
    tool = bin_dir / "dg" if (bin_dir / "dg").exists() else bin_dir / "dagster"
    project = INSTANCE_SETTINGS.parent.parent
    cd = (project / "workspace.yaml").is_file() and project != Path.cwd()
    where = project if cd else Path.cwd()
    line = f"{shlex.quote(os.path.relpath(tool, where) if tool.is_relative_to(where) else str(tool))} dev"
    if not os.environ.get(DAGSTER_HOME):
        line = f"DAGSTER_HOME={shlex.quote(str(home))} {line}"
    return f"cd {shlex.quote(str(project))} && {line}" if cd else line


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


def run_demo(taxi: str, month: Month, verbose: bool = False) -> None:
    from dagster import DagsterInstance

    from taxi_assets.checks import month_totals_bigquery
    from taxi_assets.definitions import defs  # first: it silences the preview warnings we accept
    from taxi_assets.defs.jobs import job_name
    from taxi_assets.emulators import with_local_cloud
    from taxi_assets.redact import redact_url
    from taxi_assets.steps.bigquery import table_id
    from taxi_assets.steps.postgres import partition_name

    ds = dataset(taxi)
    settings = Settings.from_env()
    home = dagster_home(settings)
    where = (
        database.describe(settings.postgres_dsn)
        if settings.postgres_dsn
        else f"embedded Postgres in {settings.embedded_postgres_dir}"
    )
    print(f"Materializing {taxi} {month} from {redact_url(settings.source_url)} into {where} ...", flush=True)
    once = _ShowOnce()
    for handler in logging.getLogger().handlers:
        handler.addFilter(once)
    with DagsterInstance.from_config(str(home)) as instance:
        result = defs.resolve_job_def(job_name(ds)).execute_in_process(
            partition_key=str(month),
            instance=instance,
            raise_on_error=False,
            # Failures end in one line (below), the whole log stays in the instance; -v: here too.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING" if verbose else "CRITICAL"}}}},
        )
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        rows = mat.metadata.get("dagster/row_count")
        print(f"  materialized {mat.asset_key.to_user_string()}: {rows.value if rows else '?'} rows")
    for check in result.get_asset_check_evaluations():
        state = "passed" if check.passed else "warning" if check.severity.value == "WARN" else "FAILED"
        detail = ", ".join(f"{k}={v.value}" for k, v in check.metadata.items())
        print(f"  check {check.check_name}: {state} [{detail}]")
    if not result.success:
        raise TaxiError(failure_line(result, job_name(ds), month, home))
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
    print(f"\nDagster run {result.run_id[:8]} is in the instance at {home}; the UI (http://localhost:3000):")
    print(f"  {ui_command(home)}")
