"""Kestra entrypoint: the stack's `.env` values become Kestra secrets, Kestra's own configuration
goes into a private file, then Kestra starts with no credential in the environment its
Process-runner tasks inherit (Kestra 2.0, io.kestra.plugin.core.runner.Process: a
java.lang.ProcessBuilder, whose environment starts as a copy of the JVM's).

Secrets. Open-source Kestra 2.0 (io.kestra.core.secret.SecretService) reads `{{ secret('NAME') }}`
from the variable SECRET_NAME holding base64, decoded once at start; for a name with no such
variable `secret()` throws ("Cannot find secret for key 'NAME'."), which fails the task, while
SECRET_NAME="" would be found and render as "". So of the secrets the flows in KESTRA_FLOWS_DIR
use, only those set and non-empty are encoded: an empty, unset or misspelled one fails the task
that reads it instead of handing it an empty DSN. The plain variable is removed either way, so
one `.env` serves both orchestrators, nobody base64-encodes by hand, and a task sees a secret only
through `secret()` (and, as Kestra's design has it, as base64 in the inherited SECRET_*).

Kestra's configuration. KESTRA_CONFIGURATION (the metadata database's and the UI login's
passwords) is written to a file only the kestra user can read, removed from the environment, and
named by MICRONAUT_CONFIG_FILES, as Kestra's own launcher does with that variable
(gradle/jar/selfrun.sh, the script at the head of /app/kestra, which skips its own copy when the
variable is unset). The folder is KESTRA_CONFIGURATION_PATH, the launcher's name for it
[/app/confs]. Tasks run as that same user, so this keeps the passwords out of their
environment (and out of Kestra's /proc/PID/environ), not out of reach of a task that opens the
file on purpose: that takes tasks under another user. Another variable naming a password stops
the start: Kestra's settings belong in KESTRA_CONFIGURATION. Values are never printed.

Not verifiable without a Docker engine; checked against Kestra's sources and, in
tests/test_deployment.py, by running this script with a stub in place of Kestra.
"""

import base64
import os
import re
import sys
from pathlib import Path

SECRET_REF = re.compile(r"""secret\(\s*['"](\w+)['"]""")
# Secrets that may be empty, and when: the emulators (the compose `emulators` profile) take no key.
EMULATOR_HOSTS = ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST")
EMPTY_WITH_EMULATORS = {"GCP_CREDENTIALS"}


def secret_names(flows_dir: Path) -> set[str]:
    return {name for flow in flows_dir.glob("*.y*ml") for name in SECRET_REF.findall(flow.read_text())}


def encode_secrets(flows_dir: Path) -> None:
    emulated = all(os.environ.get(host, "").strip() for host in EMULATOR_HOSTS)
    for name in sorted(secret_names(flows_dir)):
        value = os.environ.pop(name, "")  # a task gets it only through {{ secret('NAME') }}
        if value.strip() or (emulated and name in EMPTY_WITH_EMULATORS):
            os.environ[f"SECRET_{name}"] = base64.b64encode(value.encode()).decode()
        else:
            print(f"secrets_from_env: {name} is unset or empty; tasks reading secret('{name}') fail", file=sys.stderr)


def write_configuration() -> None:
    configuration = os.environ.pop("KESTRA_CONFIGURATION", "")
    if not configuration.strip():
        return
    folder = Path(os.environ.get("KESTRA_CONFIGURATION_PATH", "/app/confs"))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "application.yml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an earlier start keeps its mode otherwise
    with os.fdopen(fd, "w") as out:
        out.write(configuration)
    os.environ["MICRONAUT_CONFIG_FILES"] = str(path)


def main() -> None:
    write_configuration()
    encode_secrets(Path(os.environ.get("KESTRA_FLOWS_DIR", "/app/flows")))
    exposed = sorted(name for name in os.environ if "PASSWORD" in name.upper() and not name.startswith("SECRET_"))
    if exposed:
        sys.exit(
            f"secrets_from_env: {', '.join(exposed)} would reach every task's environment;"
            " put Kestra's settings in KESTRA_CONFIGURATION"
        )
    # The image's own entrypoint (exec /app/kestra "$@"); replaceable for tests.
    command = [os.environ.get("KESTRA_ENTRYPOINT", "docker-entrypoint.sh"), *sys.argv[1:]]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
