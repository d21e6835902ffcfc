"""upload-gcs (and the bucket half of gcp-setup): the month's Parquet in the bucket.

The object is `gs://{bucket}/{taxi}/{taxi}_tripdata_{YYYY-MM}.parquet`, uploaded resumably in
32 MB chunks (memory bounded), verified by crc32c against the local file, and not uploaded
again when the bucket already holds the same bytes. An emulator (fake-gcs-server) gets it as
one streamed request instead (`_emulator_upload`): it keeps a resumable upload's chunks in
memory, about 8 GB for a 1 GB object, and writes a streamed one to its files.

After a verified upload a record `{taxi}_tripdata_{YYYY-MM}.parquet.json` beside the download
says what went where: the download's sha256 (from extract's record, not hashed again), the
conversion (`parquet.conversion_id`), the object's URI, crc32c, md5, size and the row count. A
re-run whose download, conversion and object (one metadata GET) all still match it neither
converts nor uploads; anything else (no record, another file, another conversion, the object
missing or changed in the bucket) converts and uploads as the first run did.

The object's metadata names the download it was converted from (`DOWNLOAD_SHA256`), which
load-bigquery checks. Every path leaves it naming this download (when extract's record says
which): a re-published month whose conversion is byte-identical (the TLC only re-typed its
columns) is not uploaded again, so its metadata is patched instead, on the condition that the
object is still the one compared; a re-run finding the recorded bytes under another download's
name patches them too, without converting, instead of calling them unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import google_crc32c
import pyarrow as pa
import requests
from google.api_core import exceptions as gexc

from taxi_assets.config import Settings
from taxi_assets.datasets import TaxiDataset
from taxi_assets.errors import ConfigError, LoadError
from taxi_assets.files import parquet_path, record_path, recorded_download, temp_path, write_private
from taxi_assets.gcp import storage_client
from taxi_assets.months import Month
from taxi_assets.parquet import conversion_id, write_parquet
from taxi_assets.stores import crc32c_b64, object_name

log = logging.getLogger(__name__)
# Resumable-upload chunk (a multiple of 256 KiB), held in memory while sent: 300 MB went into
# fake-gcs-server in 13 s with 8 MiB chunks, 10 s with 16 MiB, 5.4 s with 32 MiB.
CHUNK = 32 * 1024 * 1024


@dataclass
class UploadReport:
    uri: str
    bytes: int
    crc32c: str
    rows: int
    uploaded: bool  # False: the bucket already held these exact bytes
    converted: bool = True  # False: the upload record showed the object unchanged; nothing redone

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class UploadRecord:
    """What the last verified upload of a month put in the bucket, and from what."""

    csv: str  # the download's file name
    csv_sha256: str  # as extract recorded it
    conversion: str  # parquet.conversion_id
    uri: str
    crc32c: str  # the object's, base64 as GCS reports it
    md5: str | None  # the object's md5Hash, when the store gives one
    bytes: int
    rows: int
    generation: int | None = None  # informative only: a re-upload of the same bytes changes it


def upload_record_path(csv_gz: Path) -> Path:
    """`{taxi}_tripdata_{YYYY-MM}.parquet.json`, beside the download (a record of the Parquet,
    named as every record is: see `files.record_path`)."""
    return record_path(parquet_path(csv_gz))


def _give_back_memory() -> None:
    """Return what the conversion freed to the system before the upload holds its chunks, so the
    step's peak is the larger of the two, not their sum (glibc keeps freed heap otherwise)."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def ensure_bucket(settings: Settings) -> bool:
    """Create the bucket if missing (STANDARD class: valid in every location). True if created."""
    client = storage_client(settings)
    try:
        if client.lookup_bucket(settings.gcp_bucket) is not None:
            return False
        bucket = client.bucket(settings.gcp_bucket)
        bucket.storage_class = "STANDARD"
        client.create_bucket(bucket, location=settings.gcp_location)
        log.info("created bucket gs://%s in %s", settings.gcp_bucket, settings.gcp_location)
        return True
    except gexc.Conflict:
        return False  # created meanwhile, or taken by another project: the upload will tell
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise ConfigError(f"not allowed to use bucket {settings.gcp_bucket}: {exc.message}") from None


