"""Kestra entrypoint: the stack's `.env` values become Kestra secrets, then Kestra starts.

Open-source Kestra reads `{{ secret('NAME') }}` from an environment variable SECRET_NAME
holding base64. Every secret the flows in KESTRA_FLOWS_DIR use is encoded from the plain
variable of that name (empty when unset: `secret()` fails on a missing one), which is then
removed from Kestra's environment, so one `.env` serves both orchestrators, nobody base64-encodes
by hand, and a task sees a secret only through `secret()`. Values are never printed.
"""

import base64
import os
import re
import sys
from pathlib import Path

SECRET_REF = re.compile(r"secret\('(\w+)'\)")


def secret_names(flows_dir: Path) -> set[str]:
    return {name for flow in flows_dir.glob("*.y*ml") for name in SECRET_REF.findall(flow.read_text())}


def main() -> None:
    flows_dir = Path(os.environ.get("KESTRA_FLOWS_DIR", "/app/flows"))
    for name in sorted(secret_names(flows_dir)):
        # pop: the plain value must not reach Process-runner tasks, which inherit Kestra's
        # environment; a task gets a secret only through {{ secret('NAME') }}.
        value = os.environ.pop(name, "")
        os.environ[f"SECRET_{name}"] = base64.b64encode(value.encode()).decode()
    # The image's own entrypoint (exec /app/kestra "$@"); replaceable for tests.
    command = [os.environ.get("KESTRA_ENTRYPOINT", "docker-entrypoint.sh"), *sys.argv[1:]]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
