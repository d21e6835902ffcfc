"""extract: download, verify, keep; every way a download can go wrong; purge once loaded."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SAMPLE_ROWS
from helpers import ROOT, gzip_fixture, run_cli

from taxi_assets.datasets import GREEN, YELLOW
from taxi_assets.errors import BadFileError, ConfigError, DownloadError, NotPublishedError
from taxi_assets.files import local_path, parquet_path, row_ids_path
from taxi_assets.months import Month
from taxi_assets.samples.mirror_data import write_month
from taxi_assets.steps.extract import download_in_use, extract, purge_download

JAN = Month(2019, 1)
FEB = Month(2019, 2)
JAN_FILE = "green_tripdata_2019-01.csv.gz"
JAN_RECORD = JAN_FILE + ".json"
JAN_IDS = "green_tripdata_2019-01.row_ids"  # the row ids, computed once while verifying


def _leftovers(settings, ds=GREEN) -> list[str]:
    folder = settings.download_dir / ds.taxi
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_is_verified_recorded_and_kept(settings):
    info = extract(settings, GREEN, JAN)
    path = Path(info.path)
    assert path == local_path(settings, GREEN, JAN) and path.exists()
    assert info.downloaded and info.data_lines == SAMPLE_ROWS and info.bytes == path.stat().st_size
    assert len(info.sha256) == 64
    assert json.loads(path.with_name(path.name + ".json").read_text())["sha256"] == info.sha256
    assert _leftovers(settings) == [JAN_FILE, JAN_RECORD, JAN_IDS]


def test_a_valid_local_file_is_not_downloaded_again(settings):
    first = extract(settings, GREEN, JAN)
    second = extract(settings, GREEN, JAN)
    assert not second.downloaded and second.sha256 == first.sha256


def test_a_local_file_that_changed_is_downloaded_again(settings):
    first = extract(settings, GREEN, JAN)
    Path(first.path).write_bytes(b"corrupted")
    again = extract(settings, GREEN, JAN)
    assert again.downloaded and again.sha256 == first.sha256


def test_an_unpublished_month_says_which_months_exist(settings):
    with pytest.raises(NotPublishedError, match=r"green 2021-08 is not published .*months available 2019-01..2021-07"):
        extract(settings, GREEN, Month(2021, 8))
    assert _leftovers(settings) == []


def test_a_truncated_file_is_rejected_and_nothing_is_kept(settings, local_release):
    good = local_release.file_for("/green/green_tripdata_2019-01.csv.gz").read_bytes()
    local_release.file_for("/green/green_tripdata_2019-01.csv.gz").write_bytes(good[: len(good) // 2])
    settings = replace(settings, source_url=local_release.url)
    with pytest.raises(BadFileError, match="downloaded file rejected, nothing kept: .*truncated"):
        extract(settings, GREEN, JAN)
    assert _leftovers(settings) == []


def test_a_file_with_the_wrong_header_is_rejected(settings, local_release, tmp_path):
    target = local_release.root / "green" / "green_tripdata_2019-01.csv.gz"
    gzip_fixture("yellow_tripdata_2020-07_head266.csv", target)  # a yellow file under a green name
    settings = replace(settings, source_url=local_release.url)
    with pytest.raises(BadFileError, match="does not have the green header"):
        extract(settings, GREEN, JAN)
    assert _leftovers(settings) == []


class _Flaky(BaseHTTPRequestHandler):
    """Fails the first requests (503, then a connection cut mid-body), then serves the file."""

    body: bytes = b""
    plan: list[str] = []
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        step = self.plan.pop(0) if self.plan else "ok"
        self.hits.append(step)
        if step == "503":
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body if step == "ok" else self.body[: len(self.body) // 3])

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky(tmp_path):
    body = gzip_fixture("yellow_tripdata_2020-07_head266.csv", tmp_path / "y.gz").read_bytes()
    handler = type("Handler", (_Flaky,), {"body": body, "plan": [], "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, handler
    server.shutdown()


def test_network_errors_and_5xx_are_retried(settings, flaky):
    server, handler = flaky
    handler.plan[:] = ["503", "cut"]
    settings = replace(settings, source_url=f"http://127.0.0.1:{server.server_port}")
    info = extract(settings, YELLOW, Month(2020, 7))
    assert handler.hits == ["503", "cut", "ok"] and info.data_lines == 266
    assert gzip.decompress(Path(info.path).read_bytes()).startswith(b"VendorID,")


def test_retries_give_up_with_a_clear_error(settings, flaky):
    server, handler = flaky
    handler.plan[:] = ["503"] * 10
    settings = replace(settings, source_url=f"http://127.0.0.1:{server.server_port}", http_retries=2)
    with pytest.raises(DownloadError, match="failed after 3 attempts"):
        extract(settings, YELLOW, Month(2020, 7))
    assert _leftovers(settings, YELLOW) == []


# purge_download: the Kestra flows' last task, once a month is loaded.


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _a_dead_pid() -> int:
    """The pid of a process that has exited, as a crashed download's temp file is named."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_purge_removes_the_record_then_the_file_and_reports_the_bytes(settings):
    info = extract(settings, GREEN, JAN)
    record_bytes = _record(Path(info.path)).stat().st_size
    report = purge_download(settings, GREEN, JAN)
    assert report.removed == [JAN_RECORD, JAN_FILE, JAN_IDS]
    assert report.bytes_freed == info.bytes + record_bytes + 32 + 16 * info.data_lines
    assert _leftovers(settings) == []