def _missing_bucket(settings: Settings) -> ConfigError:
    return ConfigError(f"bucket {settings.gcp_bucket} does not exist; run `python -m taxi_assets gcp-setup`")


def check_bucket(settings: Settings, name: str = "", client=None) -> None:
    """Fail at once (ConfigError) if the bucket does not exist: one listing of at most one object.

    A listing, not a bucket GET: Storage Object Admin on the bucket (what upload-gcs needs)
    grants storage.objects.list but not storage.buckets.get. Without even that, the upload
    itself reports what is not allowed.
    """
    try:
        client = client or storage_client(settings)
        list(client.list_blobs(settings.gcp_bucket, prefix=name or None, max_results=1))
    except gexc.NotFound:
        raise _missing_bucket(settings) from None
    except gexc.Unauthorized as exc:
        raise ConfigError(f"not allowed to use bucket {settings.gcp_bucket}: {exc.message}") from None
    except gexc.Forbidden:
        log.debug("cannot list gs://%s; the upload will tell whether it may write", settings.gcp_bucket)


def _recorded_object(bucket, name: str, uri: str, record_file: Path, sha256: str, conversion: str):
    """(the upload record, the object, "") when the object in the bucket holds the bytes the
    recorded upload of this very download and conversion put there; else (None, None, why not).
    Unchanged only if its metadata names this download too: the caller looks."""
    try:
        record = UploadRecord(**json.loads(record_file.read_text()))
    except FileNotFoundError:
        return None, None, "no upload record"
    except (OSError, ValueError, TypeError):
        return None, None, f"the upload record {record_file.name} is unreadable"
    if record.csv_sha256 != sha256:
        why = f"the download is not the one last uploaded (sha256 {sha256[:12]}…, was {record.csv_sha256[:12]}…)"
        return None, None, why
    if record.conversion != conversion:
        return None, None, f"the Parquet conversion changed (now {conversion}, recorded {record.conversion})"
    if record.uri != uri:
        return None, None, f"the last upload went to {record.uri}"
    blob = bucket.get_blob(name)  # metadata only
    if blob is None:
        return None, None, f"{uri} is not in the bucket"
    if (blob.crc32c, blob.size) != (record.crc32c, record.bytes) or (record.md5 and blob.md5_hash != record.md5):
        why = (
            f"{uri} changed in the bucket since the upload (crc32c {blob.crc32c}, {blob.size} bytes;"
            f" recorded {record.crc32c}, {record.bytes} bytes)"
        )
        return None, None, why
    return record, blob, ""


def converted_from(blob) -> str | None:
    """The sha256 of the download the object says it was converted from, if it says."""
    return (blob.metadata or {}).get(DOWNLOAD_SHA256)


def _name_download(bucket, name: str, uri: str, compared, sha256: str):
    """Make the object's metadata name download `sha256`, without sending its bytes again (a
    PATCH); returns the object as it then is.

    Only if the object is still the one whose bytes were compared (`compared`'s generation and
    metageneration): another writer's newer object, or its newer metadata, is never relabelled.
    Refused that way (412), it is fine only if the object already is these bytes named so (our
    own retried request, or a concurrent run of this download); else LoadError.
    """
    was = converted_from(compared)
    patch = bucket.blob(name)  # no generation of its own: the live object, as the preconditions guard it
    patch.metadata = {DOWNLOAD_SHA256: sha256}  # a merge: other keys stay
    try:
        patch.patch(if_generation_match=compared.generation, if_metageneration_match=compared.metageneration)
    except (gexc.PreconditionFailed, gexc.NotFound):
        patch = bucket.get_blob(name)
        same = patch is not None and (patch.crc32c, patch.size) == (compared.crc32c, compared.size)
        if not (same and converted_from(patch) == sha256):
            raise LoadError(
                f"{uri} was changed in the bucket by another writer while upload-gcs compared it; left as it is;"
                " run upload-gcs again"
            ) from None
    log.info(
        "%s holds this download's conversion but its metadata named %s; it now names download sha256 %s…"
        " (metadata updated, bytes not sent again)",
        uri,
        f"download sha256 {was[:12]}…" if was else "no download",
        sha256[:12],
    )
    return patch


