"""Row ids as a load sends them (`hex_ids`), the exact duplicates among a month's rows counted in
bounded memory (`DuplicateCounter`), and the rows as a text COPY would take them (`copy_rows`:
the reference the binary load is tested against, and the benchmarks' floor). The ids come from
a `monthfile.MonthFile` (which defines them, `monthfile`).
"""

from __future__ import annotations

import binascii
import hashlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from taxi_assets.monthfile import ROW_ID_BYTES, RowIds, quoted_rows
from taxi_assets.monthfile.csvgz import INTEGER_FLOAT_FIELD

if TYPE_CHECKING:
    import pyarrow as pa

_md5 = hashlib.md5
_hexlify = binascii.hexlify
_INTEGER_FLOAT = re.compile(rb"(?<![^,\n])" + INTEGER_FLOAT_FIELD.encode() + rb"(?![^,\r\n])")


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


def hex_ids(digests: bytes) -> pa.Array:
    """Concatenated 16-byte digests as an Arrow column of 32-character hex ids, built straight
    into Arrow's string layout (fixed-width offsets): the typed loads' `unique_row_id`."""
    return fixed_width(_hexlify(digests), len(digests) // ROW_ID_BYTES, 32, as_text=True)


def fixed_width(values: np.ndarray | bytes, rows: int, width: int, as_text: bool = False) -> pa.Array:
    """`rows` values of `width` bytes each, laid end to end, as a binary (or string) array, no copy."""
    import pyarrow as pa  # here: a step that counts duplicates needs no Arrow

    offsets = np.arange(0, width * rows + 1, width, dtype=np.int32)
    kind = pa.string() if as_text else pa.binary()
    return pa.Array.from_buffers(kind, rows, [None, pa.py_buffer(offsets), pa.py_buffer(values)])


def copy_rows(
    blocks: Iterator[tuple[bytes, np.ndarray, bool]],
    *,
    normalize_integer_floats: bool,
    duplicates: DuplicateCounter | None = None,
    row_ids: RowIds | None = None,
) -> Iterator[tuple[pa.Array, bytes]]:
    """The rows of `MonthFile.text_blocks` as a text COPY (CSV) takes them: each block as one
    Arrow binary array of lines (`unique_row_id,<fields>` and its line ending), with their 16-byte
    digests. The ids come from `row_ids` when given (else each line is hashed) and go to
    `duplicates` too. Not the load's path (it sends binary rows, `pgbinary`): the reference the
    tests hold the binary rows to (Postgres parsing the same lines must store the same rows),
    and the text the benchmarks' floors COPY."""
    for text, ends, quoted in blocks:
        if not (rows := len(ends)):
            continue
        eol = b"\r\n" if text.endswith(b"\r\n") else b"\n"  # a stream keeps one kind: COPY insists
        if quoted:  # rare: parsed properly, their ids computed from the parsed fields
            hashes, lines = quoted_rows(text[: -len(eol)].split(eol))
            if row_ids is not None:
                row_ids.skip(rows)
            raw, text = binascii.unhexlify(b"".join(hashes)), eol.join(lines) + eol
        elif row_ids is not None:
            raw = row_ids.take_checked(rows, text[: text.index(eol)])
        else:
            raw = b"".join([_md5(line).digest() for line in text[: -len(eol)].split(eol)])
        if quoted or normalize_integer_floats:  # the text changed: its line ends moved
            ends = None
        if normalize_integer_floats:  # after hashing: ids describe the row as published
            text = _INTEGER_FLOAT.sub(rb"\1", text)
        if duplicates is not None:
            duplicates.add(raw)
        yield _id_comma_line(raw, text, rows, ends), raw


def _id_comma_line(digests: bytes, text: bytes, rows: int, ends: np.ndarray | None) -> pa.Array:
    """`<hex id>,<line>` per row: the ids and the lines (`text`'s, each with its line ending, no
    copy) joined element-wise by Arrow. `ends`: each line's LF, if the reader found them."""
    import pyarrow as pa  # here: only a load joins rows this way
    import pyarrow.compute as pc

    if ends is None:
        ends = np.flatnonzero(np.frombuffer(text, np.uint8) == ord("\n"))
    if len(ends) != rows:  # a line ending inside a line: never from a split block
        raise ValueError(f"{len(ends)} line endings for {rows} rows")
    starts = np.zeros(rows + 1, np.int32)
    starts[1:] = ends + 1
    lines = pa.Array.from_buffers(pa.binary(), rows, [None, pa.py_buffer(starts), pa.py_buffer(text)])
    return pc.binary_join_element_wise(fixed_width(_hexlify(digests), rows, 32), lines, b",")


def payload(rows: pa.Array) -> memoryview:
    """The bytes of the binary array `rows`, end to end, without a copy."""
    if not len(rows):
        return memoryview(b"")
    offsets = np.frombuffer(rows.buffers()[1], np.int32, count=len(rows) + 1, offset=4 * rows.offset)
    return memoryview(rows.buffers()[2])[int(offsets[0]) : int(offsets[-1])]
