"""Reading a month file as rows, and the row id. Shared by every load target.

`unique_row_id` is defined here and only here: the md5 (hex) of the row's fields as
published, joined by commas (for unquoted CSV: the data line without its line ending).
Postgres and BigQuery both receive ids computed by this code, so they agree exactly,
whatever each database would make of `CAST(x AS STRING)`. Exact duplicate rows share
an id; they are kept and reported, never silently dropped.
"""

from __future__ import annotations

import binascii
import csv
import hashlib
import io
import itertools
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:  # ISA-L inflates gzip ~4x faster than zlib; same API
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover
    import zlib as _zlib

from taxi_assets.datasets import TaxiDataset
from taxi_assets.errors import BadFileError

CHUNK_BYTES = 1 << 20  # compressed bytes read at a time: memory stays flat whatever the file

_md5 = hashlib.md5
_hexlify = binascii.hexlify
# An integer printed as a float (`264.0`), as a whole field: rewritten as `264`.
_INTEGER_FLOAT = re.compile(rb"(?<![^,\n])(-?\d+)\.0+(?![^,\n])")


def row_id(fields: list[str]) -> str:
    """The reference definition of `unique_row_id` for one parsed row."""
    return hashlib.md5(",".join(fields).encode()).hexdigest()


def iter_lines(path: Path) -> Iterator[tuple[list[bytes], bool]]:
    """The lines of a .csv.gz, without line endings (CRLF or LF), a list per ~1 MB block,
    each with whether the block holds a quote (then it needs a real CSV parser).

    Memory stays flat whatever the file. Raises BadFileError for a corrupt or truncated
    gzip stream (after yielding what came before: a consumer must not commit early) and for
    blank lines.
    """
    inflater = _zlib.decompressobj(wbits=31)  # gzip framing
    carry = b""
    try:
        with open(path, "rb") as raw:
            while chunk := raw.read(CHUNK_BYTES):
                data = carry + inflater.decompress(chunk)
                while inflater.unused_data:  # a multi-member gzip: start the next member
                    rest = inflater.unused_data
                    inflater = _zlib.decompressobj(wbits=31)
                    data += inflater.decompress(rest)
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                if cut:
                    yield _split(data[:cut], path)
    except _zlib.error as exc:
        raise BadFileError(f"{path.name} is not valid gzip: {exc}") from None
    if not inflater.eof:
        raise BadFileError(f"{path.name} is truncated: the gzip stream ends early")
    if carry.strip():  # a last line without a line ending
        yield _split(carry.rstrip(b"\r") + b"\n", path)


def _split(block: bytes, path: Path) -> tuple[list[bytes], bool]:
    """Whole lines of a block that ends with a line ending; CRLF and LF both accepted.

    The block's last line ending tells which one the file uses. A file that mixes them
    fails loudly later: COPY refuses a bare CR in data and a split row's missing columns.
    """
    lines = block[:-2].split(b"\r\n") if block.endswith(b"\r\n") else block[:-1].split(b"\n")
    if b"" in lines:
        raise BadFileError(f"{path.name} has a blank line; a month file never does")
    return lines, b'"' in block


def data_lines(path: Path, dataset: TaxiDataset) -> tuple[list[str], Iterator[tuple[list[bytes], bool]]]:
    """Check the file's header against `dataset`; return it and the data blocks after it."""
    blocks = iter_lines(path)
    first = next(blocks, None)
    if first is None or not first[0]:
        raise BadFileError(f"{path.name} is empty")
    lines, quoted = first
    header = next(csv.reader([lines[0].decode("utf-8-sig", errors="replace")]))
    if problem := dataset.header_problem(header):
        raise BadFileError(f"{path.name} does not have the {dataset.taxi} header: {problem}")
    return header, itertools.chain([(lines[1:], quoted)] if len(lines) > 1 else [], blocks)


@dataclass
class DuplicateCounter:
    """Counts rows whose 16-byte digest was seen before, in bounded memory.

    Digests are spilled into 256 files by first byte; each file is sorted on its own at
    the end, so memory holds one bucket (~1/256 of the month), never the whole month.
    """

    pending: list[bytes] = field(default_factory=list)
    pending_rows: int = 0
    _dir: tempfile.TemporaryDirectory | None = None

    FLUSH_ROWS = 500_000  # 8 MB of digests between flushes: memory stays flat

    def add_hex(self, hex_digests: bytes) -> None:
        """Add concatenated 32-character hex digests (what the loader already has)."""
        self.pending.append(binascii.unhexlify(hex_digests))
        self.pending_rows += len(hex_digests) // 32
        if self.pending_rows >= self.FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="taxi-digests-")
        raw = b"".join(self.pending)
        digests = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        buckets = np.frombuffer(raw, dtype=np.uint8)[::16]
        order = np.argsort(buckets, kind="stable")
        digests, buckets = digests[order], buckets[order]
        bounds = np.searchsorted(buckets, np.arange(257))
        for b in range(256):
            if bounds[b] < bounds[b + 1]:
                with open(Path(self._dir.name) / f"{b:02x}", "ab") as out:
                    out.write(digests[bounds[b] : bounds[b + 1]].tobytes())
        self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        """Drop the spilled digests (after a failed load)."""
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        self.pending, self.pending_rows = [], 0

    def duplicates(self) -> int:
        """Rows that repeat an earlier row exactly (a row seen 3 times counts 2)."""
        self._flush()
        if self._dir is None:
            return 0
        total = 0
        with self._dir:
            for bucket in sorted(Path(self._dir.name).iterdir()):
                total += _repeats(np.fromfile(bucket, dtype="<u8").reshape(-1, 2))
        self._dir = None
        return total


def _repeats(digests: np.ndarray) -> int:
    """Rows of an (n, 2) uint64 array equal to an earlier row. Sorts 8-byte keys, which is
    several times faster than sorting 16-byte ones; the rare equal halves are then compared
    in full."""
    high = np.sort(digests[:, 0])
    clashes = high[1:][high[1:] == high[:-1]]
    if not len(clashes):
        return 0
    candidates = digests[np.isin(digests[:, 0], clashes)]
    return len(candidates) - len(np.unique(candidates, axis=0))


def _quoted_rows(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Slow path for blocks with quotes: parse properly, hash the unquoted fields."""
    try:
        text = [line.decode("utf-8") for line in lines]
    except UnicodeDecodeError as exc:
        raise BadFileError(f"a line is not UTF-8 text: {exc}") from None
    if any(line.count('"') % 2 for line in text):
        raise BadFileError("a quoted field spans lines; taxi files never do this")
    ids, out = [], []
    for fields in csv.reader(text):
        ids.append(row_id(fields).encode())
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(fields)
        out.append(buf.getvalue().encode())
    return ids, out


def with_row_ids(
    blocks: Iterator[tuple[list[bytes], bool]], *, normalize_integer_floats: bool, duplicates: DuplicateCounter
) -> Iterator[tuple[bytes, int]]:
    """CSV payloads `unique_row_id,<fields>` ready for COPY, with their row counts.

    The hot loop of every load: a list comprehension of md5 per line, the rest is C.
    """
    for lines, quoted in blocks:
        if quoted:
            hashes, lines = _quoted_rows(lines)
        else:
            hashes = [_hexlify(_md5(line).digest()) for line in lines]
        if normalize_integer_floats:  # after hashing: ids describe the row as published
            lines = _INTEGER_FLOAT.sub(rb"\1", b"\n".join(lines)).split(b"\n")
        duplicates.add_hex(b"".join(hashes))
        yield b"\n".join(map(b",".join, zip(hashes, lines, strict=True))) + b"\n", len(lines)