def test_purging_a_month_with_nothing_downloaded_succeeds_and_says_so(settings, caplog):
    caplog.set_level(logging.INFO, logger="taxi_assets")
    never = purge_download(settings, GREEN, JAN)  # not even the taxi's folder exists yet
    extract(settings, GREEN, JAN)
    purge_download(settings, GREEN, JAN)
    caplog.clear()
    second = purge_download(settings, GREEN, JAN)
    assert never.removed == second.removed == [] and never.bytes_freed == second.bytes_freed == 0
    assert "green 2019-01: nothing downloaded to purge" in caplog.text


def test_after_a_purge_extract_downloads_the_month_again(settings):
    first = extract(settings, GREEN, JAN)
    purge_download(settings, GREEN, JAN)
    again = extract(settings, GREEN, JAN)
    assert again.downloaded and again.sha256 == first.sha256 and again.data_lines == SAMPLE_ROWS
    assert not extract(settings, GREEN, JAN).downloaded


def test_purge_leaves_other_months_and_taxis_alone(settings):
    extract(settings, GREEN, JAN)
    extract(settings, GREEN, FEB)
    extract(settings, YELLOW, JAN)
    purge_download(settings, GREEN, JAN)
    assert _leftovers(settings) == [
        "green_tripdata_2019-02.csv.gz",
        "green_tripdata_2019-02.csv.gz.json",
        "green_tripdata_2019-02.row_ids",
    ]
    assert _leftovers(settings, YELLOW) == [
        "yellow_tripdata_2019-01.csv.gz",
        "yellow_tripdata_2019-01.csv.gz.json",
        "yellow_tripdata_2019-01.row_ids",
    ]
    assert not extract(settings, GREEN, FEB).downloaded and not extract(settings, YELLOW, JAN).downloaded


def test_purge_removes_partial_files_of_dead_downloads_but_not_of_a_running_one(settings):
    extract(settings, GREEN, JAN)
    folder = settings.download_dir / "green"
    dead, running = _a_dead_pid(), os.getpid()
    (folder / f"{JAN_FILE}.part-{dead}").write_bytes(b"x" * 1000)  # a download killed mid-transfer
    (folder / f"{JAN_FILE}.part-{dead}.json").write_bytes(b"{}")
    (folder / f"{JAN_FILE}.part-{running}").write_bytes(b"y" * 10)  # a download still writing
    report = purge_download(settings, GREEN, JAN)
    assert report.removed == [
        JAN_RECORD,
        JAN_FILE,
        JAN_IDS,
        f"{JAN_FILE}.part-{dead}",
        f"{JAN_FILE}.part-{dead}.json",
    ]
    assert report.kept == [f"{JAN_FILE}.part-{running}"]
    assert _leftovers(settings) == [f"{JAN_FILE}.part-{running}"]


