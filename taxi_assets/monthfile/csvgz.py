"""The mirror's month files (.csv.gz) read as rows: their own lines, checked as they are read.

Inflated with ISA-L in blocks of ~600 KB of lines, memory flat whatever the file; the header is
checked against the dataset, line endings and blank lines are checked per block, and (while
extract verifies the file) amounts must be finite numbers (`FiniteAmounts`).
"""

from __future__ import annotations

import binascii
import contextlib
import csv
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

try:  # ISA-L inflates gzip ~4x faster than zlib; same API
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover
    import zlib as _zlib

import numpy as np

from taxi_assets.datasets import ROW_ID_COLUMN, TaxiDataset
from taxi_assets.errors import BadFileError
from taxi_assets.monthfile import Block, MonthFile, PickupMonths, RowIds, TextLines

if TYPE_CHECKING:
    import pyarrow as pa

# Compressed bytes read at a time (~600 KB of lines): memory stays flat whatever the file, and
# blocks this small are reused from the heap while hot in cache (1 MB ones cost 4x the page
# faults, and a load 1-2 s, in glibc's mmap'd blocks).
CHUNK_BYTES = 128 << 10
# An integer printed as a float (`264.0`), as a whole field: read as `264` (group 1) by both
# stores' loads (`integer_floats_as_integers`), in the feeds that print them so.
INTEGER_FLOAT_FIELD = r"(-?\d+)\.0+"
# CSV bytes Arrow parses at a time (~10 k rows; `arrow_batches`): 4 MB blocks doubled the Parquet
# conversion's peak RSS (the inflated bytes are Python objects, and glibc's heap keeps blocks that large).
ARROW_BLOCK_BYTES = 1 << 20


def _header(line: bytes, dataset: TaxiDataset, name: str) -> list[str]:
    """The header line's column names, checked against `dataset`."""
    header = next(csv.reader([line.decode("utf-8-sig", errors="replace")]), [])
    if problem := dataset.header_problem(header):
        raise BadFileError(f"{name} does not have the {dataset.taxi} header: {problem}")
    return header


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

    def check(self, block: bytes, lines: Sequence[bytes], quoted: bool) -> None:
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


def iter_lines(path: Path, name: str | None = None, amounts: FiniteAmounts | None = None) -> Iterator[Block]:
    """The lines of a .csv.gz, without line endings (CRLF or LF), a block of ~600 KB at a time
    (`TextLines`; a list of lines where one holds a quote: then it needs a real CSV parser),
    each with whether it does.

    Memory stays flat whatever the file. Blank lines at the end of the file (an editor's or a
    tool's trailing newline) are dropped: they are no rows. With `amounts`, every block (the
    header's too) is checked by it before it is yielded. Raises BadFileError, naming the
    file `name` (default: the path's), for a corrupt or truncated gzip stream (after yielding
    what came before: a consumer must not commit early) and for a blank line before a row.
    """
    name = name or path.name
    for block in _inflated(path, name):
        yield _checked(block, name, amounts)


def iter_text(path: Path, name: str | None = None) -> Iterator[tuple[bytes, np.ndarray, bool]]:
    """`iter_lines` without splitting: each block as its lines, line endings kept (LF or CRLF,
    one kind per file: COPY takes either), where each line's LF is and whether one holds a quote; checked as
    `iter_lines` checks them (the same errors). What a load needs: it joins ids to lines in bulk,
    never line by line."""
    name = name or path.name
    for block in _inflated(path, name):
        yield _text(block, name)


