"""Without network: a host name that does not resolve fails at once, in one line that says
what to do offline; other network faults keep their retries."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from dagster import DagsterInstance
from helpers import PROXIES, free_port, run_cli, run_demo

from taxi_assets.config import Settings
from taxi_assets.datasets import GREEN
from taxi_assets.errors import DownloadError, NotPublishedError
from taxi_assets.months import Month
from taxi_assets.steps.extract import extract

JAN = Month(2019, 1)
UNRESOLVABLE = "http://no-such-host.invalid"  # .invalid never resolves (RFC 2606)
OFFLINE_HINT = (
    "set TAXI_SOURCE_URL to a reachable release server, e.g. "
    "`python -m taxi_assets.samples.mirror_server --dir /tmp/release --port 8765` and TAXI_SOURCE_URL=http://127.0.0.1:8765"
)


@pytest.fixture
def no_proxy(monkeypatch):
    """Straight to the host: a proxy would answer for it (with a retried 502/503)."""
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def requests_made(monkeypatch) -> list[str]:
    made, get = [], requests.get

    def counting(url, *args, **kwargs):
        made.append(url)
        return get(url, *args, **kwargs)

    monkeypatch.setattr(requests, "get", counting)
    return made


def test_the_cli_says_in_one_line_at_once_what_to_do_offline(tmp_path, no_proxy):
    env = {"TAXI_SOURCE_URL": UNRESOLVABLE, "TAXI_STATE_DIR": str(tmp_path / "state")}  # no proxy: see no_proxy
    started = time.monotonic()
    result = run_cli("extract", "--taxi", "green", "--month", "2019-01", env=env)
    seconds = time.monotonic() - started  # a Python start and imports included
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: green 2019-01: cannot resolve no-such-host.invalid (no network?): {OFFLINE_HINT}"
    ]
    assert seconds < 2, f"took {seconds:.1f}s"
    assert list((tmp_path / "state" / "downloads" / "green").iterdir()) == []


def test_the_tlc_source_names_its_own_variable_and_stand_in(tmp_path, no_proxy):
    env = {"TAXI_TLC_URL": UNRESOLVABLE + "/trip-data", "TAXI_STATE_DIR": str(tmp_path / "state")}
    result = run_cli("extract", "--source", "tlc", "--taxi", "fhvhv", "--month", "2024-01", env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: tlc_fhvhv 2024-01: cannot resolve no-such-host.invalid (no network?): set TAXI_TLC_URL to a"
        " reachable host, e.g. `python -m taxi_assets.samples.tlc --dir /tmp/trip-data --port 8766` and"
        " TAXI_TLC_URL=http://127.0.0.1:8766/trip-data"
    ]


def test_a_name_that_does_not_resolve_is_tried_once(tmp_path, no_proxy, requests_made):
    settings = Settings(source_url=UNRESOLVABLE, state_dir=tmp_path, http_retries=5, http_backoff=1.0)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"^green 2019-01: cannot resolve no-such-host\.invalid \(no network\?\)"):
        extract(settings, GREEN, JAN)
    assert len(requests_made) == 1 and time.monotonic() - started < 1


def test_a_dns_server_out_of_reach_is_not_retried_either(tmp_path, no_proxy, requests_made, monkeypatch):
    """Offline with a resolver configured: EAI_AGAIN ("Temporary failure in name resolution")."""

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    settings = Settings(
        source_url="https://github.com/DataTalksClub/nyc-tlc-data/releases/download",
        state_dir=tmp_path,
        http_backoff=1.0,
    )
    with pytest.raises(DownloadError) as raised:
        extract(settings, GREEN, JAN)
    assert str(raised.value) == f"green 2019-01: cannot resolve github.com (no network?): {OFFLINE_HINT}"
    assert len(requests_made) == 1


def test_a_refused_connection_is_still_retried(tmp_path, no_proxy, requests_made, caplog):
    settings = Settings(
        source_url=f"http://127.0.0.1:{free_port()}", state_dir=tmp_path, http_retries=2, http_backoff=0.01
    )
    with pytest.raises(DownloadError, match="download failed after 3 attempts: .*Connection refused"):
        extract(settings, GREEN, JAN)
    assert len(requests_made) == 3
    assert "attempt 1 failed" in caplog.text


@pytest.mark.parametrize(
    ("source", "extra", "error"),
    [
        (UNRESOLVABLE, {}, f"green 2019-01: cannot resolve no-such-host.invalid (no network?): {OFFLINE_HINT}"),
        # A closed port is a network fault, retried as configured (TAXI_HTTP_RETRIES: none here).
        ("closed", {"TAXI_HTTP_RETRIES": "0"}, "green 2019-01: asking the source (HEAD) failed after 1 attempts: "),
    ],
    ids=["unresolvable", "closed-port"],
)
def test_a_demo_without_its_source_stops_before_any_run(tmp_path, source, extra, error):
    """The demo asks the source first: one line, nothing started, no failed run in the
    instance the Dagster UI opens."""
    url = f"http://127.0.0.1:{free_port()}" if source == "closed" else source
    started = time.monotonic()
    result = run_demo(tmp_path, url, **extra)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"Materializing green 2019-01 from {url} into embedded Postgres in {tmp_path / 'state' / 'postgres'} ..."
    ]
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {error}"), line
    assert time.monotonic() - started < 15  # no Dagster run, no Postgres, no emulator started
    assert not (tmp_path / "state" / "postgres").exists() and not (tmp_path / "state" / "emulators").exists()
    with DagsterInstance.from_config(str(tmp_path / "state" / "dagster")) as instance:
        assert instance.get_runs() == []


def test_a_demo_of_a_month_the_source_lacks_stops_before_any_run(tmp_path, source_server):
    result = run_demo(tmp_path, source_server.url, "--month", "2022-01")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: green 2022-01 is not published ({source_server.url}/green/green_tripdata_2022-01.csv.gz is not"
        " there); months available 2019-01..2021-07"
    ]
    with DagsterInstance.from_config(str(tmp_path / "state" / "dagster")) as instance:
        assert instance.get_runs() == []


def test_the_demos_look_at_the_source_stops_a_wrong_one_and_skips_a_local_copy(tmp_path, local_release, no_proxy):
    from taxi_assets.demo import check_source
    from taxi_assets.files import local_path, record_path

    settings = Settings(source_url=local_release.url + "/elsewhere", state_dir=tmp_path / "state")
    with pytest.raises(NotPublishedError, match=r"the source has no such file .*is TAXI_SOURCE_URL right\?$"):
        check_source(settings, GREEN, JAN)
    check_source(Settings(source_url=local_release.url, state_dir=tmp_path / "state"), GREEN, JAN)
    # A local copy (the demo ran before): the run uses it, offline too, so the source is not asked.
    record = record_path(local_path(settings, GREEN, JAN))
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    check_source(Settings(source_url=UNRESOLVABLE, state_dir=tmp_path / "state"), GREEN, JAN)
