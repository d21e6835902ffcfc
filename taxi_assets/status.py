"""`python -m taxi_assets status`: what each store holds per feed and month, from the ledgers.

It reads only the two ledgers (`taxi_assets.ledger`) and asks the source (HEAD requests) whether
a loaded file was re-published since, and which month is its newest. Never the tables, never
Dagster's or Kestra's own records: the stores are the one memory.
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from taxi_assets import ledger
from taxi_assets.config import Settings
from taxi_assets.datasets import TaxiDataset
from taxi_assets.errors import DownloadError, TaxiError
from taxi_assets.months import Month, month_just_ended, months_between

log = logging.getLogger(__name__)
_HEADS = 8  # HEAD requests at once when asking the source


@dataclass
class MonthStatus:
    month: Month
    held: dict[str, ledger.LoadRecord | None]  # per store
    source: dict | None = None  # the source's file now: etag, bytes, republished; None: not asked

    @property
    def stores_differ(self) -> bool:
        """The stores hold different files, or only one holds the month."""
        return len({e.sha256 if e else None for e in self.held.values()}) > 1

    def as_dict(self) -> dict:
        return {
            "month": str(self.month),
            **{store: entry.as_dict() if entry else None for store, entry in self.held.items()},
            "stores_differ": self.stores_differ,
            "source": self.source,
        }


@dataclass
class FeedStatus:
    dataset: TaxiDataset
    months: list[MonthStatus]
    newest: Month  # the newest month the missing months are counted up to
    newest_from_source: bool  # False: the source was not asked; `newest` is the newest held
    missing: dict[str, list[Month]] = field(default_factory=dict)  # per store

    def as_dict(self) -> dict:
        return {
            "source": self.dataset.source.name,
            "taxi": self.dataset.taxi,
            "months": [m.as_dict() for m in self.months],
            "missing": {store: [str(m) for m in months] for store, months in self.missing.items()},
            "missing_counted_up_to": str(self.newest),
            "newest_from_source": self.newest_from_source,
        }


def _source_file(settings: Settings, dataset: TaxiDataset, month: Month, entries) -> dict | None:
    from taxi_assets.source import remote_file

    remote = remote_file(settings, dataset, month, retries=0)
    if remote is None:
        return {"etag": None, "bytes": None, "republished": None, "published": False}
    loaded = [e for e in entries if e is not None]
    return {
        "etag": remote.etag,
        "bytes": remote.bytes,
        "published": True,
        "republished": any(not remote.is_file(e.etag, e.bytes) for e in loaded),
    }


def collect(
    settings: Settings, datasets: list[TaxiDataset], holdings: dict[str, dict], *, ask_source: bool
) -> list[FeedStatus]:
    """Each dataset's months as the ledgers (`holdings`: per store, `ledger.holdings`) hold them."""
    from taxi_assets.source import newest_published

    feeds = []
    for ds in datasets:
        keys = sorted({k[2] for held in holdings.values() for k in held if k[:2] == (ds.source.name, ds.taxi)})
        months = [
            MonthStatus(m, {store: held.get((ds.source.name, ds.taxi, m)) for store, held in holdings.items()})
            for m in keys
        ]
        newest, from_source = ds.last_month, ds.last_month is not None
        if ask_source:
            try:
                if newest is None:
                    this_month = month_just_ended(datetime.now(timezone.utc)).next()
                    found = newest_published(settings, ds, this_month, retries=0)
                    newest, from_source = (found[0], True) if found else (None, False)
                if ds.source.republishes and months:
                    with ThreadPoolExecutor(_HEADS) as pool:
                        ask = functools.partial(_source_file, settings, ds)
                        answers = pool.map(ask, [m.month for m in months], [list(m.held.values()) for m in months])
                        for status, answer in zip(months, answers, strict=True):
                            status.source = answer
            except DownloadError as exc:  # the source out of reach: the ledgers are still shown
                log.warning("%s: could not ask the source (%s)", ds.name, exc)
        if newest is None:
            newest = keys[-1] if keys else None
        feed = FeedStatus(ds, months, newest or ds.first_month, from_source)
        if keys or ds.last_month is not None:
            expected = months_between(ds.first_month, feed.newest) if newest else []
            feed.missing = {
                store: [m for m in expected if (ds.source.name, ds.taxi, m) not in held]
                for store, held in holdings.items()
            }
        feeds.append(feed)
    return feeds


def ranges(months: list[Month]) -> str:
    """2019-01..2019-04, 2019-07: consecutive months as one range."""
    parts, start, prev = [], None, None
    for month in [*months, None]:
        if month is not None and prev is not None and month == prev.next():
            prev = month
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = month
    return ", ".join(parts) or "none"


