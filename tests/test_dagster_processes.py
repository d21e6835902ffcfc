"""Dagster as users run it: the backfill CLI with the daemon, and the webserver's GraphQL API.

Real processes on a temporary instance (DAGSTER_HOME with the project's dagster.yaml), talking
to the test Postgres and the local release server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from helpers import ROOT, free_port, settings_env, wait_http

pytestmark = pytest.mark.slow
BIN = Path(os.sys.executable).parent


@pytest.fixture
def dagster_env(tmp_path, cloud_settings) -> dict:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    DagsterInstance.from_config(str(home)).get_runs()  # create the storage before two processes race to
    return {**os.environ, "DAGSTER_HOME": str(home), **settings_env(cloud_settings)}


class Processes:
    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.procs = env, logs, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((proc, log))
        return proc

    def stop(self) -> None:
        for proc, log in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            log.close()

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs.glob("*.log"))


@pytest.fixture
def processes(dagster_env, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(dagster_env, logs)
    yield procs
    procs.stop()


def _wait_for_runs(home: str, count: int, processes: Processes, timeout: float = 300) -> list:
    instance = DagsterInstance.from_config(home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        finished = [r for r in runs if r.is_finished]
        if len(runs) >= count and len(finished) == len(runs):
            return runs
        time.sleep(1)
    pytest.fail(
        f"runs did not finish in {timeout}s: {[(r.tags.get('dagster/partition'), r.status) for r in instance.get_runs()]}\n{processes.tail()}"
    )


def test_job_backfill_from_the_cli_completes_every_partition(dagster_env, processes, pg):
    processes.start("daemon", "dagster-daemon", "run", "-w", "workspace.yaml")
    backfill = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "backfill",
            "-w",
            "workspace.yaml",
            "-j",
            "green_trips_job",
            "--from",
            "2019-01",
            "--to",
            "2019-03",
            "--noprompt",
        ],
        cwd=ROOT,
        env=dagster_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    runs = _wait_for_runs(dagster_env["DAGSTER_HOME"], 3, processes)
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["2019-01", "2019-02", "2019-03"]
    assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}, processes.tail()
    counts = pg.execute("SELECT filename, count(*) FROM green_tripdata GROUP BY 1 ORDER BY 1").fetchall()
    assert counts == [(f"green_tripdata_2019-0{m}.csv.gz", 2_000) for m in (1, 2, 3)]
    # What the user sees: the backfill's own lines, and the daemon's (its run workers and their step
    # processes load the code location too) without a warning about our definitions or a migration.
    assert "Warning" not in backfill.stdout + backfill.stderr, backfill.stdout + backfill.stderr
    assert "Launched backfill job" in backfill.stdout
    daemon = (processes.logs / "daemon.log").read_text()
    assert "RUN_SUCCESS" in daemon
    for noise in ("PreviewWarning", "BetaWarning", "SupersessionWarning", "alembic"):
        assert noise not in daemon, [line for line in daemon.splitlines() if noise in line][:5]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body
    return body["data"]


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""


def test_materializing_a_partition_through_the_webserver(dagster_env, processes, pg):
    """What the UI's Materialize button does: launch the asset job for one partition."""
    port = free_port()
    web = processes.start("webserver", "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port))
    processes.start("daemon", "dagster-daemon", "run", "-w", "workspace.yaml")
    wait_http(f"http://127.0.0.1:{port}/server_info", web, "dagster-webserver", 120, processes.logs / "webserver.log")
    assets = [{"path": ["green_trips_csv"]}, {"path": ["green_trips_postgres"]}]
    launched = _graphql(
        port,
        LAUNCH,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": "taxi_assets",
                    "repositoryName": "__repository__",
                    "pipelineName": "__ASSET_JOB",
                    "assetSelection": assets,
                },
                "mode": "default",
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "2019-04"}]},
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    runs = _wait_for_runs(dagster_env["DAGSTER_HOME"], 1, processes)
    assert [r.run_id for r in runs] == [run_id]
    assert runs[0].status == DagsterRunStatus.SUCCESS, processes.tail()
    status = _graphql(port, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})
    assert status["runOrError"]["status"] == "SUCCESS"
    assert (
        pg.execute("SELECT count(*) FROM green_tripdata WHERE filename = 'green_tripdata_2019-04.csv.gz'").fetchone()[0]
        == 2_000
    )
    instance = DagsterInstance.from_config(dagster_env["DAGSTER_HOME"])
    assert len(instance.get_runs(RunsFilter(tags={"dagster/partition": "2019-04"}))) == 1
