"""Kestra 2.0's engine for the tests: builds tests/kestra_engine with Maven and talks to it.

The Java side (tests/kestra_engine/src/main/java/taxiassets/kestra/Harness.java) starts what
Kestra's own `@KestraTest(startRunner = true)` starts (executor, worker, worker controller,
indexer; in-memory repository and queue; local storage) and answers one JSON request per line.
`python3 dev.py test` provides JAVA_HOME (a Java 25) and TAXI_MVN; run bare, pytest needs them
set the same way and fails with one line saying so.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from helpers import ROOT, free_port

from taxi_assets.config import Settings
from taxi_assets.logs import LOG_FORMAT
from taxi_assets.samples.mirror_server import SampleServer

PROJECT = ROOT / "tests" / "kestra_engine"
KESTRA_VERSION = re.search(r"<kestra.version>(.+?)</kestra.version>", (PROJECT / "pom.xml").read_text())[1]
NAMESPACE = "taxi.assets"
FLOWS_DIR = ROOT / "kestra_flows"
MARTS_FLOW = "taxi_marts"  # started by every load's success (a Flow trigger)


def flows_without_marts(folder: Path) -> Path:
    """The flows, but the marts' flow, in `folder` (links): for engines testing the loads, where a
    dbt build after each load would only add minutes (tests/test_kestra_marts.py runs it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for flow in FLOWS_DIR.glob("*.yaml"):
        if flow.stem != MARTS_FLOW:
            (folder / flow.name).symlink_to(flow)
    return folder


def _java_home() -> Path:
    home = os.environ.get("JAVA_HOME")
    release = Path(home or "/nonexistent") / "release"
    version = re.search(r'JAVA_VERSION="(\d+)', release.read_text()) if release.is_file() else None
    if not version or int(version[1]) < 25:
        pytest.fail(
            f"Kestra {KESTRA_VERSION} needs Java 25: run the suite with `python3 dev.py test` (it finds or "
            f"provisions one), or set JAVA_HOME to a Java 25 (now {home or 'unset'})",
            pytrace=False,
        )
    return Path(home)


def build(log: Path) -> str:
    """Compile the harness and return its classpath. Maven caches Kestra's jars in ~/.m2."""
    java_home = _java_home()
    mvn = os.environ.get("TAXI_MVN") or shutil.which("mvn")
    if not mvn:
        pytest.fail(
            "Kestra engine tests need Maven: run them with `python3 dev.py test` or set TAXI_MVN", pytrace=False
        )
    env = {**os.environ, "JAVA_HOME": str(java_home), "PATH": f"{java_home / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    cmd = [mvn, "-B", "-q", "-f", str(PROJECT / "pom.xml"), "compile", "dependency:build-classpath"]
    cmd.append(f"-Dmdep.outputFile={PROJECT / 'target' / 'classpath.txt'}")
    with open(log, "w") as out:
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"building the Kestra harness failed (mvn exit {done.returncode}); log: {log}", pytrace=False)
    classpath = (PROJECT / "target" / "classpath.txt").read_text().strip()
    return os.pathsep.join([str(PROJECT / "target" / "classes"), classpath])


@contextlib.contextmanager
def database_with_password(admin_dsn: str, prefix: str, password: str):
    """A taxi-data database of its own, reached by a role with a password (so that a test can
    look for the password in Kestra's logs); dropped afterwards. Yields its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{password}'")
    try:
        yield psycopg.conninfo.make_conninfo(admin_dsn, dbname=name, user=name, password=password)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {name}")


def stack_settings(
    tmp_path_factory, name: str, postgres_dsn: str, emulators: tuple[str, str] | None = None, **source: str
) -> Settings:
    """The settings Kestra's worker has, as the compose stack gives them: `source` (`source_url`
    or `tlc_url`), the taxi-data Postgres, a state folder of its own and, with `emulators`
    (fake-gcs-server's and bqemulator's endpoints), a bucket and a dataset of its own."""
    suffix = uuid.uuid4().hex[:8]
    cloud = {}
    if emulators is not None:
        cloud = {
            "gcp_bucket": f"{name}-{suffix}",
            "gcp_dataset": f"{name.replace('-', '_')}_{suffix}",
            "storage_emulator": emulators[0],
            "bigquery_emulator": emulators[1],
        }
    state_dir = tmp_path_factory.mktemp(f"{name}-state")
    return Settings(state_dir=state_dir, postgres_dsn=postgres_dsn, http_backoff=0.01, **source, **cloud)


def secret_env(secrets: dict[str, str]) -> dict[str, str]:
    """Open-source Kestra's secret store: `SECRET_<NAME>` holding the value in base64."""
    return {f"SECRET_{name}": base64.b64encode(value.encode()).decode() for name, value in secrets.items()}


class GappyServer(SampleServer):
    """The local release server, minus the months in `missing` (404 as the real one answers);
    `downloads` counts the files it sent whole, by URL path (the downloads a test counts)."""

    missing: set[str] = set()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.downloads: collections.Counter[str] = collections.Counter()

        class Counting(self.RequestHandlerClass):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                super().do_GET()
                if self.server.file_for(self.path) is not None:
                    self.server.downloads[urlsplit(self.path).path] += 1

        self.RequestHandlerClass = Counting

    def file_for(self, url_path: str) -> Path | None:
        return None if any(m in url_path for m in self.missing) else super().file_for(url_path)


