"""What a user reads when a step fails, and what the records keep: no credential of a source URL
anywhere, records private, and one line that says where and why (issue 17, items 6 and 7)."""

from __future__ import annotations

import base64
import errno
import json
import stat
import subprocess
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import SAMPLE_ROWS
from helpers import free_port, run_cli, settings_env

from taxi_assets import cli
from taxi_assets.config import Settings
from taxi_assets.samples.mirror_server import SampleServer, _Handler
from taxi_assets.samples.tlc import TlcServer

TOKEN, SIG = "s3cr3t-pass", "s1gnature-value"


class _SignedHandler(_Handler):
    """The release server behind a signed URL: it notes the credentials it was sent and serves
    the file whatever they are; a file named in `server.missing` is a 404."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.seen.append((self.path, self.headers.get("Authorization", "")))
        self.path = urlsplit(self.path).path
        if self.path.rsplit("/", 1)[-1] in self.server.missing:
            self.send_error(404, "Not Found")
            return
        super().do_GET()


@pytest.fixture
def signed_release(tmp_path):
    server = SampleServer(tmp_path / "release", rows=SAMPLE_ROWS)
    server.RequestHandlerClass, server.seen, server.missing = _SignedHandler, [], set()
    server.start()
    yield server
    server.shutdown()


def _signed(url: str) -> str:
    """`url` with a password and a signature, as an operator's TAXI_SOURCE_URL may carry them."""
    scheme, rest = url.split("://")
    return f"{scheme}://reader:{TOKEN}@{rest}?sig={SIG}&expires=1999"


def _settings(tmp_path: Path, **changes) -> Settings:
    return Settings(state_dir=tmp_path / "state", **changes)


def _leaks(text: str) -> bool:
    return TOKEN in text or SIG in text


def test_a_token_in_the_source_url_reaches_the_server_but_no_line_record_or_ledger_row(settings, signed_release, pg):
    settings = replace(settings, source_url=_signed(signed_release.url))
    result = run_cli("load-postgres", "--taxi", "green", "--month", "2019-01", env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    path, auth = signed_release.seen[-1]
    assert path == f"/green/green_tripdata_2019-01.csv.gz?sig={SIG}&expires=1999"  # the real URL was used
    assert base64.b64decode(auth.removeprefix("Basic ")).decode() == f"reader:{TOKEN}"
    assert not _leaks(result.stdout + result.stderr)

    masked = f"http://reader:***@{signed_release.url[7:]}/green/green_tripdata_2019-01.csv.gz?sig=***&expires=***"
    record = settings.download_dir / "green" / "green_tripdata_2019-01.csv.gz.json"
    assert json.loads(record.read_text())["url"] == masked
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert pg.execute("SELECT url FROM taxi_loads").fetchall() == [(masked,)]

    signed_release.missing.add("green_tripdata_2019-02.csv.gz")
    result = run_cli("extract", "--taxi", "green", "--month", "2019-02", env=settings_env(settings))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: green 2019-02: the server has no such file ({masked.replace('2019-01', '2019-02')} returned 404),"
        " though the month is within the published range 2019-01..2021-07"
    )


def test_a_refused_connection_is_one_short_line_naming_host_and_port(tmp_path):
    port = free_port()
    env = settings_env(_settings(tmp_path, source_url=_signed(f"http://127.0.0.1:{port}")))
    result = run_cli("extract", "--taxi", "green", "--month", "2019-01", env={**env, "TAXI_HTTP_RETRIES": "2"})
    assert result.returncode == 1
    line = result.stderr.splitlines()[-1]
    assert line == (
        f"error: green 2019-01: download failed after 3 attempts: cannot connect to 127.0.0.1:{port} (Connection refused)"
    )
    assert len(line) < 160 and not _leaks(result.stderr)


def test_a_403_for_a_month_long_published_is_a_refusal_not_not_yet(tmp_path):
    server = TlcServer(tmp_path / "trip-data", rows=200).start()
    try:
        server.fail_next["green_tripdata_2019-01.parquet"] = [403]
        env = settings_env(_settings(tmp_path, tlc_url=_signed(server.url)))
        result = run_cli("extract", "--source", "tlc", "--taxi", "green", "--month", "2019-01", env=env)
    finally:
        server.shutdown()
    assert result.returncode == 1
    url = f"http://reader:***@{server.url[7:]}/green_tripdata_2019-01.parquet?sig=***&expires=***"
    assert result.stderr.splitlines()[-1] == (
        f"error: tlc_green 2019-01: the server refused the file ({url} returned 403), though the TLC published the"
        " month long ago: the file may have been removed, or access is denied (is TAXI_TLC_URL right?)"
    )


@pytest.fixture
def small_disk(tmp_path):
    """A 32 KiB tmpfs: smaller than a month's file. Mounting needs root; elsewhere, skipped (the
    CLI's last-resort line is tested in-process below)."""
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_while_downloading_names_the_folder_and_what_was_kept(settings, small_disk):
    env = settings_env(replace(settings, state_dir=small_disk))
    result = run_cli("extract", "--taxi", "green", "--month", "2019-01", env=env)
    assert result.returncode == 1
    folder = small_disk / "downloads" / "green"
    assert result.stderr.splitlines()[-1] == (
        f"error: green 2019-01: no space left on {folder} (writing green_tripdata_2019-01.csv.gz); nothing was kept,"
        " the previous rows are untouched; free space or set TAXI_STATE_DIR"
    )
    assert list(folder.iterdir()) == []


def test_a_full_disk_anywhere_else_is_still_one_line_with_the_path(monkeypatch, capsys, settings):
    """Simulated in-process: a step failing with ENOSPC outside extract's own handling."""

    def full(args, settings):
        raise OSError(errno.ENOSPC, "No space left on device", "/state/downloads/green/x.parquet")

    monkeypatch.setitem(cli.COMMANDS, "dagster-home", (full, *cli.COMMANDS["dagster-home"][1:]))
    monkeypatch.setenv("TAXI_STATE_DIR", str(settings.state_dir))
    assert cli.main(["dagster-home"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: no space left on /state/downloads/green (writing x.parquet); nothing was kept,"
        " the previous rows are untouched; free space or set TAXI_STATE_DIR"
    )