def _inflated(path: Path, name: str) -> Iterator[bytes]:
    """The file's whole lines, inflated a chunk at a time, as blocks that end with a line ending
    (the last line given one); blank lines are held back and refused unless the file ends there."""
    inflater = _zlib.decompressobj(wbits=31)  # gzip framing
    carry, eol = b"", b"\n"  # the line ending the file uses (its last line is given one too)
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
                        eol = b"\r\n" if block.endswith(b"\r\n") else b"\n"
                        yield block
                    blank_before = blank_tail
    except _zlib.error as exc:
        raise BadFileError(f"{name} is not valid gzip: {exc}") from None
    if not inflater.eof:
        raise BadFileError(f"{name} is truncated: the gzip stream ends early")
    if carry.strip():  # a last line without a line ending
        if blank_before:
            raise BadFileError(_blank_line(name))
        yield carry.rstrip(b"\r") + eol


def _text(block: bytes, name: str) -> tuple[bytes, np.ndarray, bool]:
    """A block (whole lines) with the offset of each line's LF and whether one holds a quote, refused as
    `_split` refuses it, found with numpy over the line endings instead of a split (`_split`
    itself words any refusal)."""
    raw = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(raw == ord("\n"))
    if block.endswith(b"\r\n"):  # every line ends CRLF, none is empty
        suspect = bool((raw[ends - 1] != ord("\r")).any() or (np.diff(ends) <= 2).any()) or block.startswith(b"\r\n")
    else:  # no line is empty or a lone CR
        suspect = bool((np.diff(ends) <= 1).any()) or block.startswith((b"\n", b"\r\n")) or b"\n\r\n" in block
    if suspect:
        _split(block, name)  # raises
    return block, ends, b'"' in block


def _checked(block: bytes, name: str, amounts: FiniteAmounts | None) -> Block:
    """A block's lines, checked: a quoted block's split (they are parsed), the others kept as the
    block (`TextLines`: hashed whole, never split)."""
    block, lfs, quoted = _text(block, name)
    lines = _split(block, name)[0] if quoted else TextLines.of(block, lfs, crlf=block.endswith(b"\r\n"))
    if amounts is not None:
        amounts.check(block, lines, quoted)
    return lines, quoted


def _blank_line(name: str) -> str:
    return f"{name} has a blank line before a row; a month file never does (blank lines at its end are ignored)"


_LINE_END_BYTES = (ord("\r"), ord("\n"))


def _hold_back_blank_tail(block: bytes) -> tuple[bytes, bool]:
    """Split whole lines into those up to the last non-blank one (with its line ending) and
    whether blank lines (CRLF or LF) followed it. Only the file's end may have those."""
    end = len(block)
    while end and block[end - 1] in _LINE_END_BYTES:  # not rstrip: that copies the whole block
        end -= 1
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
) -> tuple[list[str], Iterator[Block]]:
    """Check the file's header against `dataset`; return it and the data blocks after it (with
    `check_amounts`, checked by `FiniteAmounts` as they are read). Errors name the file `name`
    (default: the path's; a temp file passes its published name)."""
    name = name or path.name
    blocks = iter_lines(path, name, FiniteAmounts(dataset, name) if check_amounts else None)
    first = next(blocks, None)
    if first is None or not first[0]:
        raise BadFileError(f"{name} is empty")
    lines, quoted = first
    header = _header(lines[0], dataset, name)
    return header, itertools.chain([(lines[1:], quoted)] if len(lines) > 1 else [], blocks)


