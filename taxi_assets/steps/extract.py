"""extract: download one month's .csv.gz, verify it, and describe it; purge it once loaded.

The file appears under its published name only once it is complete and verified (temp file
`<file>.part-<pid>`, fsync, rename), so a crash or a truncated transfer never leaves a file that
looks whole, and only if its rows are of its month (a file mostly of another month, one served
under the wrong name, is refused: nothing kept, every later step fails on it too). Verifying
reads every row (`monthfile.MonthFile.verify`), so it also computes the rows' ids once for every
later step: the row-id file `<taxi>_tripdata_<YYYY-MM>.row_ids` (see `monthfile`). A sidecar `<file>.json`, written after
both, records size, sha256 and data-line count; a file matching its sidecar is not downloaded
again. A file without its record, or a record without its file, is never trusted: the month is
downloaded again.

A process killed mid-download (SIGKILL, SIGTERM, a container stopped) leaves its temp file:
every extract first removes the temp files in its taxi's download folder whose writing process
is gone (`remove_stale_temps`), so such litter lasts until the next run, never longer.

`purge_download` frees the disk once a month is loaded: it removes the record first, then the
file (the reverse of the order they were written), then leftover temp files of that month, so a
crash part-way leaves at worst a file without its record, which the next extract replaces.

One download per machine: every step that loads a month into a store records, once it has the
download, that the month is asked of that store (`ask`: a small file under `asks/` in the state
folder, where both orchestrators' steps see it). The purge-download step (`purge_download(..., when_loaded=True)`)
removes the download only once every asked store holds this very file by its ledger (the record
each load writes in its store, naming the file's sha256); otherwise it keeps it, saying in one
line which stores it waits for. A month asked of any store is asked of every store the settings
configure too (`configured_stores`): the Postgres and the cloud flows load the same months, one
after the other, and the second must find the first's download. A download no load asked for
is nobody's: the purge removes it as before. No timer: only the ledgers decide.

Asking the source (the file's URL, its HEAD, retries, the one-line errors of a failed request) is
`taxi_assets.source`'s, shared with the TLC sensor and `status`; this step downloads through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from taxi_assets import ledger
from taxi_assets.config import Settings
from taxi_assets.datasets import TaxiDataset
from taxi_assets.errors import BadFileError, ConfigError, DownloadError
from taxi_assets.files import (
    TEMP_INFIX,
    FileInfo,
    ask_path,
    asks_folder,
    local_path,
    no_space,
    parquet_path,
    record_path,
    recorded_download,
    row_ids_path,
    temp_path,
    write_private,
)
from taxi_assets.monthfile import open_month_file
from taxi_assets.months import Month
from taxi_assets.redact import redact_url
from taxi_assets.source import Remote, check_status, remote_file, remote_of, retrying, source_url

log = logging.getLogger(__name__)

_BUFFER = 1 << 20
_TEMP_NAME = re.compile(r"^.+\.part-\d+(\.json)?$")  # a download's, a record's or a conversion's


@contextlib.contextmanager
def _month_lock(settings: Settings, dataset: TaxiDataset, month: Month, *, exclusive: bool):
    """flock on the month's lock file (a 0-byte file under `locks/`, left in place): shared and
    waiting, or exclusive and not waiting. Yields whether it holds the lock. Without flock (not
    POSIX) it always does."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    lock = settings.state_dir / "locks" / dataset.folder / (dataset.file_name(month) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        yield True


def download_in_use(settings: Settings, dataset: TaxiDataset, month: Month):
    """Held by a step while it reads a month's download: purge-download keeps the files while
    any step holds it, so two flows loading the same month at once (the Postgres and the cloud
    schedule tick together) never lose the file under each other; the last to finish purges."""
    return _month_lock(settings, dataset, month, exclusive=False)


