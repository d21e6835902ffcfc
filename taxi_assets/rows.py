"""Reading a month file as rows, and the row id. Shared by every load target.

`unique_row_id` is defined here and only here: the md5 (hex) of the row's fields as
published, joined by commas (for unquoted CSV: the data line without its line ending). A
Parquet row's fields are its canonical line (`tlc.csv_lines`), hashed as it is.
Postgres and BigQuery both receive ids computed by this code, so they agree exactly,
whatever each database would make of `CAST(x AS STRING)`. Exact duplicate rows share
an id; they are kept and reported, never silently dropped.

A file's ids are computed once, by extract while it verifies the download, and kept beside it
as a row-id file (`write_row_ids`): the 32-byte sha256 of the .csv.gz they belong to, then the
16-byte digest of each row in file order. load-postgres and upload-gcs read them from there
(`RowIds`) instead of hashing every line again.
"""

from __future__ import annotations

import binascii
import csv
import hashlib
import io
import itertools
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

try:  # ISA-L inflates gzip ~4x faster than zlib; same API
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover
    import zlib as _zlib

from taxi_assets.datasets import WRONG_MONTH_SHARE, TaxiDataset
from taxi_assets.errors import BadFileError
from taxi_assets.months import Month

# Compressed bytes read at a time (~600 KB of lines): memory stays flat whatever the file, and
# blocks this small are reused from the heap while hot in cache (1 MB ones cost 4x the page
# faults, and a load 1-2 s, in glibc's mmap'd blocks).
CHUNK_BYTES = 128 << 10

_md5 = hashlib.md5
_hexlify = binascii.hexlify
# An integer printed as a float (`264.0`), as a whole field: rewritten as `264` (group 1) by the
# Postgres load here and by the Parquet conversion (`parquet.py`), so both store the same value.
INTEGER_FLOAT_FIELD = r"(-?\d+)\.0+"
_INTEGER_FLOAT = re.compile(rb"(?<![^,\n])" + INTEGER_FLOAT_FIELD.encode() + rb"(?![^,\n])")


def row_id(fields: list[str]) -> str:
    """The reference definition of `unique_row_id` for one parsed row."""
    return hashlib.md5(",".join(fields).encode()).hexdigest()


ROW_ID_BYTES = 16  # an md5 digest; hex in the tables (32 characters)
_KEY_BYTES = 32  # the row-id file's header: the sha256 of the .csv.gz it belongs to


def block_digests(lines: list[bytes], quoted: bool) -> bytes:
    """The row ids of one block of lines, as concatenated 16-byte digests."""
    if quoted:
        return binascii.unhexlify(b"".join(_quoted_rows(lines)[0]))
    return b"".join([_md5(line).digest() for line in lines])


def row_ids_key(sha256: str, dataset: TaxiDataset) -> str:
    """What a row-id file is keyed by: the download's sha256, and for a Parquet source also how
    its rows are rendered (`tlc.rendering_id`), so that ids made by other rules are not reused."""
    if dataset.source.format != "parquet":
        return sha256
    from taxi_assets import tlc

    return hashlib.sha256(f"{sha256}:{tlc.rendering_id(dataset)}".encode()).hexdigest()


def write_row_ids(blocks: Iterator[tuple[list[bytes], bool]], out: BinaryIO, sha256: str) -> int:
    """Write a row-id file for the .csv.gz whose sha256 is given, from its data blocks (as
    `data_lines` yields them); return the row count."""
    out.write(bytes.fromhex(sha256))
    rows = 0
    for lines, quoted in blocks:
        out.write(block_digests(lines, quoted))
        rows += len(lines)
    return rows