def _cell(entry: ledger.LoadRecord | None) -> str:
    if entry is None:
        return f"{'-':>10} {'':<8} {'':<28} {'':<16}"
    when = entry.loaded_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
    who = entry.loaded_by if len(entry.loaded_by) <= 28 else entry.loaded_by[:27] + "…"
    return f"{entry.rows:>10,} {entry.sha256[:8]:<8} {who:<28} {when:<16}"


def render(feeds: list[FeedStatus], stores: list[str], unavailable: dict[str, str]) -> str:
    """The grid a terminal shows: per feed, a line per month held, then the missing months."""
    lines = []
    head = "   ".join(f"{store + ': rows':>10} {'sha256':<8} {'loaded by':<28} {'when (UTC)':<16}" for store in stores)
    for feed in feeds:
        ds = feed.dataset
        lines.append(f"{ds.name} ({ds.source.name} {ds.taxi}, table {ds.table})")
        if feed.months:
            lines.append(f"  {'month':<7}  {head}  notes")
        for status in feed.months:
            notes = []
            if status.stores_differ:
                notes.append("STORES DIFFER")
            if status.source and status.source["republished"]:
                notes.append(f"RE-PUBLISHED (ETag {status.source['etag']}, {status.source['bytes']} bytes)")
            elif status.source and not status.source["published"]:
                notes.append("no longer published")
            cells = "   ".join(_cell(status.held[store]) for store in stores)
            lines.append(f"  {status.month!s:<7}  {cells}  {'; '.join(notes)}".rstrip())
        if not feed.months:
            lines.append("  nothing loaded")
        upto = f"up to {feed.newest}" + ("" if feed.newest_from_source else " (the newest held; source not asked)")
        for store, missing in feed.missing.items():
            if store not in unavailable:
                lines.append(f"  missing in {store} ({upto}): {ranges(missing)}")
    for store, why in unavailable.items():
        lines.append(f"{store}: not read ({why})")
    return "\n".join(lines)


def read_marts(
    settings: Settings, stores: list[str], sources: list[str]
) -> tuple[dict[str, dict[str, dict]], dict[str, str]]:
    """Per source and store (of those whose loads ledger was read), each month's newest marts
    build (`marts_ledger.builds`); and the marts ledgers that could not be read, and why."""
    from taxi_assets import marts_ledger
    from taxi_assets.marts import marts_schema

    found: dict[str, dict[str, dict]] = {}
    unread: dict[str, str] = {}
    for store in stores:
        where = ledger.bigquery_available(settings) if store == ledger.BIGQUERY else settings
        for source in sources:
            schema = marts_schema(where, store, source)
            try:
                found.setdefault(source, {})[store] = marts_ledger.builds(where, store, schema)
            except Exception as exc:  # the loads were read: this one ledger is reported as not read
                log.debug("reading the marts ledger %s in %s failed", schema, store, exc_info=True)
                unread[f"{store} {schema}"] = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                )
    return found, unread


def render_marts(marts: dict[str, dict[str, dict]], holdings: dict[str, dict], unread: dict[str, str]) -> str:
    """Per source and store: the months whose marts are built, the newest build, and the months
    loaded there whose marts are not built; then the marts ledgers not read."""
    lines = []
    for source, by_store in marts.items():
        for store, builds in by_store.items():
            loaded = sorted({k[2] for k in holdings.get(store, {}) if k[0] == source})
            if not builds and not loaded:
                continue
            line = f"{source} marts in {store}: {ranges(sorted(builds))}"
            if builds:
                month, newest = max(builds.items(), key=lambda item: item[1].built_at)
                when = newest.built_at.strftime("%Y-%m-%d %H:%M")
                line += f"; newest build {month} by {newest.built_by} at {when} UTC"
            if unbuilt := [m for m in loaded if m not in builds]:
                line += f"; loaded, marts not built: {ranges(unbuilt)}"
            lines.append(line)
    lines += [f"marts ledger {where}: not read ({why})" for where, why in unread.items()]
    return "\n".join(lines)


def read_holdings(settings: Settings, stores: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """Per store that could be read, its ledger's current records; the others, and why not."""
    holdings, unavailable = {}, {}
    for store in stores:
        try:
            where = ledger.bigquery_available(settings) if store == ledger.BIGQUERY else settings
            if where is None:
                unavailable[store] = "not configured, and its local emulator is not running"
                continue
            holdings[store] = ledger.holdings(where, store)
        except TaxiError as exc:
            unavailable[store] = str(exc)
        except Exception as exc:  # a store that does not answer: the other is still shown
            log.debug("reading the %s ledger failed", store, exc_info=True)
            unavailable[store] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return holdings, unavailable
