"""Month files read as rows: one reader per format, one way in (`open_month_file`).

A month file is the mirror's .csv.gz (`csvgz.CsvGzFile`: its own lines) or the TLC's Parquet
(`tlcparquet.TlcParquetFile`: its canonical lines). Either way a `MonthFile` gives the verified
rows as blocks of lines (`read`), as Arrow batches for the Parquet conversion (`arrow_batches`),
its verification as extract does it (`verify`: the header or columns, every row, amounts, the
pickups' month) and its row ids (`recorded_row_ids`, `row_ids`). The steps read files through it
and never ask a file's format; `reader` is the one place that does.

The row id (`unique_row_id`) is defined here and only here: the md5 (hex) of the row's fields
as published, joined by commas (for unquoted CSV: the data line without its line ending). A
Parquet row's fields are its canonical line (`tlcparquet.csv_lines`), hashed as it is.
Postgres and BigQuery both receive ids computed by this code, so they agree exactly, whatever
each database would make of `CAST(x AS STRING)`. Exact duplicate rows share an id; they are
kept and reported, never silently dropped.

A file's ids are computed once, by extract while it verifies the download (`MonthFile.verify`),
and kept beside it as a row-id file (`write_row_ids`): the 32-byte key of the download they
belong to (`row_ids_key`), then the 16-byte digest of each row in file order. load-postgres and
upload-gcs read them from there (`RowIds`) instead of hashing every line again.

pyarrow is imported only where a Parquet is read (30 MB of RSS otherwise).
"""

from __future__ import annotations

import binascii
import contextlib
import csv
import hashlib
import io
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from taxi_assets.datasets import ROW_ID_COLUMN, WRONG_MONTH_SHARE, TaxiDataset
from taxi_assets.errors import BadFileError
from taxi_assets.files import recorded_download, row_ids_path, temp_path
from taxi_assets.months import Month

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = [
    "PICKUP_SAMPLE_EVERY",
    "ROW_ID_BYTES",
    "Block",
    "MonthFile",
    "PickupMonths",
    "RowIds",
    "TextLines",
    "block_digests",
    "hashed_ahead",
    "month_of",
    "open_month_file",
    "quoted_rows",
    "reader",
    "rendering_id",
    "row_id",
    "row_ids_key",
    "write_row_ids",
]

# The row id.

_md5 = hashlib.md5
ROW_ID_BYTES = 16  # an md5 digest; hex in the tables (32 characters)
KEY_BYTES = 32  # the row-id file's header: the sha256 of the download it belongs to


def row_id(fields: list[str]) -> str:
    """The reference definition of `unique_row_id` for one parsed row."""
    return hashlib.md5(",".join(fields).encode()).hexdigest()


def quoted_rows(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Slow path for blocks with quotes: parse properly, hash the unquoted fields. Returns the
    hex ids and the lines as the fields rewritten (quoted only where CSV needs it)."""
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


class TextLines(Sequence[bytes]):
    """A block's lines kept as the one text they came in (`text`, bytes-like; line `i` is
    `text[starts[i]:ends[i]]`, without its line ending): counted and hashed whole (`digests`,
    once), without a bytes object per line; a line becomes one only when it is asked for.
    Compared as the list of its lines."""

    def __init__(self, text: bytes | memoryview, starts: np.ndarray, ends: np.ndarray):
        self.text, self.starts, self.ends = text, starts, ends
        self._digests: bytes | None = None

    @classmethod
    def of(cls, text: bytes | memoryview, lfs: np.ndarray, *, crlf: bool = False) -> TextLines:
        """The lines of `text`, each ended by an LF at its offset in `lfs` (a CR before it, `crlf`)."""
        import numpy as np

        starts = np.empty(len(lfs), np.int64)
        starts[:1] = 0
        starts[1:] = lfs[:-1] + 1
        return cls(text, starts, lfs - 1 if crlf else lfs)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index):
        if isinstance(index, slice):
            if index.step in (None, 1):  # the same text, fewer lines (their digests made again)
                return TextLines(self.text, self.starts[index], self.ends[index])
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # negative indices; IndexError past the end
        return bytes(memoryview(self.text)[int(self.starts[index]) : int(self.ends[index])])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TextLines | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # a sequence compared by content

    def digests(self) -> bytes:
        """Each line's md5, concatenated (`md5lines`: compiled, the GIL released)."""
        if self._digests is None:
            from taxi_assets.md5lines import digests  # numba: only where lines are hashed

            self._digests = digests(self.text, self.starts, self.ends)
        return self._digests