class Kestra:
    """One engine process; `request` sends a JSON request and returns the JSON answer.

    Answers are read by a thread, so every wait has a deadline; a request that overruns it
    kills the engine (and the task processes it started) rather than let a late answer be
    taken for the next one's."""

    START_SECONDS = 180

    def __init__(self, classpath: str, workdir: Path, env: dict[str, str]):
        env = env | {LOG_FORMAT: "kestra"}  # as the Kestra image sets it: our tasks log by Kestra's protocol
        self.log, self.env, self._ids = workdir / "kestra.log", env, itertools.count(1)
        java = _java_home() / "bin" / "java"
        props = {
            "kestra.storage.local.base-path": workdir / "storage",
            "kestra.tasks.tmp-dir.path": workdir / "tmp",
            "kestra.controller.port": free_port(),
        }
        cmd = [str(java), "-Xmx1g", "-cp", classpath, *(f"-D{k}={v}" for k, v in props.items())]
        with open(self.log, "w") as stderr:  # the child keeps its own copy of the file
            self.proc = subprocess.Popen(
                [*cmd, "taxiassets.kestra.Harness"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
                cwd=workdir,
                start_new_session=True,  # one process group: the JVM and its tasks' processes
            )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._answer(self.START_SECONDS)
        if not ready.get("ready"):
            self.kill()
            pytest.fail(f"Kestra's engine did not start: {ready.get('error')} (log: {self.log})", pytrace=False)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # end of output: the engine exited

    def _answer(self, seconds: float) -> dict:
        try:
            line = self._lines.get(timeout=seconds)
        except queue.Empty:
            self.kill()
            raise AssertionError(
                f"Kestra's engine gave no answer in {seconds:.0f} s; log tail:\n{self.log_tail()}"
            ) from None
        if not line:
            raise AssertionError(f"Kestra's engine exited (code {self.proc.poll()}); log tail:\n{self.log_tail()}")
        return json.loads(line)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def request(self, **request) -> dict:
        if self.proc.poll() is not None:
            raise AssertionError(f"Kestra's engine is not running (code {self.proc.returncode}); log: {self.log}")
        request["id"] = next(self._ids)
        self.proc.stdin.write(json.dumps(request, default=str) + "\n")
        self.proc.stdin.flush()
        answer = self._answer(request.get("timeoutSeconds", 120) + 60)
        assert answer.get("id") == request["id"], f"answer {answer.get('id')} to request {request['id']}"
        if "error" in answer:
            raise AssertionError(f"Kestra harness: {answer['error']}")
        return answer["result"]

    def validate(self, sources: dict[str, str]) -> dict[str, dict]:
        """Kestra's validation of each named source: {filename: {constraints, warnings, ...}}."""
        answer = self.request(op="validate", sources=[{"filename": k, "content": v} for k, v in sources.items()])
        return {r["filename"]: r for r in answer["results"]}

    def run(self, flow: str, inputs: dict | None = None, timeout: int = 300) -> Execution:
        return Execution(
            self.request(op="run", namespace=NAMESPACE, flow=flow, inputs=inputs or {}, timeoutSeconds=timeout)
        )

    def tick(self, flow: str, trigger: str, date: str, *, run: bool = True, timeout: int = 300):
        """The flow's Schedule trigger evaluated by Kestra at `date`; run: the execution it creates."""
        answer = self.request(
            op="tick",
            namespace=NAMESPACE,
            flow=flow,
            trigger=trigger,
            date=date,
            evaluateOnly=not run,
            timeoutSeconds=timeout,
        )
        return Execution(answer) if run else answer

    def subflow(self, execution: Execution, task: str, timeout: int = 300) -> Execution:
        """The execution a Subflow task of `execution` started (its id is in the task's outputs),
        once it has ended: its task runs, outputs, metrics and logs are its own, not the parent's."""
        child_id = execution.outputs(task)["executionId"]
        return Execution(self.request(op="execution", executionId=child_id, timeoutSeconds=timeout))

    def triggered(self, execution: Execution, flow: str, count: int = 1, timeout: int = 300) -> list[Execution]:
        """The executions of `flow` that `execution` started through a Flow trigger (Kestra's
        executor evaluates the triggers when an execution ends), once `count` exist and all have
        ended: every one found, so an extra execution shows."""
        answer = self.request(
            op="triggered", executionId=execution.data["id"], flow=flow, count=count, timeoutSeconds=timeout
        )
        return [Execution(data) for data in answer["executions"]]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def close(self) -> None:
        """End of input stops the engine; whatever is left of its process group is killed."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self.kill()


class Execution:
    """What Kestra recorded for an execution: state, labels, task runs with outputs, metrics, logs."""

    def __init__(self, data: dict):
        self.data = data
        self.state: str = data["state"]
        labels = data.get("labels") or []  # Kestra's own (system.correlationId, ...) left out
        self.labels = {x["key"]: x["value"] for x in labels if not x["key"].startswith("system.")}
        self.task_states = {t["taskId"]: t["state"] for t in data.get("taskRuns", [])}
        self.logs: list[dict] = data.get("logs", [])

    def outputs(self, task: str) -> dict:
        """The task's outputs; a script task's `::{"outputs"}::` values are under `vars`."""
        return next(t.get("outputs", {}) for t in self.data["taskRuns"] if t["taskId"] == task)

    def metric(self, task: str, name: str) -> float:
        values = [m["value"] for m in self.data.get("metrics", []) if m["taskId"] == task and m["name"] == name]
        assert len(values) == 1, f"metric {name} of {task}: {values}"
        return values[0]

    def log_text(self, task: str | None = None) -> str:
        return "\n".join(e.get("message", "") for e in self.logs if task is None or e.get("taskId") == task)

    def __repr__(self) -> str:  # what a failed assertion shows
        tail = "\n".join(f"  [{e.get('level')}] {e.get('taskId')}: {e.get('message')}" for e in self.logs[-15:])
        return f"<Execution {self.data['id']} {self.state} tasks={self.task_states}\n{tail}>"
