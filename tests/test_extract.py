"""extract: download, verify, keep; and every way a download can go wrong."""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SAMPLE_ROWS
from helpers import gzip_fixture

from taxi_assets.datasets import GREEN, YELLOW
from taxi_assets.errors import BadFileError, DownloadError, NotPublishedError
from taxi_assets.months import Month
from taxi_assets.steps.extract import extract, local_path

JAN = Month(2019, 1)


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
    assert _leftovers(settings) == ["green_tripdata_2019-01.csv.gz", "green_tripdata_2019-01.csv.gz.json"]


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