def block_digests(lines: list[bytes] | TextLines, quoted: bool) -> bytes:
    """The row ids of one block of lines, as concatenated 16-byte digests."""
    if quoted:
        return binascii.unhexlify(b"".join(quoted_rows(list(lines))[0]))
    if isinstance(lines, TextLines):
        return lines.digests()
    return b"".join([_md5(line).digest() for line in lines])


def row_ids_key(sha256: str, rendering: str | None) -> str:
    """What a row-id file is keyed by: the download's sha256, and where rows are rendered into
    lines (a Parquet source: `rendering`, its reader's `rendering_id`) also how, so that ids
    made by other rules are not reused."""
    if rendering is None:
        return sha256
    return hashlib.sha256(f"{sha256}:{rendering}".encode()).hexdigest()


def write_row_ids(blocks: Iterator[Block], out: BinaryIO, key: str) -> int:
    """Write a row-id file keyed by `key` (`row_ids_key`) from a file's data blocks (as
    `MonthFile.read` yields them); return the row count."""
    out.write(bytes.fromhex(key))
    rows = 0
    for lines, quoted in hashed_ahead(blocks):
        out.write(block_digests(lines, quoted))
        rows += len(lines)
    return rows


HASH_AHEAD = 4  # blocks hashed ahead of the reader: a few MB


def hashed_ahead(blocks: Iterator[Block]) -> Iterator[Block]:
    """`blocks`, in order, each `TextLines` block's digests computed in a thread of its own while
    the caller reads (inflates, checks) the blocks after it: md5lines releases the GIL, so the
    hashing takes the other core instead of adding to the reading's time."""
    from taxi_assets.threads import in_order_ahead

    return in_order_ahead(blocks, _hashed, 1, HASH_AHEAD, "taxi-hash")


def _hashed(block: Block) -> Block:
    lines, quoted = block
    if isinstance(lines, TextLines) and not quoted:
        lines.digests()
    return block


class RowIds:
    """A file's row ids read from its row-id file, block by block, in step with its lines.

    `open` vouches for the file as a whole: the header names the very download (its key) and the
    size holds exactly `rows` digests. `take` then checks each block's first row against its
    line (one md5 per block), so ids can never drift out of step with the rows they describe.
    """

    def __init__(self, handle: BinaryIO, name: str, path: Path | None = None):
        self._handle, self._name, self._path = handle, name, path

    @classmethod
    def open(cls, path: Path, key: str, rows: int) -> RowIds | None:
        """The row ids in `path` if it is the row-id file keyed `key` (`row_ids_key`) with `rows`
        rows; None if it is missing or is not."""
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            return None
        if os.fstat(handle.fileno()).st_size != KEY_BYTES + rows * ROW_ID_BYTES or handle.read(
            KEY_BYTES
        ) != bytes.fromhex(key):
            handle.close()
            return None
        return cls(handle, path.name, path)

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


# The pickups' month.

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
    A Parquet's every row is counted (`tlcparquet.tally_pickups`, with Arrow); a .csv.gz's lines are
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


# The reader.

# A block of rows: their lines (no line endings) and whether one holds a quote (then it needs a
# real CSV parser). A Parquet's lines are canonical (never quoted for a parser: hashed as they are),
# kept as the one text Arrow rendered (`TextLines`).
Block = tuple[list[bytes] | TextLines, bool]