class RowIds:
    """A file's row ids read from its row-id file, block by block, in step with its lines.

    `open` vouches for the file as a whole: the header names the very download (sha256) and the
    size holds exactly `rows` digests. `take` then checks each block's first row against its
    line (one md5 per block), so ids can never drift out of step with the rows they describe.
    """

    def __init__(self, handle: BinaryIO, name: str, path: Path | None = None):
        self._handle, self._name, self._path = handle, name, path

    @classmethod
    def open(cls, path: Path, sha256: str, rows: int) -> RowIds | None:
        """The row ids in `path` if it is the row-id file of the download `sha256` with `rows`
        rows; None if it is missing or is not."""
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            return None
        if os.fstat(handle.fileno()).st_size != _KEY_BYTES + rows * ROW_ID_BYTES or handle.read(
            _KEY_BYTES
        ) != bytes.fromhex(sha256):
            handle.close()
            return None
        return cls(handle, path.name, path)

    @classmethod
    def compute(cls, path: Path, dataset: TaxiDataset) -> RowIds:
        """The row ids of a file extract has not recorded, hashed now into a nameless temp file."""
        handle = tempfile.TemporaryFile(prefix="taxi-row-ids-", dir=path.parent)  # noqa: SIM115 (closed by close())
        try:
            _, blocks = read_blocks(path, dataset)
            write_row_ids(blocks, handle, "00" * _KEY_BYTES)
            handle.seek(_KEY_BYTES)
        except BaseException:
            handle.close()
            raise
        return cls(handle, path.name)

    def read(self, rows: int) -> bytes:
        """The digests of the next `rows` rows."""
        raw = self._handle.read(rows * ROW_ID_BYTES)
        if len(raw) != rows * ROW_ID_BYTES:
            raise BadFileError(f"{self._name} has fewer row ids than its file has rows; run extract again")
        return raw

    def at_end(self) -> bool:
        return not self._handle.read(1)

    def take(self, lines: list[bytes]) -> bytes:
        """The digests of the next `len(lines)` rows (unquoted lines: the quoted are hashed)."""
        return self.take_checked(len(lines), lines[0] if lines else None)

    def take_checked(self, rows: int, first_line: bytes | None) -> bytes:
        """The digests of the next `rows` rows, the first checked against its line."""
        raw = self.read(rows)
        if first_line is not None and raw[:ROW_ID_BYTES] != _md5(first_line).digest():
            if self._path is not None:  # so that the next extract computes it again
                self._path.unlink(missing_ok=True)
            raise BadFileError(f"{self._name} does not match the rows of its file; removed, the next run recomputes it")
        return raw

    def skip(self, rows: int) -> None:
        self._handle.seek(rows * ROW_ID_BYTES, os.SEEK_CUR)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RowIds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_MONTH_IN_NAME = re.compile(r"_(\d{4}-\d{2})\.")
_MONTH_KEY = re.compile(rb"\d{4}-\d{2}")
# A .csv.gz's pickups are read from one line in this many (each block's 1st, 65th, ...): some
# 120,000 of a 7.7 M-row month, plenty to tell a file mostly of another month, for ~1 % of
# extract's verification; parsing every line's pickup in Python would add a third to it.
PICKUP_SAMPLE_EVERY = 64


def month_of(name: str) -> Month:
    """The month in a published file name (`fhvhv_tripdata_2024-01.parquet`)."""
    found = _MONTH_IN_NAME.search(name)
    if not found:
        raise BadFileError(f"{name} is not named like a month file (<taxi>_tripdata_YYYY-MM.<format>)")
    return Month.parse(found[1])


class PickupMonths:
    """Where a month file's pickups lie, tallied while extract reads it: the rows looked at, and
    those outside `month` by their own month (`YYYY-MM`; a NULL or unreadable pickup is no month).
    A Parquet's every row is counted (`tlc.read_blocks`, with Arrow); a .csv.gz's lines are
    sampled (`PICKUP_SAMPLE_EVERY`; a small block whole)."""

    def __init__(self, dataset: TaxiDataset, month: Month):
        self.month, self.sampled = month, dataset.source.format != "parquet"
        self.rows = 0
        self.outside: Counter[str] = Counter()
        self._field, self._key = dataset.pickup_index, str(month).encode()

    def add(self, rows: int, outside: dict[str, int]) -> None:
        self.rows += rows
        self.outside.update(outside)

    def add_lines(self, lines: list[bytes]) -> None:
        """Sample a block of CSV lines: its pickups' first 7 bytes are the month (quoted or not)."""
        # A small block (a tiny file, a file's tail) is read whole: a sample of a few lines could
        # be all strays by chance. A sampled line stands for `every` rows, so blocks read whole and
        # sampled weigh alike.
        every = PICKUP_SAMPLE_EVERY if len(lines) >= PICKUP_SAMPLE_EVERY**2 else 1
        sample, field, key = lines[::every], self._field, self._key
        for line in sample:
            fields = line.split(b",", field + 1)
            if len(fields) > field:
                month = fields[field].lstrip(b'"')[:7]
                if month != key and _MONTH_KEY.fullmatch(month):
                    self.outside[month.decode()] += every
        self.rows += len(sample) * every

    def watch(self, blocks: Iterator[tuple[list[bytes], bool]]) -> Iterator[tuple[list[bytes], bool]]:
        """`blocks`, unchanged, each sampled on its way (`add_lines`)."""
        for block in blocks:
            self.add_lines(block[0])
            yield block

    def refusal(self) -> str | None:
        """Why the file is refused (more than `WRONG_MONTH_SHARE` of its pickups lie outside its
        month, named with the months they lie in), or None."""
        outside = self.outside.total()
        if outside <= self.rows * WRONG_MONTH_SHARE:
            return None
        where = ", ".join(f"{m} ({n:,})" for m, n in self.outside.most_common(3))
        if len(self.outside) > 3:
            where += f" and {len(self.outside) - 3} other months"
        share = f"{outside / self.rows:.0%}" + (
            f"; one line in {PICKUP_SAMPLE_EVERY} of large blocks" if self.sampled else ""
        )
        looked = "pickups by sample" if self.sampled else "pickups"
        about = "about " if self.sampled else ""
        return f"{about}{outside:,} of {self.rows:,} {looked} ({share}) lie outside {self.month}, in {where}: another month's trips"


