"""Asking the source: a month's file URL, what the server says of the file (one HEAD), the newest
month it publishes, and the retries and one-line errors of every request to it.

extract downloads through `retrying` and `check_status`; the TLC sensor and `status` ask with
`remote_file` and `newest_published` alone. A host that does not resolve fails at once with how
to work offline; network errors and 5xx are retried with backoff; a 404 (or the source's own "not
published" status) says whether the month is not published yet, outside the published range, or
long overdue. URLs are shown and kept with their credentials masked (`redact`). Nothing here
imports a step.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from taxi_assets.config import SOURCE_URL, TLC_URL, Settings
from taxi_assets.datasets import TaxiDataset
from taxi_assets.errors import DownloadError, NotPublishedError
from taxi_assets.months import Month, month_just_ended
from taxi_assets.redact import redact_text, redact_url

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
# How to work offline, per source: the local stand-in of its host.
_OFFLINE_HINT = {
    "mirror": f"set {SOURCE_URL} to a reachable release server, e.g. "
    "`python -m taxi_assets.samples.mirror_server --dir /tmp/release --port 8765` and "
    f"{SOURCE_URL}=http://127.0.0.1:8765",
    "tlc": f"set {TLC_URL} to a reachable host, e.g. "
    "`python -m taxi_assets.samples.tlc --dir /tmp/trip-data --port 8766` and "
    f"{TLC_URL}=http://127.0.0.1:8766/trip-data",
}


def _causes(exc: BaseException):
    """`exc` and what it wraps: requests wraps urllib3's errors, which wrap the socket's, in two or
    three layers."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
        todo += [a for a in e.args if isinstance(a, BaseException)]


def _unresolved_host(exc: BaseException) -> str | None:
    """The host name whose lookup failed, if `exc` comes from a failed name resolution (no
    network, no DNS, a mistyped host)."""
    for e in _causes(exc):
        if isinstance(e, urllib3.exceptions.NameResolutionError):
            return getattr(e, "_host", None) or ""
        if isinstance(e, socket.gaierror):
            return ""
    return None