class MonthFile:
    """One month file (`path`, published as `name`) of `dataset`, read as its rows: the one way
    every step reads a download. Made by `open_month_file`, which picks the format's reader.

    Errors name the file `name` (default: the path's; a temp file passes its published name).
    """

    def __init__(self, path: Path, dataset: TaxiDataset, name: str | None = None):
        self.path, self.dataset, self.name = path, dataset, name or path.name

    # What a format's reader provides.

    def read(
        self, *, pickups: PickupMonths | None = None, check_amounts: bool = False
    ) -> tuple[list[str], Iterator[Block]]:
        """The file's column names, checked now, and its rows as blocks of lines (memory flat
        whatever the file; a format error raises BadFileError as the block is reached). With
        `pickups`, the rows' pickup months are tallied into it as the blocks are read. With
        `check_amounts`, amounts must be finite numbers (a Parquet's always must)."""
        raise NotImplementedError

    def published_header(self, header: list[str]) -> list[str]:
        """The column names as published, for extract's record (`header`: as `read` gave them)."""
        return header

    @staticmethod
    def rendering(dataset: TaxiDataset) -> str | None:
        """What the lines of `dataset`'s rows depend on besides the file, where they are rendered
        from typed values (not a CSV's own lines): part of the row-id file's key
        (`row_ids_key`) and of the Parquet conversion's id. None: nothing."""
        return None

    def place(self, row: int) -> str:
        """Where the file's `row`-th data row (1-based) is, for a message."""
        raise NotImplementedError

    def arrow_batches(
        self, column_types: dict[str, pa.DataType]
    ) -> contextlib.AbstractContextManager[Iterator[pa.RecordBatch]]:
        """The rows as Arrow record batches, in file order (the Parquet conversion's input): a
        CSV's parsed with `column_types`, a Parquet's in its canonical schema."""
        raise NotImplementedError

    def first_line(self, batch: pa.RecordBatch) -> bytes | None:
        """The line whose md5 is the id of `batch`'s first row, when an `arrow_batches` batch
        still tells it (a Parquet's canonical line), to check ids against; else None."""
        return None

    def text_blocks(self) -> Iterator[tuple[bytes, np.ndarray, bool]]:
        """The data rows as `read` gives them, a block at a time as one text: its lines, each
        with its line ending (LF, or CRLF throughout a file that has them), the offset of each
        line's LF (numpy) and whether one holds a quote. A format may give them without
        splitting the lines (a load joins ids to them in bulk)."""
        import numpy as np

        _, blocks = self.read()
        for lines, quoted in blocks:
            if lines:
                ends = np.cumsum(np.fromiter(map(len, lines), np.intp, len(lines)) + 1) - 1
                yield b"\n".join(lines) + b"\n", ends, quoted

    def typed_batches(self) -> Iterator[pa.RecordBatch]:
        """The rows as Arrow batches of the feed's canonical types, in file order, where the file
        holds typed values (a Parquet)."""
        raise NotImplementedError(f"{self.name} holds text lines, not typed values")

    def copy_halves(
        self, ids: RowIds, second: Callable[[bytes], np.ndarray]
    ) -> Iterator[tuple[list[memoryview], bytes]]:
        """The rows as binary COPY rows (`pgbinary`), a block at a time: the rows of each half
        end to end (`second(digests)`: whether each row goes to the second), with the block's
        16-byte digests, taken from `ids`. By default `typed_batches`, encoded."""
        import pyarrow as pa

        from taxi_assets import pgbinary
        from taxi_assets.rows import hex_ids

        pg_types = [ROW_ID_COLUMN.pg_type, *(c.pg_type for c in self.dataset.columns)]
        for n, batch in enumerate(self.typed_batches()):
            if n % 8 == 7:  # Arrow's pool (mimalloc) keeps decoded batches' memory otherwise: 20 MB of peak
                pa.default_memory_pool().release_unused()
            if batch.num_rows:
                digests = ids.take_checked(batch.num_rows, self.first_line(batch))
                columns = [hex_ids(digests), *batch.columns]
                yield pgbinary.encode(columns, pg_types, second(digests), 2), digests

    # The same for every format.

    def verify(self, *, sha256: str = "") -> tuple[list[str], int]:
        """Check the file whole (gzip integrity and header; a Parquet's footer, columns and every
        row group), that its amounts are finite numbers (`csvgz.FiniteAmounts`) and that its rows
        are of its month (the one in `name`: a file mostly of another month is refused,
        `PickupMonths`); return (header as published, data lines). With the file's
        `sha256`, also write its row-id file (atomically, once the file passed) while reading.
        Raises BadFileError naming the file `name`."""
        name = self.name
        pickups = PickupMonths(self.dataset, month_of(name))
        header, blocks = self.read(pickups=pickups, check_amounts=True)
        header = self.published_header(header)  # the record keeps the names as published
        ids = row_ids_path(self.path.with_name(name))
        tmp = temp_path(ids)
        try:
            if not sha256:
                lines = sum(len(lines) for lines, _ in blocks)
            else:
                with open(tmp, "wb") as out:
                    lines = write_row_ids(blocks, out, row_ids_key(sha256, self.rendering(self.dataset)))
                    out.flush()
                    os.fsync(out.fileno())  # as the download: a crash never leaves a torn row-id file
            if not lines:
                raise BadFileError(f"{name} has a header but no rows")
            if refusal := pickups.refusal():
                raise BadFileError(f"{name}: {refusal}")
            if sha256:
                os.replace(tmp, ids)
        finally:
            tmp.unlink(missing_ok=True)
        return header, lines

    def row_ids_of(self, sha256: str, rows: int) -> RowIds | None:
        """The row ids extract wrote for the download `sha256` of `rows` rows (and this rendering),
        if its row-id file is there and is theirs; else None."""
        return RowIds.open(row_ids_path(self.path), row_ids_key(sha256, self.rendering(self.dataset)), rows)

    def recorded_row_ids(self) -> RowIds | None:
        """The row ids extract computed for this download, if its record still vouches for the
        file and the row-id file belongs to that very download (and rendering); else None (the
        caller hashes the rows)."""
        info, _ = recorded_download(self.path)
        if info is None:
            return None
        return self.row_ids_of(info.sha256, info.data_lines)

    def row_ids(self) -> RowIds:
        """The row ids: extract's (`recorded_row_ids`), else hashed now into a nameless temp file."""
        if (ids := self.recorded_row_ids()) is not None:
            return ids
        handle = tempfile.TemporaryFile(prefix="taxi-row-ids-", dir=self.path.parent)  # noqa: SIM115 (closed by close())
        try:
            _, blocks = self.read()
            write_row_ids(blocks, handle, "00" * KEY_BYTES)
            handle.seek(KEY_BYTES)
        except BaseException:
            handle.close()
            raise
        return RowIds(handle, self.path.name)


def reader(dataset: TaxiDataset) -> type[MonthFile]:
    """The reader of `dataset`'s files, by its source's format: the one place that asks it."""
    if dataset.source.format == "parquet":
        from taxi_assets.monthfile.tlcparquet import TlcParquetFile

        return TlcParquetFile
    from taxi_assets.monthfile.csvgz import CsvGzFile

    return CsvGzFile


def open_month_file(path: Path, dataset: TaxiDataset, name: str | None = None) -> MonthFile:
    """The month file at `path` of `dataset`, read as its source's format. Nothing is read yet.
    Errors name the file `name` (default: the path's; a temp file passes its published name)."""
    return reader(dataset)(path, dataset, name)


def rendering_id(dataset: TaxiDataset) -> str | None:
    """What the lines of `dataset`'s rows depend on besides its files (`MonthFile.rendering`)."""
    return reader(dataset).rendering(dataset)