def _write_record(path: Path, record: UploadRecord) -> None:
    """Atomically: a temp file (named as extract's temp clean-up and purge-download know), then
    a rename."""
    tmp = temp_path(path)
    try:
        write_private(tmp, json.dumps(asdict(record), indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _storage_errors(settings: Settings, uri: str):
    try:
        yield
    except gexc.NotFound:
        raise _missing_bucket(settings) from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise ConfigError(f"not allowed to write {uri}: {exc.message}") from None


PARQUET_TYPE = "application/vnd.apache.parquet"
# The object's custom metadata: the sha256 of the download it was converted from, which
# load-bigquery compares with the download it was handed (a re-published month's new file).
DOWNLOAD_SHA256 = "taxi-assets-download-sha256"


class _Growing(io.RawIOBase):
    """The Parquet as `write_parquet` writes it (its temp file, then `dest`), read as a stream:
    a read waits for the bytes it asks for until the writer is done, so the resumable upload
    sends each chunk as soon as it is written. Reading fails if the writer failed."""

    def __init__(self, dest: Path, done: threading.Event, failed: threading.Event):
        self._dest, self._done, self._failed = dest, done, failed
        self._file = None
        self._position = 0
        self._crc32c = google_crc32c.Checksum()  # of every byte read, in order: the file's, unless a seek
        self._seeked = False

    def crc32c(self) -> str | None:
        """crc32c of the whole file as GCS reports it, if it was read once from start to end."""
        return None if self._seeked else base64.b64encode(self._crc32c.digest()).decode()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # the upload seeks back to resend a chunk that failed
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        self._open().seek(offset)
        self._seeked |= offset != self._position
        self._position = offset
        return offset

    def _open(self):
        while self._file is None:
            # The temp file being written; the published name only once the writer is done (the
            # rename may have come first), never before: it could be an older conversion's.
            for path in (temp_path(self._dest), *([self._dest] if self._done.is_set() else [])):
                with contextlib.suppress(FileNotFoundError):
                    self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
                    break
            else:
                self._wait()
        return self._file

    def _wait(self) -> None:
        if self._failed.is_set():
            raise LoadError("the conversion failed; the upload is abandoned (no object is made)")
        if self._done.is_set() and self._file is None:
            raise LoadError(f"{self._dest.name} vanished before it was uploaded")
        time.sleep(0.01)

    def read(self, size: int = -1) -> bytes:
        """`size` bytes (all that is left when the writer is done and fewer remain), in one read:
        a chunk is one allocation, not pieces joined."""
        handle = self._open()
        while True:
            done = self._done.is_set()  # before looking: what is there after it is complete
            available = os.fstat(handle.fileno()).st_size - self._position
            if done or (size >= 0 and available >= size):
                chunk = handle.read(available if size < 0 else min(size, available))
                self._position += len(chunk)
                self._crc32c.update(chunk)
                return chunk
            self._wait()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


# How long the emulator may take to answer the last piece of a streamed upload: it writes the
# whole object to its files before it answers.
EMULATOR_ANSWER = 600.0


def _pieces(stream) -> Iterator[bytes]:
    """The stream in CHUNK-sized reads, to its end: a request body sent as it is read."""
    while piece := stream.read(CHUNK):
        yield piece


def _emulator_upload(settings: Settings, bucket, name: str, uri: str, stream, sha256: str | None):
    """Put `stream` into the emulator's bucket as object `name` (metadata naming download
    `sha256`), in one streamed request (uploadType=media; chunked transfer, CHUNK at a time);
    returns the object as it then is.

    fake-gcs-server keeps every chunk of a resumable upload in memory until the last one, then
    checksums, copies and reads the whole object back: about 8 GB for a 1 GB object. A simple
    upload it streams into its filesystem backend, which holds the object once while writing it
    (in a buffer that doubles: 1.5x the power of two above its size at the peak).
    The metadata goes as `x-goog-meta-*` headers (fake-gcs-server keeps them with the object in the
    same write); an emulator that drops them gets it in a PATCH after. A stream that fails (the
    conversion failed) breaks the request off before its end: the emulator makes no object.
    """
    endpoint = settings.storage_emulator.rstrip("/")
    headers = {"Content-Type": PARQUET_TYPE, **({f"x-goog-meta-{DOWNLOAD_SHA256}": sha256} if sha256 else {})}
    try:
        with requests.Session() as session:
            answer = session.post(
                f"{endpoint}/upload/storage/v1/b/{settings.gcp_bucket}/o",
                params={"uploadType": "media", "name": name},
                data=_pieces(stream),
                headers=headers,
                timeout=(30, EMULATOR_ANSWER),
            )
    except requests.RequestException as exc:
        raise LoadError(f"the GCS emulator at {endpoint} did not take {uri} ({type(exc).__name__})") from None
    if answer.status_code == 404:
        raise _missing_bucket(settings)
    if not answer.ok:
        said = " ".join(answer.text.split())[:200]
        raise LoadError(f"the GCS emulator at {endpoint} refused {uri}: HTTP {answer.status_code} {said}")
    with _storage_errors(settings, uri):
        blob = bucket.get_blob(name)
    if blob is None:
        raise LoadError(f"{uri} is not in the emulator's bucket after its upload")
    if sha256 and converted_from(blob) != sha256:  # the emulator dropped the metadata headers
        with _storage_errors(settings, uri):
            blob = _name_download(bucket, name, uri, blob, sha256)
    return blob


def _upload(
    settings: Settings, bucket, name: str, uri: str, stream, sha256: str | None, *, resumable: bool | None = None
):
    """Put `stream` into the bucket as object `name` (metadata naming download `sha256`); return
    the object as uploaded (its crc32c and size from the upload's last answer). Google Cloud gets
    a resumable upload, CHUNK at a time (memory bounded); an emulator one streamed request
    (`_emulator_upload`). `resumable` overrides that choice (the tests send both to the emulator)."""
    if resumable is None:
        resumable = not settings.storage_emulator
    if not resumable:
        return _emulator_upload(settings, bucket, name, uri, stream, sha256)
    blob = bucket.blob(name, chunk_size=CHUNK)
    blob.metadata = {DOWNLOAD_SHA256: sha256} if sha256 else None
    blob.upload_from_file(stream, content_type=PARQUET_TYPE, checksum="crc32c")
    return blob


def _convert_and_upload(
    csv_gz: Path,
    parquet: Path,
    dataset: TaxiDataset,
    month: Month,
    bucket,
    name: str,
    sha256: str | None,
    settings,
    uri,
) -> tuple[int, str, object]:
    """Convert and upload at once: the upload (`_upload`) follows the Parquet as it is written, so
    the network (or the emulator) works while the conversion does. A failed conversion abandons
    the upload before its end: no object is made. Returns the rows, the local file's crc32c
    (computed on the way, unless the upload had to re-read) and the object as uploaded."""
    done, failed = threading.Event(), threading.Event()
    stream = _Growing(parquet, done, failed)
    uploaded = []

    def upload() -> None:
        with stream, _storage_errors(settings, uri):
            uploaded.append(_upload(settings, bucket, name, uri, stream, sha256))

    with ThreadPoolExecutor(max_workers=1) as background:
        sending = background.submit(upload)
        try:
            rows = write_parquet(csv_gz, parquet, dataset, month)
        except BaseException:
            failed.set()
            with contextlib.suppress(Exception):
                sending.result()
            raise
        done.set()
        sending.result()
    return rows, stream.crc32c() or crc32c_b64(parquet), uploaded[0]


def upload_gcs(settings: Settings, dataset: TaxiDataset, month: Month, csv_gz: Path) -> UploadReport:
    """Convert the verified month file to Parquet (cached beside it) and put it in the bucket,
    unless the upload record shows the bucket already holds this download's conversion.

    The bucket is checked first: a missing bucket fails before the conversion (15 s for a
    yellow month), not after it.
    """
    name, client = object_name(dataset, month), storage_client(settings)
    check_bucket(settings, name, client)
    uri, what = f"gs://{settings.gcp_bucket}/{name}", f"{dataset.name} {month}"
    record_file, conversion = upload_record_path(csv_gz), conversion_id(dataset)
    bucket = client.bucket(settings.gcp_bucket)
    info, why = recorded_download(csv_gz)
    sha256 = info.sha256 if info else None
    if sha256:
        with _storage_errors(settings, uri):
            record, blob, why = _recorded_object(bucket, name, uri, record_file, sha256, conversion)
        if record and converted_from(blob) != sha256:  # these bytes, named after another download
            with _storage_errors(settings, uri):
                blob = _name_download(bucket, name, uri, blob, sha256)
            _write_record(record_file, replace(record, generation=blob.generation))
            return UploadReport(uri, record.bytes, record.crc32c, record.rows, uploaded=False, converted=False)
        if record:
            log.info(
                "%s: %s is unchanged since its upload (download sha256 %s…, conversion %s, crc32c %s, %d bytes);"
                " not converting or uploading",
                what,
                uri,
                sha256[:12],
                conversion,
                record.crc32c,
                record.bytes,
            )
            return UploadReport(uri, record.bytes, record.crc32c, record.rows, uploaded=False, converted=False)
    log.info("%s: converting to Parquet: %s", what, why)
    parquet = parquet_path(csv_gz)
    with _storage_errors(settings, uri):
        blob = bucket.get_blob(name)
    if blob is None:  # the usual first run: upload while converting
        parquet.unlink(missing_ok=True)  # an older conversion's: the stream must never read it
        uploaded = True
        rows, local_crc, blob = _convert_and_upload(
            csv_gz, parquet, dataset, month, bucket, name, sha256, settings, uri
        )
        size = parquet.stat().st_size  # the blob's crc32c and size: from the upload's last response
    else:  # an object is there: convert, then send only if its bytes differ
        rows = write_parquet(csv_gz, parquet, dataset, month)
        _give_back_memory()
        local_crc, size = crc32c_b64(parquet), parquet.stat().st_size
        uploaded = not (blob.crc32c == local_crc and blob.size == size)
        if not uploaded:
            log.info("%s already holds these bytes; not uploading again", uri)
            if sha256 and converted_from(blob) != sha256:  # e.g. a re-published month, only re-typed
                with _storage_errors(settings, uri):
                    blob = _name_download(bucket, name, uri, blob, sha256)
        else:
            with _storage_errors(settings, uri), open(parquet, "rb") as local:
                blob = _upload(settings, bucket, name, uri, local, sha256)
    if blob.crc32c != local_crc or blob.size != size:
        raise LoadError(f"{uri} does not match the local file after upload (crc32c {blob.crc32c} vs {local_crc})")
    if sha256:
        record = UploadRecord(
            csv_gz.name, sha256, conversion, uri, local_crc, blob.md5_hash, size, rows, blob.generation
        )
        _write_record(record_file, record)
    if uploaded:
        log.info("uploaded %s (%d bytes, %d rows)", uri, size, rows)
    return UploadReport(uri, size, local_crc, rows, uploaded=uploaded)