def test_purge_never_touches_anything_outside_the_download_folder(settings, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / JAN_FILE
    target.write_bytes(b"someone else's file")
    folder = settings.download_dir / "green"
    folder.mkdir(parents=True)
    (folder / JAN_FILE).symlink_to(target)  # a link named like the month: the link goes, not its target
    (settings.download_dir / JAN_FILE).write_bytes(b"not in the taxi's folder")
    report = purge_download(settings, GREEN, JAN)
    assert report.removed == [JAN_FILE] and _leftovers(settings) == []
    assert target.read_bytes() == b"someone else's file"
    assert (settings.download_dir / JAN_FILE).exists()


def test_a_download_folder_that_leads_elsewhere_is_refused(settings, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / JAN_FILE).write_bytes(b"someone else's file")
    settings.download_dir.mkdir(parents=True)
    (settings.download_dir / "green").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ConfigError, match="not purging, .* outside the download folder"):
        purge_download(settings, GREEN, JAN)
    assert (elsewhere / JAN_FILE).read_bytes() == b"someone else's file"


class _Crash(BaseException):
    """The process dying: nothing after it runs, no handler catches it."""


def test_a_purge_that_dies_half_way_leaves_a_file_no_extract_trusts(settings, monkeypatch):
    first = extract(settings, GREEN, JAN)
    unlink = os.unlink

    def dies_after_removing(path, *args, **kwargs):
        unlink(path, *args, **kwargs)
        raise _Crash

    with monkeypatch.context() as patched:
        patched.setattr(os, "unlink", dies_after_removing)
        with pytest.raises(_Crash):
            purge_download(settings, GREEN, JAN)
    assert _leftovers(settings) == [JAN_FILE, JAN_IDS]  # the record went first: nothing vouches for the file
    again = extract(settings, GREEN, JAN)
    assert again.downloaded and again.sha256 == first.sha256
    assert purge_download(settings, GREEN, JAN).removed == [JAN_RECORD, JAN_FILE, JAN_IDS]


@pytest.mark.parametrize(
    "lost, warning",
    [
        ("record", "local green_tripdata_2019-01.csv.gz has no record"),
        ("file", "local green_tripdata_2019-01.csv.gz is gone but its record is not"),
    ],
)
def test_a_file_without_its_record_or_a_record_without_its_file_is_downloaded_afresh(settings, caplog, lost, warning):
    first = extract(settings, GREEN, JAN)
    path = Path(first.path)
    if lost == "record":
        _record(path).unlink()
        path.write_bytes(b"whatever it holds, nothing vouches for it")
    else:
        path.unlink()
    again = extract(settings, GREEN, JAN)
    assert warning in caplog.text
    assert again.downloaded and again.data_lines == SAMPLE_ROWS
    assert hashlib.sha256(path.read_bytes()).hexdigest() == again.sha256 == first.sha256
    assert json.loads(_record(path).read_text())["sha256"] == again.sha256
    assert not extract(settings, GREEN, JAN).downloaded  # verified and recorded: trusted again


def test_purge_also_removes_the_months_parquet_and_dead_conversions(settings):
    """upload-gcs converts beside the download; a purge leaves nothing of the month behind."""
    path = Path(extract(settings, GREEN, JAN).path)
    parquet = parquet_path(path)
    parquet.write_bytes(b"PAR1")
    dead = parquet.with_name(parquet.name + ".part-999999999")  # no such process
    dead.write_bytes(b"half")
    upload_record = parquet.with_name(parquet.name + ".json")
    upload_record.write_text("{}")
    report = purge_download(settings, GREEN, JAN)
    assert {parquet.name, dead.name, upload_record.name} <= set(report.removed)
    assert list(path.parent.iterdir()) == []


def test_purge_keeps_a_download_that_a_running_step_holds(settings):
    """Two flows loading one month at once: the first to finish must not pull the file from
    under the other; the last to finish purges it."""
    path = Path(extract(settings, GREEN, JAN).path)
    with download_in_use(settings, GREEN, JAN):
        kept = purge_download(settings, GREEN, JAN)
        assert (kept.removed, kept.kept) == ([], [path.name]) and path.is_file()
    assert purge_download(settings, GREEN, JAN).removed == [JAN_RECORD, JAN_FILE, JAN_IDS]


# Blank lines at the end of a month file are no rows (issue 9).


