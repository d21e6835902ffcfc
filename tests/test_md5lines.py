"""The compiled md5 of many lines (`md5lines`) is hashlib's md5 of each line, byte for byte: every
row id of a Parquet month depends on it."""

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest

from taxi_assets.md5lines import digests
from taxi_assets.monthfile import TextLines, block_digests


def _text(lines: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The lines joined, each ended by an LF, and where each starts and ends."""
    block = TextLines.of(
        text := b"".join(line + b"\n" for line in lines), np.flatnonzero(np.frombuffer(text, np.uint8) == 10)
    )
    return text, block.starts, block.ends


def _hashlib(lines: list[bytes]) -> bytes:
    return b"".join(hashlib.md5(line).digest() for line in lines)


def test_every_length_across_the_padding_boundaries_matches_hashlib():
    """md5 pads to 64-byte blocks with 9 bytes at least: lengths 55, 56, 63, 64, 119, 120 and 128
    take the one-block and two-block tails and the whole-block paths."""
    lines = [bytes((n * 7 + i) % 256 for i in range(n)).replace(b"\n", b"!") for n in range(0, 300)]
    assert digests(*_text(lines)) == _hashlib(lines)


def test_random_lines_of_any_byte_match_hashlib():
    rng = random.Random(20)
    lines = [bytes(rng.choice(range(256)) for _ in range(rng.randrange(2000))).replace(b"\n", b"") for _ in range(500)]
    assert digests(*_text(lines)) == _hashlib(lines)


@pytest.mark.parametrize("kind", [bytes, bytearray, pa.py_buffer])
def test_any_buffer_gives_the_same_digests(kind):
    lines = [b'"HV0003",2024-01-01 00:15:00.000000,,1.5', b"", b"x" * 64]
    text, starts, ends = _text(lines)
    assert digests(kind(text), starts, ends) == _hashlib(lines)


def test_no_lines_no_digests():
    assert digests(b"", np.empty(0, np.int64), np.empty(0, np.int64)) == b""


def test_text_lines_read_as_the_list_of_their_lines():
    lines = [b"a,1", b"", b'"b",2.5']
    block = TextLines(*_text(lines))
    assert len(block) == 3 and block == lines and list(block) == lines
    assert block[0] == b"a,1" and block[-1] == b'"b",2.5' and block[::2] == [b"a,1", b'"b",2.5']
    assert isinstance(block[1:], TextLines) and block[1:] == lines[1:]
    with pytest.raises(IndexError):
        block[3]
    assert block_digests(block, False) == block_digests(lines, False) == _hashlib(lines)
    assert block_digests(block[1:], False) == _hashlib(lines[1:])


def test_crlf_lines_are_hashed_without_their_cr():
    text = b"a,1\r\nb,2\r\n"
    block = TextLines.of(text, np.flatnonzero(np.frombuffer(text, np.uint8) == 10), crlf=True)
    assert block == [b"a,1", b"b,2"] and block.digests() == _hashlib([b"a,1", b"b,2"])