def _reason(exc: BaseException, url: str) -> str:
    """A failed attempt in a few words (where, and why): urllib3's layers, some 300 characters,
    say no more, and may quote the URL's query."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    causes = list(_causes(exc))
    os_error = next((e for e in causes if isinstance(e, OSError) and e.strerror), None)
    why = os_error.strerror if os_error else ""
    if any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in causes):
        return f"cannot connect to {where} ({why or 'no connection'})"
    if any(isinstance(e, urllib3.exceptions.ConnectTimeoutError) for e in causes):
        return f"cannot connect to {where} (timed out)"
    if any(isinstance(e, urllib3.exceptions.ReadTimeoutError | requests.ReadTimeout) for e in causes):
        return f"{where} stopped sending (read timed out)"
    if why:
        return f"connection to {where} failed ({why})"
    text = redact_text(str(exc).strip(), url).splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 120 else line[:117] + "..."


def _overdue(month: Month) -> bool:
    """Whether the TLC should long have published `month` (it does about two months after the
    month ends; a month more of margin): its 403 is then a refusal, not "not yet"."""
    newest_due = month_just_ended(datetime.now(timezone.utc)).previous().previous()
    return month < newest_due


def _not_found(dataset: TaxiDataset, what: str, month: Month, url: str, status: int) -> NotPublishedError:
    published, shown = dataset.published(month), redact_url(url)
    if published:
        return NotPublishedError(
            f"{what}: the server has no such file ({shown} returned {status}), "
            f"though the month is within the published range {dataset.published_range()}"
        )
    if published is None and _overdue(month):
        return NotPublishedError(
            f"{what}: the server refused the file ({shown} returned {status}), though the TLC published the"
            f" month long ago: the file may have been removed, or access is denied (is {dataset.source.url_variable}"
            " right?)"
        )
    if published is None:  # an open range: the source alone knows its newest month
        return NotPublishedError(
            f"{what} is not published yet ({shown} returned {status}); the TLC publishes a month about two months"
            f" after it ends (`python -m taxi_assets newest-month --source {dataset.source.name} --taxi"
            f" {dataset.taxi}` finds the newest)"
        )
    return NotPublishedError(
        f"{what} is not published ({shown} returned {status}); months available {dataset.published_range()}"
    )


@dataclass(frozen=True)
class Remote:
    """A published file as the server describes it, without its body."""

    url: str
    bytes: int | None
    etag: str
    last_modified: str

    def is_file(self, etag: str, size: int | None) -> bool:
        """Whether this is the file recorded as (`etag`, `size`): the same ETag, and the same size
        where both are known. How every step and the sensor tell a re-published file."""
        return self.etag == etag and (self.bytes is None or size is None or self.bytes == size)


def remote_of(url: str, resp: requests.Response) -> Remote:
    """The file as `resp` (a HEAD's or a GET's) describes it; its URL kept without credentials."""
    try:
        size = int(resp.headers["Content-Length"])
    except (KeyError, ValueError):
        size = None
    return Remote(redact_url(url), size, resp.headers.get("ETag", ""), resp.headers.get("Last-Modified", ""))


def retrying(
    settings: Settings,
    dataset: TaxiDataset,
    what: str,
    url: str,
    attempt_once,
    retries: int | None = None,
    action: str = "download",
):
    """`attempt_once()` again after network errors and 5xx (backing off; `retries` times, default
    the setting's), but not after a host name that does not resolve: that is no passing fault, it
    is a machine offline."""
    retries = settings.http_retries if retries is None else retries
    attempt = 0
    while True:
        attempt += 1
        try:
            return attempt_once()
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            if (host := _unresolved_host(exc)) is not None:
                host = host or urlsplit(url).hostname
                hint = _OFFLINE_HINT[dataset.source.name]
                raise DownloadError(f"{what}: cannot resolve {host} (no network?): {hint}") from None
            reason = _reason(exc, url)
            if attempt > retries:
                raise DownloadError(f"{what}: {action} failed after {attempt} attempts: {reason}") from None
            wait = settings.http_backoff * 2 ** (attempt - 1)
            log.warning("%s: attempt %d failed (%s); retrying in %.1fs", what, attempt, reason, wait)
            time.sleep(wait)


def check_status(resp: requests.Response, dataset: TaxiDataset, what: str, month: Month, url: str) -> None:
    """Raise unless `resp` serves the file: NotPublishedError when the source has no such file, an
    HTTPError that `retrying` retries when it may pass, else a one-line DownloadError."""
    if resp.status_code in (404, dataset.source.not_published_status):
        raise _not_found(dataset, what, month, url, resp.status_code)
    if resp.status_code in _RETRY_STATUS:
        raise requests.HTTPError(f"HTTP {resp.status_code}", response=resp)
    if resp.status_code != 200:
        raise DownloadError(f"{what}: {redact_url(url)} returned HTTP {resp.status_code}")


def source_url(settings: Settings, dataset: TaxiDataset, month: Month) -> str:
    """The month's file URL, credentials and all: for the request only (`redact_url` for the rest).
    A query of the base URL (a signed URL's `?sig=…`) goes after the file's path."""
    base = urlsplit(settings.base_url(dataset.source.url_variable))
    url = urlsplit(dataset.url(urlunsplit(base._replace(query="", fragment="")), month))
    return urlunsplit(url._replace(query=base.query))


def remote_file(settings: Settings, dataset: TaxiDataset, month: Month, *, retries: int | None = None) -> Remote | None:
    """The month's file as the source describes it (one HEAD, retried like a download unless
    `retries` says otherwise), or None when it is not published."""
    url = source_url(settings, dataset, month)
    what = f"{dataset.name} {month}"

    def head() -> Remote:
        with requests.head(url, timeout=(10, settings.http_timeout), allow_redirects=True) as resp:
            check_status(resp, dataset, what, month, url)
            return remote_of(url, resp)

    try:
        return retrying(settings, dataset, what, url, head, retries, action="asking the source (HEAD)")
    except NotPublishedError:
        return None


def newest_published(
    settings: Settings, dataset: TaxiDataset, now: Month, lookback: int = 6, *, retries: int | None = None
):
    """(month, Remote) of the newest month the source publishes, looking back from the month
    before `now` (the newest that can exist) by HEAD requests; None if none of `lookback` is."""
    month = now.previous() if dataset.last_month is None else dataset.last_month
    for _ in range(lookback):
        if month < dataset.first_month:
            break
        if (remote := remote_file(settings, dataset, month, retries=retries)) is not None:
            return month, remote
        month = month.previous()
    return None