# A value Postgres' `double precision` takes but BigQuery's NUMERIC cannot (case-insensitive, as
# both parse it): NaN, Infinity. Each spelling holds an `a` or an `f`, which a taxi CSV's digits,
# times and Y/N flags never do: a block without one (all of them, in a real month) is not parsed.
_NON_FINITE = re.compile(rb"\s*([+-]?)(?:(nan)(?:\([0-9a-z_]*\))?|inf(?:inity)?)\s*", re.IGNORECASE)
_NON_FINITE_LETTERS = (b"a", b"A", b"f", b"F")


class FiniteAmounts:
    """Refuses a .csv.gz at its first amount (a NUMERIC column) that is not a finite number,
    naming the column and line: loaded, it would split the stores (Postgres keeps NaN, BigQuery's
    NUMERIC refuses it). Given each block's raw bytes (`iter_lines`), it searches them for
    `_NON_FINITE_LETTERS` (C speed, no join) and parses only a block holding one: the header's."""

    def __init__(self, dataset: TaxiDataset, name: str):
        self._columns = [(i, c.name) for i, c in enumerate(dataset.columns) if c.bq_type == "NUMERIC"]
        self._name, self._lines = name, 0  # lines before the block: the header is line 1

    def check(self, block: bytes, lines: list[bytes], quoted: bool) -> None:
        if self._columns and any(letter in block for letter in _NON_FINITE_LETTERS):
            for number, line in enumerate(lines, self._lines + 1):
                if quoted:
                    fields = [f.encode() for f in next(csv.reader([line.decode("utf-8", errors="replace")]), [])]
                else:
                    fields = line.split(b",")
                for i, column in self._columns:
                    if i < len(fields) and (found := _NON_FINITE.fullmatch(fields[i])):
                        value = "NaN" if found[2] else "-Infinity" if found[1] == b"-" else "Infinity"
                        raise BadFileError(
                            f"{self._name}: {column} is {value} at line {number:,} (amounts must be finite numbers)"
                        )
        self._lines += len(lines)


def iter_lines(
    path: Path, name: str | None = None, amounts: FiniteAmounts | None = None
) -> Iterator[tuple[list[bytes], bool]]:
    """The lines of a .csv.gz, without line endings (CRLF or LF), a list per ~1 MB block,
    each with whether the block holds a quote (then it needs a real CSV parser).

    Memory stays flat whatever the file. Blank lines at the end of the file (an editor's or a
    tool's trailing newline) are dropped: they are no rows. With `amounts`, every block (the
    header's too) is checked by it before it is yielded. Raises BadFileError, naming the
    file `name` (default: the path's), for a corrupt or truncated gzip stream (after yielding
    what came before: a consumer must not commit early) and for a blank line before a row.
    """
    name = name or path.name
    inflater = _zlib.decompressobj(wbits=31)  # gzip framing
    carry = b""
    blank_before = False  # blank lines were held back: fine at the end of the file, not before a row
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
                    block, blank_tail = _hold_back_blank_tail(data[:cut])
                    if block:
                        if blank_before:
                            raise BadFileError(_blank_line(name))
                        yield _checked(block, name, amounts)
                    blank_before = blank_tail
    except _zlib.error as exc:
        raise BadFileError(f"{name} is not valid gzip: {exc}") from None
    if not inflater.eof:
        raise BadFileError(f"{name} is truncated: the gzip stream ends early")
    if carry.strip():  # a last line without a line ending
        if blank_before:
            raise BadFileError(_blank_line(name))
        yield _checked(carry.rstrip(b"\r") + b"\n", name, amounts)