class CsvGzFile(MonthFile):
    """A .csv.gz month file (the mirror's): its rows are its own lines."""

    def read(
        self, *, pickups: PickupMonths | None = None, check_amounts: bool = False
    ) -> tuple[list[str], Iterator[Block]]:
        header, blocks = data_lines(self.path, self.dataset, self.name, check_amounts=check_amounts)
        return header, blocks if pickups is None else pickups.watch(blocks)

    def text_blocks(self) -> Iterator[tuple[bytes, np.ndarray, bool]]:
        blocks = iter_text(self.path, self.name)
        text, ends, quoted = next(blocks, (b"", np.empty(0, np.intp), False))
        if not len(ends):
            raise BadFileError(f"{self.name} is empty")
        cut = int(ends[0]) + 1
        _header(text[:cut].rstrip(b"\r\n"), self.dataset, self.name)
        return itertools.chain([(text[cut:], ends[1:] - cut, quoted)] if len(ends) > 1 else [], blocks)

    def place(self, row: int) -> str:
        return f"line {row + 1:,} of {self.name}"  # the header is line 1

    def copy_halves(
        self, ids: RowIds, second: Callable[[bytes], np.ndarray]
    ) -> Iterator[tuple[list[memoryview], bytes]]:
        """Each block of lines as binary COPY rows, an empty field (`""` too) as NULL, as the
        Parquet has it: an unquoted block's by `pgbinary.transcode`, straight from its text, the
        others (and any the fast path does not take) parsed by Arrow first. A field neither can
        read fails the load at its line and column."""
        from taxi_assets import pgbinary
        from taxi_assets.rows import hex_ids

        dataset, parse, rows = self.dataset, _BlockParser(self.dataset, self.name, self.place), 0
        pg_types = [c.pg_type for c in dataset.columns]
        normalize = bool(dataset.integer_float_columns)
        for text, ends, quoted in self.text_blocks():
            lines = TextLines.of(text, ends, crlf=text.endswith(b"\r\n"))
            digests = ids.take_checked(len(lines), None if quoted else lines[0])
            part = second(digests)
            halves = None
            if not quoted:
                halves = pgbinary.transcode(lines, binascii.hexlify(digests), pg_types, normalize, part, 2)
            if halves is None:
                columns = [hex_ids(digests), *parse(text, ends, rows + 1).columns]
                halves = pgbinary.encode(columns, [ROW_ID_COLUMN.pg_type, *pg_types], part, 2)
            rows += len(lines)
            yield halves, digests

    @contextlib.contextmanager
    def arrow_batches(self, column_types: dict[str, pa.DataType]) -> Iterator[Iterator[pa.RecordBatch]]:
        import pyarrow.csv as pacsv
        from isal import igzip

        read = pacsv.ReadOptions(
            column_names=list(self.dataset.sql_names), use_threads=False, block_size=ARROW_BLOCK_BYTES
        )
        # Timestamps by Arrow's own ISO-8601 parser: twice as fast as a strptime format.
        convert = pacsv.ConvertOptions(column_types=column_types, null_values=[""], strings_can_be_null=True)
        with igzip.open(self.path, "rb") as text:
            _header(text.readline(), self.dataset, self.name)
            yield pacsv.open_csv(text, read_options=read, convert_options=convert)


_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to [^:]+: (.*)")
_FIELD_COUNT = re.compile(r"Expected (\d+) columns, got (\d+)")
_QUOTED_VALUE = re.compile(r"invalid value ('.*')$")
_CARRIAGE_RETURN = "a carriage return inside a line (COPY refuses it)"