def ask(settings: Settings, dataset: TaxiDataset, month: Month, store: str, *, by: str | None = None) -> None:
    """Record that a step loads the month into `store` (`ledger.STORES`): until that store's
    ledger holds the download, purge-download keeps it. Called under `download_in_use`, once
    extract has the download (no ask is left for a month that failed to download): no purge runs
    between the two, nor until the step is done with the file. Idempotent."""
    path = ask_path(settings, dataset, month, store)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    asked = {
        "store": store,
        "asked_by": by or ledger.loaded_by(),
        "asked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        write_private(tmp, json.dumps(asked))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def asked_stores(settings: Settings, dataset: TaxiDataset, month: Month) -> list[str]:
    """The stores a step has asked the month of since its download (`ask`), in `ledger.STORES` order."""
    return [s for s in ledger.STORES if ask_path(settings, dataset, month, s).is_file()]


def configured_stores(settings: Settings) -> list[str]:
    """The stores this machine loads: `TAXI_STORES` when set, else those the settings name a server
    of: Postgres by `TAXI_POSTGRES_DSN`, BigQuery by `GCP_PROJECT_ID` or `BIGQUERY_EMULATOR_HOST`
    (the compose stack sets them; Kestra's worker has them). The embedded Postgres and emulators a
    bare machine starts on demand name none: there the asks alone decide."""
    if settings.stores is not None:  # a machine that reaches BigQuery but only ever loads Postgres
        return list(settings.stores)
    stores = [ledger.POSTGRES] if settings.postgres_dsn else []
    return stores + ([ledger.BIGQUERY] if settings.gcp_configured or settings.bigquery_emulator else [])


def stores_to_hold(settings: Settings, dataset: TaxiDataset, month: Month) -> list[str]:
    """The stores that must hold the month's download before it is purged: none when no load asked
    for it, else the asked stores and every configured one."""
    asked = asked_stores(settings, dataset, month)
    wanted = set(asked) | set(configured_stores(settings)) if asked else set()
    return [s for s in ledger.STORES if s in wanted]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_BUFFER):
            digest.update(chunk)
    return digest.hexdigest()


def cached(settings: Settings, dataset: TaxiDataset, month: Month) -> FileInfo | None:
    """The local file's description if the file and its sidecar are both there and still match.
    A file whose row ids are missing or stale is verified again (and refused if it no longer
    passes, a copy of another month's rows kept from before months were checked among them); one
    with its row ids in place is trusted as it is."""
    path = local_path(settings, dataset, month)
    record, has_file = record_path(path), path.is_file()
    if not record.exists():
        if has_file:
            log.warning("local %s has no record (an interrupted download or purge); downloading it again", path.name)
        return None
    try:
        info = FileInfo(**json.loads(record.read_text()))
    except (OSError, ValueError, TypeError):
        log.warning("the record of local %s is unreadable; downloading it again", path.name)
        return None
    if not has_file:
        log.warning("local %s is gone but its record is not; downloading it again", path.name)
        return None
    if path.stat().st_size != info.bytes:
        log.warning("local %s does not match its record; downloading it again", path.name)
        return None
    month_file, problem = open_month_file(path, dataset), None
    # The sha256 is taken in a thread of its own while the row ids are checked or made (hashlib
    # releases the GIL): a file whose ids are missing costs one pass's time, not two.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="taxi-sha256") as pool:
        sha256 = pool.submit(_sha256, path)
        if (ids := month_file.row_ids_of(info.sha256, info.data_lines)) is not None:
            ids.close()
        else:
            log.info("computing the row ids of local %s (its row-id file is missing or stale)", path.name)
            try:
                month_file.verify(sha256=info.sha256)
            except BadFileError as exc:
                problem = exc
        if sha256.result() != info.sha256:
            row_ids_path(path).unlink(missing_ok=True)  # made for the recorded file, not this one
            log.warning("local %s does not match its record; downloading it again", path.name)
            return None
    if problem is not None:
        log.warning("local %s no longer verifies (%s); downloading it again", path.name, problem)
        return None
    return FileInfo(**{**asdict(info), "path": str(path), "downloaded": False})


def _progress(total: int | None, name: str):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False)


def _fetch(url: str, dest: Path, settings: Settings, dataset: TaxiDataset, month: Month) -> tuple[str, Remote]:
    """Stream `url` into `dest`; return its sha256 and what the server said of it."""
    what = f"{dataset.name} {month}"
    return retrying(settings, dataset, what, url, lambda: _get(url, dest, settings, dataset, month, what))


def _get(url: str, dest: Path, settings: Settings, dataset: TaxiDataset, month: Month, what: str) -> tuple[str, Remote]:
    with requests.get(url, stream=True, timeout=(10, settings.http_timeout)) as resp:
        check_status(resp, dataset, what, month, url)
        remote = remote_of(url, resp)
        digest, size = hashlib.sha256(), 0
        bar = _progress(remote.bytes, dest.name.split(TEMP_INFIX)[0])
        try:
            with open(dest, "wb") as out:
                # Raw bytes: a server that adds Content-Encoding must not get the file unzipped.
                for chunk in resp.raw.stream(_BUFFER, decode_content=False):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        finally:
            if bar is not None:
                bar.close()
        if remote.bytes is not None and size != remote.bytes:
            raise requests.ConnectionError(f"connection closed after {size} of {remote.bytes} bytes")
        return digest.hexdigest(), remote


