"""A month's files on disk: where the download and what goes beside it live, how they are written.

Beside a download (`local_path`) lie its record (`record_path`, extract's `FileInfo`), its row
ids (`row_ids_path`) and upload-gcs's typed Parquet (`parquet_path`), all purged with it. Every
file of ours is written under a temp name first (`temp_path`: `<name>.part-<pid>`) and renamed
into place once complete. Shared by the steps and by what they call (the month-file readers,
the Parquet conversion, the ledger); nothing here imports a step.

Apart from the download, under `asks/` in the state folder, lie the month's asks (`ask_path`):
one small file per store a step has started to load the month into, which purge-download reads
and clears (`steps.extract`).
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path

from taxi_assets.config import STATE_DIR, Settings
from taxi_assets.datasets import TaxiDataset
from taxi_assets.months import Month

TEMP_INFIX = ".part-"  # temp files: `<file>.part-<pid>` and its sidecar `<file>.part-<pid>.json`


@dataclass(frozen=True)
class FileInfo:
    """A verified local month file."""

    taxi: str
    month: str
    path: str
    url: str
    bytes: int
    sha256: str
    data_lines: int
    header: list[str]
    downloaded: bool = False  # False when a valid local copy was reused
    etag: str = ""  # as the server sent it with the file (the TLC's CloudFront does)
    last_modified: str = ""

    @property
    def filename(self) -> str:
        return Path(self.path).name


def local_path(settings: Settings, dataset: TaxiDataset, month: Month) -> Path:
    return settings.download_dir / dataset.folder / dataset.file_name(month)


def asks_folder(settings: Settings, dataset: TaxiDataset) -> Path:
    """Where the asks of a taxi's months lie: `asks/<taxi folder>/` in the state folder, apart
    from the downloads (a purge reports the download's files; the asks are not the download's)."""
    return settings.state_dir / "asks" / dataset.folder


def ask_path(settings: Settings, dataset: TaxiDataset, month: Month, store: str) -> Path:
    """The ask of `store` for the month: `asks/<taxi folder>/<download name>.<store>` (see `steps.extract.ask`)."""
    return asks_folder(settings, dataset) / f"{dataset.file_name(month)}.{store}"


def _stem(download: Path) -> str:
    """`green_tripdata_2019-01` of a download, whatever its format."""
    return download.name.removesuffix(".csv.gz").removesuffix(".parquet")


def parquet_path(download: Path) -> Path:
    """Where upload-gcs writes the month as typed Parquet: beside its download, purged with it
    (`….parquet` for a .csv.gz; `….typed.parquet` for a Parquet download, which keeps its name)."""
    typed = ".parquet" if download.name.endswith(".csv.gz") else ".typed.parquet"
    return download.with_name(_stem(download) + typed)


def row_ids_path(download: Path) -> Path:
    """Where extract keeps the download's row ids: beside it, purged with it."""
    return download.with_name(_stem(download) + ".row_ids")


def record_path(path: Path) -> Path:
    """The record (`<file>.json`) vouching for a file of ours: a download's, a Parquet's upload."""
    return path.with_name(path.name + ".json")


def temp_path(path: Path) -> Path:
    """Where this process writes `path` before renaming it into place: `<name>.part-<pid>`, and
    for a record `<name>.part-<pid>.json`; the names extract's `remove_stale_temps` and purge know."""
    if path.name.endswith(".json"):
        return record_path(temp_path(path.with_name(path.name.removesuffix(".json"))))
    return path.with_name(f"{path.name}{TEMP_INFIX}{os.getpid()}")


def write_private(path: Path, text: str) -> None:
    """Write a record readable by its owner only (0600): records hold what came from the
    environment (a source URL, a bucket name), masked or not, and are nobody else's business."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as out:
        os.fchmod(fd, 0o600)  # also when the file was there already
        out.write(text)


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def no_space(exc: OSError, path: Path | None = None) -> str | None:
    """The line for a full disk or quota, None for any other OSError: the folder and file being
    written (`exc`'s, else `path`), and that nothing was kept."""
    if exc.errno not in _NO_SPACE:
        return None
    target = Path(exc.filename) if exc.filename else path
    where = f"{target.parent} (writing {target.name})" if target else "the device"
    full = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    return f"{full} on {where}; nothing was kept, the previous rows are untouched; free space or set {STATE_DIR}"


def recorded_download(csv_gz: Path) -> tuple[FileInfo | None, str]:
    """extract's record of `csv_gz` (its `<file>.json`), or None and why not. Not hashed again:
    extract has just checked the file against it. A file whose size differs from the record,
    or newer than it (extract writes the record after the file), is not vouched for."""
    try:
        info = FileInfo(**json.loads(record_path(csv_gz).read_text()))
        stat, record_stat = csv_gz.stat(), record_path(csv_gz).stat()
    except FileNotFoundError:
        return None, f"{csv_gz.name} has no extract record"
    except (OSError, ValueError, TypeError):
        return None, f"the extract record of {csv_gz.name} is unreadable"
    if stat.st_size != info.bytes or stat.st_mtime_ns > record_stat.st_mtime_ns:
        return None, f"{csv_gz.name} changed since extract recorded it"
    return info, ""