def test_blank_lines_at_the_end_of_a_served_month_are_not_counted(settings, local_release):
    served = local_release.file_for("/green/green_tripdata_2019-01.csv.gz")
    served.write_bytes(gzip.compress(gzip.decompress(served.read_bytes()) + b"\r\n\r\n\r\n"))
    info = extract(replace(settings, source_url=local_release.url), GREEN, JAN)
    assert info.data_lines == SAMPLE_ROWS


# Messages: a missing file of a published month, rejections by their published name.


def test_a_published_month_the_server_lacks_says_the_server_has_no_such_file(settings, local_release, monkeypatch):
    monkeypatch.setattr(local_release, "file_for", lambda url_path: None)  # a server missing every file
    settings = replace(settings, source_url=local_release.url)
    url = f"{local_release.url}/green/green_tripdata_2019-05.csv.gz"
    with pytest.raises(NotPublishedError) as raised:
        extract(settings, GREEN, Month(2019, 5))
    assert str(raised.value) == (
        f"green 2019-05: the server has no such file ({url} returned 404), "
        "though the month is within the published range 2019-01..2021-07"
    )
    assert _leftovers(settings) == []


def _served_as(local_release, content: bytes | None = None, text: str | None = None) -> None:
    target = local_release.root / "green" / JAN_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content if content is not None else gzip.compress(text.encode()))


def _green_header() -> str:
    return ",".join(GREEN.column_names)