def _checked(block: bytes, name: str, amounts: FiniteAmounts | None) -> tuple[list[bytes], bool]:
    lines, quoted = _split(block, name)
    if amounts is not None:
        amounts.check(block, lines, quoted)
    return lines, quoted


def _blank_line(name: str) -> str:
    return f"{name} has a blank line before a row; a month file never does (blank lines at its end are ignored)"


def _hold_back_blank_tail(block: bytes) -> tuple[bytes, bool]:
    """Split whole lines into those up to the last non-blank one (with its line ending) and
    whether blank lines (CRLF or LF) followed it. Only the file's end may have those."""
    end = len(block.rstrip(b"\r\n"))
    if not end:
        return b"", True
    keep = block.index(b"\n", end) + 1
    return (block, False) if keep == len(block) else (block[:keep], True)


def _split(block: bytes, name: str) -> tuple[list[bytes], bool]:
    """Whole lines of a block that ends with a line ending; CRLF and LF both accepted.

    The block's last line ending tells which one the file uses. A bare LF among CRLF lines
    (a blank LF line included) is refused here; a CR left at the end of LF-split lines fails
    loudly later: COPY refuses a bare CR in data.
    """
    if block.endswith(b"\r\n"):
        lines = block[:-2].split(b"\r\n")
        if b"" in lines or block.count(b"\n") != len(lines):  # a blank line, or an LF that is no CRLF
            if b"" in lines or block.startswith(b"\n") or b"\n\n" in block or b"\n\r\n" in block:
                raise BadFileError(_blank_line(name))
            raise BadFileError(f"{name} mixes CRLF and LF line endings; a month file never does")
    else:
        lines = block[:-1].split(b"\n")
        if b"" in lines or b"\r" in lines:  # an LF or a CRLF blank line
            raise BadFileError(_blank_line(name))
    return lines, b'"' in block


def data_lines(
    path: Path, dataset: TaxiDataset, name: str | None = None, *, check_amounts: bool = False
) -> tuple[list[str], Iterator[tuple[list[bytes], bool]]]:
    """Check the file's header against `dataset`; return it and the data blocks after it (with
    `check_amounts`, checked by `FiniteAmounts` as they are read). Errors name the file `name`
    (default: the path's; a temp file passes its published name)."""
    name = name or path.name
    blocks = iter_lines(path, name, FiniteAmounts(dataset, name) if check_amounts else None)
    first = next(blocks, None)
    if first is None or not first[0]:
        raise BadFileError(f"{name} is empty")
    lines, quoted = first
    header = next(csv.reader([lines[0].decode("utf-8-sig", errors="replace")]))
    if problem := dataset.header_problem(header):
        raise BadFileError(f"{name} does not have the {dataset.taxi} header: {problem}")
    return header, itertools.chain([(lines[1:], quoted)] if len(lines) > 1 else [], blocks)


def read_blocks(
    path: Path,
    dataset: TaxiDataset,
    name: str | None = None,
    *,
    pickups: PickupMonths | None = None,
    check_amounts: bool = False,
) -> tuple[list[str], Iterator[tuple[list[bytes], bool]]]:
    """A month file's column names and its rows as blocks of lines, whatever the source's
    format: a .csv.gz's own lines (`data_lines`), a Parquet's canonical lines (`tlc.read_blocks`).
    With `pickups`, the rows' pickup months are tallied into it as the blocks are read. With
    `check_amounts`, a .csv.gz's amounts must be finite (`FiniteAmounts`); a Parquet's always
    must (`tlc._cast`)."""
    if dataset.source.format == "parquet":
        from taxi_assets import tlc  # pyarrow: only where a Parquet is read (30 MB of RSS otherwise)

        return tlc.read_blocks(path, dataset, name, pickups=pickups)
    header, blocks = data_lines(path, dataset, name, check_amounts=check_amounts)
    return header, blocks if pickups is None else pickups.watch(blocks)