def _republished(settings: Settings, dataset: TaxiDataset, month: Month, info: FileInfo) -> bool:
    """Whether the source now serves another file for the month than the local copy (its ETag
    or size changed): asked of sources that re-upload files. Unreachable, the copy is used."""
    try:
        remote = remote_file(settings, dataset, month, retries=0)
    except DownloadError as exc:
        log.warning("%s: cannot ask the source whether it changed (%s); using the local copy", info.filename, exc)
        return False
    if remote is None:
        log.warning("%s: the source no longer publishes it; using the local copy", info.filename)
        return False
    if not remote.is_file(info.etag, info.bytes):
        log.info(
            "%s was re-published (ETag %s, %s bytes; the local copy's: %s, %d bytes); downloading it again",
            info.filename,
            remote.etag,
            remote.bytes,
            info.etag or "none",
            info.bytes,
        )
        return True
    return False


def extract(settings: Settings, dataset: TaxiDataset, month: Month, *, revalidate: bool = False) -> FileInfo:
    """Make sure a verified copy of the month's file is on disk and describe it.

    With `revalidate`, for a source that re-uploads files (the TLC's), a local copy is first
    compared with the server's (one HEAD) and downloaded again if it changed. Only the first
    step of a run asks (the extract command, Dagster's file asset): every later step loads the
    very copy it verified, so a file re-published mid-run cannot split a month between stores.
    """
    remove_stale_temps(local_path(settings, dataset, month).parent)
    info = cached(settings, dataset, month)
    asks = revalidate and dataset.source.republishes
    if info and not (asks and _republished(settings, dataset, month, info)):
        log.info("%s is already downloaded and verified (%d data lines)", info.filename, info.data_lines)
        return info
    what = f"{dataset.name} {month}"
    path = local_path(settings, dataset, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    url = source_url(settings, dataset, month)
    tmp, sidecar_tmp = temp_path(path), temp_path(record_path(path))
    try:
        started = time.monotonic()
        sha256, remote = _fetch(url, tmp, settings, dataset, month)
        try:
            header, lines = open_month_file(tmp, dataset, path.name).verify(sha256=sha256)
        except BadFileError as exc:
            raise BadFileError(f"{what}: downloaded file rejected, nothing kept: {exc}") from None
        info = FileInfo(
            taxi=dataset.taxi,
            month=str(month),
            path=str(path),
            url=redact_url(url),
            bytes=tmp.stat().st_size,
            sha256=sha256,
            data_lines=lines,
            header=header,
            downloaded=True,
            etag=remote.etag,
            last_modified=remote.last_modified,
        )
        os.replace(tmp, path)  # the published name appears only now, complete and verified
        write_private(sidecar_tmp, json.dumps(asdict(info), indent=1))
        os.replace(sidecar_tmp, record_path(path))
        log.info(
            "downloaded %s: %d bytes, %d data lines in %.1fs", path.name, info.bytes, lines, time.monotonic() - started
        )
        return info
    except OSError as exc:
        if (full := no_space(exc, path)) is None:
            raise
        raise DownloadError(f"{what}: {full}") from None
    finally:
        tmp.unlink(missing_ok=True)
        sidecar_tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class PurgeReport:
    """What `purge_download` removed from one month's download folder."""

    taxi: str
    month: str
    folder: str
    removed: list[str]  # file names, in the order they were removed
    bytes_freed: int
    kept: list[str]  # temp files of a download still running; the download, when kept whole
    waiting_for: list[str] = field(default_factory=list)  # asked stores not holding the download yet

    def as_dict(self) -> dict:
        return asdict(self)


def _writer_running(name: str) -> int | None:
    """The pid in a temp file's name `<name>.part-<pid>[.json]` if that process still runs, else None."""
    pid = name[name.rindex(TEMP_INFIX) + len(TEMP_INFIX) :].removesuffix(".json")
    if not pid.isdigit() or int(pid) <= 0:
        return None
    if os.name != "posix":
        return int(pid)  # no harmless liveness probe: keep it, as if running
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, under another user
    return int(pid)


def remove_stale_temps(folder: Path) -> list[str]:
    """Remove the temp files in `folder` (`<name>.part-<pid>[.json]`: downloads, their records,
    Parquet conversions) whose writing process is gone: a run killed mid-way leaves them, and
    no later run of theirs will. Files only; returns the names removed."""
    removed, freed = [], 0
    try:
        listing = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in listing:
        if not _TEMP_NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        if _writer_running(entry.name) is not None:
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # another run removed it meanwhile
        removed.append(entry.name)
        freed += size
    if removed:
        log.info("removed %s, left by runs that were killed (%d bytes freed)", ", ".join(sorted(removed)), freed)
    return removed


def purge_download(settings: Settings, dataset: TaxiDataset, month: Month, *, when_loaded: bool = False) -> PurgeReport:
    """Remove one month's download, its record, its row ids, its Parquet and their leftover temp
    files, then the month's asks; idempotent.

    With `when_loaded` (the purge-download step), only once every store the month is asked of
    holds this very download by its ledger (`stores_to_hold`, `ledger.not_holding`); else the
    files stay and one line names the stores still missing. A download without its record is
    trusted by no step: it goes regardless.

    Only entries of the taxi's download folder named after this month are touched (and the
    month's asks), and only files and symlinks (a symlink is removed, never what it points to).
    The record goes first, so no moment leaves a record vouching for a missing file.
    """
    path = local_path(settings, dataset, month)
    folder = path.parent
    what = f"{dataset.name} {month}"
    if folder.exists() and folder.resolve() != settings.download_dir.resolve() / dataset.folder:
        raise ConfigError(f"{what}: not purging, {folder} leads to {folder.resolve()}, outside the download folder")
    with _month_lock(settings, dataset, month, exclusive=True) as alone:
        if not alone:
            log.warning("%s: kept its download: a step loading it is still running (the last one purges)", what)
            return PurgeReport(dataset.taxi, str(month), str(folder), [], 0, [path.name])
        if when_loaded and (waiting := _stores_missing(settings, dataset, month, path)):
            return PurgeReport(dataset.taxi, str(month), str(folder), [], 0, [path.name], waiting)
        report = _purge(path, what, dataset.taxi, str(month))
        _clear_asks(settings, dataset, month)
        return report


def _stores_missing(settings: Settings, dataset: TaxiDataset, month: Month, path: Path) -> list[str]:
    """The stores the month is asked of that do not hold the download at `path` yet (logged in one
    line); empty when it may go: all hold it, none was asked, or no record vouches for the file."""
    stores = stores_to_hold(settings, dataset, month)
    info, _ = recorded_download(path)
    if not stores or info is None:
        return []
    missing = ledger.not_holding(settings, stores, dataset, month, info.sha256)
    what, all_of = f"{dataset.name} {month}", " and ".join(stores) + (" hold" if len(stores) > 1 else " holds")
    if not missing:
        log.info("%s: %s this download (sha256 %s…): purging it", what, all_of, info.sha256[:12])
        return []
    log.warning(
        "%s: kept its download: not yet in %s; purged once %s this very file (sha256 %s…)",
        what,
        "; ".join(f"{store} ({why})" for store, why in missing.items()),
        all_of,
        info.sha256[:12],
    )
    return list(missing)


def _clear_asks(settings: Settings, dataset: TaxiDataset, month: Month) -> None:
    """Remove the month's asks (and temps of asks whose writer died): the download they were for is gone."""
    folder, prefix = asks_folder(settings, dataset), dataset.file_name(month) + "."
    try:
        names = [e.name for e in os.scandir(folder) if e.name.startswith(prefix) and e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return
    cleared = []
    for name in sorted(names):
        if TEMP_INFIX in name and _writer_running(name) is not None:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)
            cleared.append(name.removeprefix(prefix))
    if cleared:
        log.info("%s %s: cleared its asks (%s)", dataset.name, month, ", ".join(cleared))


def _purge(path: Path, what: str, taxi: str, month: str) -> PurgeReport:
    folder = path.parent
    record, parquet, ids = record_path(path).name, parquet_path(path).name, row_ids_path(path).name
    upload_record = record_path(parquet_path(path)).name  # upload-gcs's record of the object
    prefixes = (
        path.name + TEMP_INFIX,
        parquet + TEMP_INFIX,
        ids + TEMP_INFIX,
    )  # temps: a download's, a conversion's, ids'
    names = (record, path.name, ids, parquet, upload_record)
    entries = {}
    if folder.is_dir():
        with os.scandir(folder) as listing:
            entries = {e.name: e for e in listing if e.name in names or e.name.startswith(prefixes)}
    removed, kept, freed = [], [], 0
    temps = sorted(n for n in entries if n.startswith(prefixes))
    for name in [*names, *temps]:
        entry = entries.get(name)
        if entry is None:
            continue
        if not (entry.is_file(follow_symlinks=False) or entry.is_symlink()):
            log.warning("%s: left %s alone: not a file", what, entry.path)
            continue
        if name.startswith(prefixes) and (pid := _writer_running(name)) is not None:
            log.warning("%s: kept %s: the process writing it (pid %d) is still running", what, name, pid)
            kept.append(name)
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # removed meanwhile by someone else: gone is what we want
        removed.append(name)
        freed += size
    if removed:
        log.info("%s: purged %s (%d bytes freed)", what, ", ".join(removed), freed)
    else:
        log.info("%s: nothing downloaded to purge in %s (0 bytes freed)", what, folder)
    return PurgeReport(taxi, month, str(folder), removed, freed, kept)