@pytest.mark.parametrize(
    "served, problem",
    [
        ("truncated", "is truncated"),
        ("not gzip", "is not valid gzip"),
        ("yellow header", "does not have the green header"),
        ("header only", "has a header but no rows"),
        ("blank line between rows", "has a blank line before a row"),
        ("empty", "is empty"),
    ],
)
def test_a_rejected_download_is_named_by_its_published_name(settings, local_release, served, problem):
    good = local_release.file_for(f"/green/{JAN_FILE}").read_bytes()
    if served == "truncated":
        _served_as(local_release, good[: len(good) // 2])
    elif served == "not gzip":
        _served_as(local_release, b"<html>Not the file you are looking for</html>\n")
    elif served == "yellow header":
        gzip_fixture("yellow_tripdata_2020-07_head266.csv", local_release.root / "green" / JAN_FILE)
    elif served == "header only":
        _served_as(local_release, text=_green_header() + "\r\n")
    elif served == "blank line between rows":
        lines = gzip.decompress(good).split(b"\n")
        _served_as(local_release, gzip.compress(b"\n".join([*lines[:5], b"", *lines[5:]])))
    else:
        _served_as(local_release, gzip.compress(b""))
    settings = replace(settings, source_url=local_release.url)
    with pytest.raises(BadFileError) as raised:
        extract(settings, GREEN, JAN)
    assert str(raised.value).startswith(f"green 2019-01: downloaded file rejected, nothing kept: {JAN_FILE} {problem}")
    assert ".part-" not in str(raised.value)
    assert _leftovers(settings) == []


# Stale temp files: a run killed mid-download leaves its `.part-<pid>`; the next run removes it.


def test_extract_removes_temp_files_of_dead_runs_even_when_the_month_is_already_there(settings):
    extract(settings, GREEN, JAN)
    folder = settings.download_dir / "green"
    dead, running = _a_dead_pid(), os.getpid()
    stale = [
        f"{JAN_FILE}.part-{dead}",  # a download killed mid-transfer
        f"{JAN_FILE}.part-{dead}.json",  # ... between its file and its record
        f"green_tripdata_2019-02.csv.gz.part-{dead}",  # another month's
        f"green_tripdata_2019-01.parquet.part-{dead}",  # an upload-gcs conversion's
    ]
    for name in stale:
        (folder / name).write_bytes(b"x" * 100)
    (folder / f"{JAN_FILE}.part-{running}").write_bytes(b"still being written")
    (folder / "notes.part-abc").write_bytes(b"not a temp file of ours")
    info = extract(settings, GREEN, JAN)
    assert not info.downloaded
    assert _leftovers(settings) == sorted(
        [JAN_FILE, JAN_RECORD, JAN_IDS, f"{JAN_FILE}.part-{running}", "notes.part-abc"]
    )


class _Slow(BaseHTTPRequestHandler):
    """Sends the headers and half the file, then stalls until `release` is set."""

    body: bytes = b""
    release: threading.Event

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        half = len(self.body) // 2
        try:
            self.wfile.write(self.body[:half])
            self.wfile.flush()
            self.release.wait(60)
            self.wfile.write(self.body[half:])
        except OSError:
            pass  # the client was killed

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_download_killed_mid_transfer_leaves_litter_the_next_run_removes(tmp_path, sig):
    """`python -m taxi_assets extract` killed while the server stalls half-way: its temp file is
    all that is left (nothing that looks whole); the next run removes it, and nothing lands in
    the system's temp folder either."""
    month_file = tmp_path / "release" / JAN_FILE
    write_month(month_file, GREEN, JAN, 60_000, seed=7, compresslevel=1)  # 2+ MB: half is past one read
    body = month_file.read_bytes()
    handler = type("Handler", (_Slow,), {"body": body, "release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state, private_tmp = tmp_path / "state", tmp_path / "tmp"
    private_tmp.mkdir()
    env = {
        **os.environ,
        "TAXI_SOURCE_URL": f"http://127.0.0.1:{server.server_port}",
        "TAXI_STATE_DIR": str(state),
        "TMPDIR": str(private_tmp),
    }
    folder = state / "downloads" / "green"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taxi_assets", "extract", "--taxi", "green", "--month", "2019-01"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        part = folder / f"{JAN_FILE}.part-{proc.pid}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if part.exists() and part.stat().st_size >= 1 << 20:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"extract ended before it was killed: {proc.stderr.read().decode()}"
        assert part.stat().st_size >= 1 << 20, "the download never got going"
        proc.send_signal(sig)
        proc.wait(30)
        proc.stderr.close()
        left = sorted(p.name for p in folder.iterdir())
        # SIGKILL leaves the partial file, SIGTERM too unless a handler unwinds: never anything that looks whole
        assert left == [part.name] if sig == signal.SIGKILL else left in ([part.name], [])
        handler.release.set()
        rerun = run_cli("extract", "--taxi", "green", "--month", "2019-01", env=env)
    finally:
        handler.release.set()
        server.shutdown()
    assert rerun.returncode == 0, rerun.stderr
    assert (f"removed {part.name}, left by runs that were killed" in rerun.stderr) == bool(left)
    everything = sorted(str(p.relative_to(state)) for p in state.rglob("*") if p.is_file())
    assert everything == [f"downloads/green/{JAN_FILE}", f"downloads/green/{JAN_RECORD}", f"downloads/green/{JAN_IDS}"]
    assert json.loads(folder.joinpath(JAN_RECORD).read_text())["data_lines"] == 60_000
    assert list(private_tmp.iterdir()) == []


# Row ids: computed once, while the download is verified (issue 10).


def _ids_of_lines(path: Path) -> bytes:
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()[1:]
    return b"".join(hashlib.md5(line.encode()).digest() for line in lines)


def test_extract_keeps_the_row_ids_of_the_download_beside_it(settings):
    info = extract(settings, GREEN, JAN)
    ids = row_ids_path(Path(info.path)).read_bytes()
    assert ids[:32] == bytes.fromhex(info.sha256)  # keyed by the very download
    assert ids[32:] == _ids_of_lines(Path(info.path))


@pytest.mark.parametrize("damage", ["missing", "another download's"])
def test_a_rerun_restores_row_ids_that_are_missing_or_stale_without_downloading(settings, damage, caplog):
    info = extract(settings, GREEN, JAN)
    ids = row_ids_path(Path(info.path))
    good = ids.read_bytes()
    if damage == "missing":
        ids.unlink()
    else:
        ids.write_bytes(bytes(32) + good[32:])
    caplog.set_level(logging.INFO, logger="taxi_assets")
    again = extract(settings, GREEN, JAN)
    assert not again.downloaded and ids.read_bytes() == good
    assert "computing the row ids of local green_tripdata_2019-01.csv.gz" in caplog.text


def test_a_rerun_with_its_row_ids_in_place_does_not_compute_them_again(settings):
    info = extract(settings, GREEN, JAN)
    ids = row_ids_path(Path(info.path))
    before = ids.stat().st_mtime_ns
    assert not extract(settings, GREEN, JAN).downloaded
    assert ids.stat().st_mtime_ns == before