@dataclass
class DuplicateCounter:
    """Counts rows whose 16-byte digest was seen before, in bounded memory.

    Every 500,000 rows the pending digests are sorted by first byte (256 buckets) and appended
    as one run to a spill file; at the end each bucket is read back from every run and counted
    on its own, so memory holds one bucket (~1/256 of the month), never the whole month.

    The spill file (16 MB per million rows) is created in `spill_dir` (the load passes the
    month file's folder: under the state folder) and has no name: it is unlinked at once
    (O_TMPFILE where the filesystem has it), so the system reclaims it however the process
    ends, SIGKILL included. A killed load leaves nothing behind to clean up.
    """

    spill_dir: Path | None = None  # None: the system's temp folder (still nameless)
    pending: list[bytes] = field(default_factory=list)
    pending_rows: int = 0
    _spill: BinaryIO | None = None
    _runs: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (first row, 257 bucket bounds)
    _spilled_rows: int = 0

    FLUSH_ROWS = 500_000  # 8 MB of digests between flushes: memory stays flat

    def add(self, digests: bytes) -> None:
        """Add concatenated 16-byte digests."""
        self.pending.append(digests)
        self.pending_rows += len(digests) // ROW_ID_BYTES
        if self.pending_rows >= self.FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="taxi-digests-", dir=self.spill_dir)  # noqa: SIM115 (closed by close())
        raw = b"".join(self.pending)
        digests = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        buckets = np.frombuffer(raw, dtype=np.uint8)[::16]
        order = np.argsort(buckets, kind="stable")
        self._spill.write(digests[order].tobytes())
        self._runs.append((self._spilled_rows, np.searchsorted(buckets[order], np.arange(257))))
        self._spilled_rows += len(digests)
        self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        """Drop the digests (after a failed load, or once counted)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self._runs, self._spilled_rows = [], 0
        self.pending, self.pending_rows = [], 0

    def duplicates(self) -> int:
        """Rows that repeat an earlier row exactly (a row seen 3 times counts 2)."""
        if self._spill is None:  # it all fits in one run: no disk
            total = _repeats(np.frombuffer(b"".join(self.pending), dtype="<u8").reshape(-1, 2))
            self.close()
            return total
        self._flush()
        spill, total = self._spill, 0
        try:
            spill.flush()
            for b in range(256):
                parts = []
                for first, bounds in self._runs:
                    lo, hi = int(bounds[b]), int(bounds[b + 1])
                    if lo < hi:
                        spill.seek((first + lo) * 16)
                        parts.append(spill.read((hi - lo) * 16))
                if parts:
                    total += _repeats(np.frombuffer(b"".join(parts), dtype="<u8").reshape(-1, 2))
        finally:
            self.close()
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


def rows_with_ids(
    blocks: Iterator[tuple[list[bytes], bool]],
    *,
    normalize_integer_floats: bool,
    duplicates: DuplicateCounter | None = None,
    row_ids: RowIds | None = None,
) -> Iterator[list[bytes]]:
    """Each block's rows as CSV `unique_row_id,<fields>` (no line ending); the row ids come from
    `row_ids` when given (else each line is hashed) and go to `duplicates` too.

    The hot loop of every load: the rest is C.
    """
    for lines, quoted in blocks:
        if quoted:  # rare: parsed properly, their ids computed from the parsed fields
            hashes, lines = _quoted_rows(lines)
            if row_ids is not None:
                row_ids.skip(len(lines))
            raw = None
        elif row_ids is not None:
            raw = row_ids.take(lines)
            hexed = _hexlify(raw)
            hashes = [hexed[i : i + 32] for i in range(0, len(hexed), 32)]
        else:
            hashes, raw = [_hexlify(_md5(line).digest()) for line in lines], None
        if normalize_integer_floats:  # after hashing: ids describe the row as published
            lines = _INTEGER_FLOAT.sub(rb"\1", b"\n".join(lines)).split(b"\n")
        if duplicates is not None:
            duplicates.add(raw if raw is not None else binascii.unhexlify(b"".join(hashes)))
        yield list(map(b",".join, zip(hashes, lines, strict=True)))