def integer_floats_as_integers(columns: list, dataset: TaxiDataset, integer_type: pa.DataType) -> list:
    """`264.0` as `264` (`INTEGER_FLOAT_FIELD`) in a feed that prints integers so: its text
    columns rewritten, its integer columns (parsed as float64) cast to `integer_type`, a cast that
    fails on a real fraction. The same for both stores (the Postgres load, the Parquet)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not dataset.integer_float_columns:
        return columns
    columns = list(columns)
    for i, column in enumerate(dataset.columns):
        if column.pg_type == "text":
            columns[i] = pc.replace_substring_regex(columns[i], f"^{INTEGER_FLOAT_FIELD}$", r"\1")
        elif column.pg_type == "integer":
            try:
                columns[i] = columns[i].cast(integer_type)
            except pa.ArrowInvalid as exc:  # worded as Arrow's parse words a bad field
                raise pa.ArrowInvalid(f"In CSV column #{i}: CSV conversion error to {integer_type}: {exc}") from None
    return columns


class _BlockParser:
    """A block of a .csv.gz's lines as one Arrow batch of the Postgres columns' types; a block
    Arrow refuses is bisected to its first bad line, named with its column and value."""

    def __init__(self, dataset: TaxiDataset, name: str, place):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self._pa, self._pacsv = pa, pacsv
        self.dataset, self.name, self.place = dataset, name, place
        # int32, not the canonical int64: Arrow then refuses a value an `integer` cannot hold.
        parsed_as = {"text": pa.string(), "timestamp": pa.timestamp("us"), "integer": pa.int32()}
        parsed_as["double precision"] = pa.float64()
        if dataset.integer_float_columns:  # `1.0` in an integer column: parsed as a float, cast back
            parsed_as["integer"] = pa.float64()
        self.read = pacsv.ReadOptions(column_names=list(dataset.sql_names), use_threads=False, block_size=1 << 26)
        self.parse_options = pacsv.ParseOptions(ignore_empty_lines=False)
        self.convert = pacsv.ConvertOptions(
            column_types={c.sql_name: parsed_as[c.pg_type] for c in dataset.columns},
            null_values=[""],
            strings_can_be_null=True,  # an empty field is NULL, `""` too (as a quoted row's id reads it)
        )

    def _parse(self, text: bytes, lines: int) -> pa.RecordBatch:
        """`text`'s `lines` lines as one batch; ArrowInvalid if Arrow refuses them, or reads a
        carriage return inside a line as a line's end (COPY refuses it)."""
        pa = self._pa
        if not text.endswith(b"\r\n") and b"\r" in text:  # Arrow would end a line there
            raise pa.ArrowInvalid(_CARRIAGE_RETURN)
        table = self._pacsv.read_csv(
            pa.BufferReader(text),
            read_options=self.read,
            parse_options=self.parse_options,
            convert_options=self.convert,
        )
        if table.num_rows != lines:  # a bare CR among CRLF lines: Arrow split a line there
            raise pa.ArrowInvalid(_CARRIAGE_RETURN)
        columns = [column.combine_chunks() for column in table.columns]
        columns = integer_floats_as_integers(columns, self.dataset, pa.int32())
        return pa.RecordBatch.from_arrays(columns, names=table.column_names)

    def __call__(self, text: bytes, ends: np.ndarray, first_row: int) -> pa.RecordBatch:
        """The block `text` (lines ending at `ends`; its first line the file's data row `first_row`)."""
        try:
            return self._parse(text, len(ends))
        except (self._pa.ArrowInvalid, self._pa.ArrowNotImplementedError):
            raise self._bad_line(text, ends, first_row) from None

    def _bad_line(self, text: bytes, ends: np.ndarray, first_row: int) -> BadFileError:
        starts = TextLines.of(text, ends).starts
        lo, hi = 0, len(ends)  # the first bad line is in [lo, hi): halve the range while one half parses
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._why(text[starts[lo] : ends[mid - 1] + 1], mid - lo) is not None:
                hi = mid
            else:
                lo = mid
        line = text[starts[lo] : ends[lo] + 1]
        why = self._why(line, 1) or ": Arrow refuses the block, yet each line parses"
        return BadFileError(f"{self.place(first_row + lo)}{why}")

    def _why(self, text: bytes, lines: int) -> str | None:
        """Why `text` (`lines` lines) is refused, worded for a message after the line's place; None: it parses."""
        pa = self._pa
        columns = self.dataset.columns
        try:
            self._parse(text, lines)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            message = str(exc).splitlines()[0]
            if found := _CONVERSION_ERROR.search(message):
                column = columns[int(found[1])]
                value = _QUOTED_VALUE.search(found[2])
                return (
                    f", column {column.sql_name}: invalid input for {column.pg_type}: {value[1] if value else found[2]}"
                )
            if found := _FIELD_COUNT.search(message):
                want, got = int(found[1]), int(found[2])
                missing = (
                    "extra data after last expected column"
                    if got > want
                    else f"missing data for column {columns[got].sql_name}"
                )
                return f" ({got} fields, the header has {want}): {missing}"
            return f": {message}"
        return None
