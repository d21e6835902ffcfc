"""The md5 of every line of a text in one call: the row ids' hash, compiled.

hashlib costs a bytes object and a Python call per line, with the GIL held: a 3 M-row fhvhv
month's lines took 3.4 CPU-s to split and hash, on one core whatever the threads. Here a block's
lines are hashed by one compiled loop (numba) with the GIL released, in 1.8 CPU-s, so the threads
that render lines hash them too, side by side. The digests are hashlib's, byte for byte
(tests/test_md5lines.py holds them to it at every padding boundary).

The loop is compiled on first use and cached on disk (beside this file, or in the user's cache
folder where this one is read-only): some 10 s once per install, then 0.3 s per process.
"""

from __future__ import annotations

import numba
import numpy as np

DIGEST_BYTES = 16

# md5's arithmetic is on 32-bit words, modulo 2**32. numba widens integer arithmetic to 64 bits,
# so every result is cut back to 32 (`np.uint32(...)`): LLVM then does it in 32-bit instructions,
# rotations included (twice as fast as masking 64-bit words).


@numba.njit(inline="always")
def _step(a, b, f, x, s, t):  # pragma: no cover (compiled)
    a = np.uint32(a + f + x + np.uint32(t))
    return np.uint32(b + np.uint32((a << np.uint32(s)) | (a >> np.uint32(32 - s))))


@numba.njit(inline="always")
def _f(a, b, c, d, x, s, t):  # pragma: no cover (compiled)
    return _step(a, b, np.uint32((b & c) | (~b & d)), x, s, t)


@numba.njit(inline="always")
def _g(a, b, c, d, x, s, t):  # pragma: no cover (compiled)
    return _step(a, b, np.uint32((b & d) | (c & ~d)), x, s, t)


@numba.njit(inline="always")
def _h(a, b, c, d, x, s, t):  # pragma: no cover (compiled)
    return _step(a, b, np.uint32(b ^ c ^ d), x, s, t)


@numba.njit(inline="always")
def _i(a, b, c, d, x, s, t):  # pragma: no cover (compiled)
    return _step(a, b, np.uint32(c ^ (b | ~d)), x, s, t)


@numba.njit(inline="always")
def _compress(x, state):  # pragma: no cover (compiled)
    """One 64-byte block (`x`: its 16 little-endian words) into `state`: RFC 1321's 64 steps,
    written out as its reference code does, so that every shift and constant is a literal."""
    a, b, c, d = state[0], state[1], state[2], state[3]
    a = _f(a, b, c, d, x[0], 7, 0xD76AA478)
    d = _f(d, a, b, c, x[1], 12, 0xE8C7B756)
    c = _f(c, d, a, b, x[2], 17, 0x242070DB)
    b = _f(b, c, d, a, x[3], 22, 0xC1BDCEEE)
    a = _f(a, b, c, d, x[4], 7, 0xF57C0FAF)
    d = _f(d, a, b, c, x[5], 12, 0x4787C62A)
    c = _f(c, d, a, b, x[6], 17, 0xA8304613)
    b = _f(b, c, d, a, x[7], 22, 0xFD469501)
    a = _f(a, b, c, d, x[8], 7, 0x698098D8)
    d = _f(d, a, b, c, x[9], 12, 0x8B44F7AF)
    c = _f(c, d, a, b, x[10], 17, 0xFFFF5BB1)
    b = _f(b, c, d, a, x[11], 22, 0x895CD7BE)
    a = _f(a, b, c, d, x[12], 7, 0x6B901122)
    d = _f(d, a, b, c, x[13], 12, 0xFD987193)
    c = _f(c, d, a, b, x[14], 17, 0xA679438E)
    b = _f(b, c, d, a, x[15], 22, 0x49B40821)
    a = _g(a, b, c, d, x[1], 5, 0xF61E2562)
    d = _g(d, a, b, c, x[6], 9, 0xC040B340)
    c = _g(c, d, a, b, x[11], 14, 0x265E5A51)
    b = _g(b, c, d, a, x[0], 20, 0xE9B6C7AA)
    a = _g(a, b, c, d, x[5], 5, 0xD62F105D)
    d = _g(d, a, b, c, x[10], 9, 0x02441453)
    c = _g(c, d, a, b, x[15], 14, 0xD8A1E681)
    b = _g(b, c, d, a, x[4], 20, 0xE7D3FBC8)
    a = _g(a, b, c, d, x[9], 5, 0x21E1CDE6)
    d = _g(d, a, b, c, x[14], 9, 0xC33707D6)
    c = _g(c, d, a, b, x[3], 14, 0xF4D50D87)
    b = _g(b, c, d, a, x[8], 20, 0x455A14ED)
    a = _g(a, b, c, d, x[13], 5, 0xA9E3E905)
    d = _g(d, a, b, c, x[2], 9, 0xFCEFA3F8)
    c = _g(c, d, a, b, x[7], 14, 0x676F02D9)
    b = _g(b, c, d, a, x[12], 20, 0x8D2A4C8A)
    a = _h(a, b, c, d, x[5], 4, 0xFFFA3942)
    d = _h(d, a, b, c, x[8], 11, 0x8771F681)
    c = _h(c, d, a, b, x[11], 16, 0x6D9D6122)
    b = _h(b, c, d, a, x[14], 23, 0xFDE5380C)
    a = _h(a, b, c, d, x[1], 4, 0xA4BEEA44)
    d = _h(d, a, b, c, x[4], 11, 0x4BDECFA9)
    c = _h(c, d, a, b, x[7], 16, 0xF6BB4B60)
    b = _h(b, c, d, a, x[10], 23, 0xBEBFBC70)
    a = _h(a, b, c, d, x[13], 4, 0x289B7EC6)
    d = _h(d, a, b, c, x[0], 11, 0xEAA127FA)
    c = _h(c, d, a, b, x[3], 16, 0xD4EF3085)
    b = _h(b, c, d, a, x[6], 23, 0x04881D05)
    a = _h(a, b, c, d, x[9], 4, 0xD9D4D039)
    d = _h(d, a, b, c, x[12], 11, 0xE6DB99E5)
    c = _h(c, d, a, b, x[15], 16, 0x1FA27CF8)
    b = _h(b, c, d, a, x[2], 23, 0xC4AC5665)
    a = _i(a, b, c, d, x[0], 6, 0xF4292244)
    d = _i(d, a, b, c, x[7], 10, 0x432AFF97)
    c = _i(c, d, a, b, x[14], 15, 0xAB9423A7)
    b = _i(b, c, d, a, x[5], 21, 0xFC93A039)
    a = _i(a, b, c, d, x[12], 6, 0x655B59C3)
    d = _i(d, a, b, c, x[3], 10, 0x8F0CCC92)
    c = _i(c, d, a, b, x[10], 15, 0xFFEFF47D)
    b = _i(b, c, d, a, x[1], 21, 0x85845DD1)
    a = _i(a, b, c, d, x[8], 6, 0x6FA87E4F)
    d = _i(d, a, b, c, x[15], 10, 0xFE2CE6E0)
    c = _i(c, d, a, b, x[6], 15, 0xA3014314)
    b = _i(b, c, d, a, x[13], 21, 0x4E0811A1)
    a = _i(a, b, c, d, x[4], 6, 0xF7537E82)
    d = _i(d, a, b, c, x[11], 10, 0xBD3AF235)
    c = _i(c, d, a, b, x[2], 15, 0x2AD7D2BB)
    b = _i(b, c, d, a, x[9], 21, 0xEB86D391)
    state[0] = np.uint32(state[0] + a)
    state[1] = np.uint32(state[1] + b)
    state[2] = np.uint32(state[2] + c)
    state[3] = np.uint32(state[3] + d)


@numba.njit(inline="always")
def _load(src, at, words):  # pragma: no cover (compiled)
    """The 16 little-endian words of the 64 bytes of `src` from `at`."""
    for j in range(16):
        q = at + 4 * j
        words[j] = (
            np.uint32(src[q])
            | (np.uint32(src[q + 1]) << np.uint32(8))
            | (np.uint32(src[q + 2]) << np.uint32(16))
            | (np.uint32(src[q + 3]) << np.uint32(24))
        )


@numba.njit(inline="always")
def _md5(src, start, length, out, at, scratch):  # pragma: no cover (compiled)
    """The md5 of `src[start:start + length]` into `out[at:at + 16]`; `scratch`: `_scratch()`."""
    state, words, tail = scratch
    state[0], state[1], state[2], state[3] = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    whole = length // 64
    for block in range(whole):
        _load(src, start + 64 * block, words)
        _compress(words, state)
    # The padding: the rest, one 1 bit, zeros, the length in bits (64-bit little-endian).
    rest = length - 64 * whole
    blocks = 1 if rest < 56 else 2
    for j in range(rest):  # loops: slice operations cost more on these few bytes
        tail[j] = src[start + 64 * whole + j]
    tail[rest] = 0x80
    for j in range(rest + 1, 64 * blocks - 8):
        tail[j] = 0
    bits = np.uint64(length) * np.uint64(8)
    for j in range(8):
        tail[64 * blocks - 8 + j] = (bits >> np.uint64(8 * j)) & np.uint64(0xFF)
    for block in range(blocks):
        _load(tail, 64 * block, words)
        _compress(words, state)
    for k in range(4):
        for j in range(4):
            out[at + 4 * k + j] = (state[k] >> np.uint32(8 * j)) & np.uint32(0xFF)


@numba.njit(inline="always")
def _scratch():  # pragma: no cover (compiled)
    return np.empty(4, np.uint32), np.empty(16, np.uint32), np.empty(128, np.uint8)


@numba.njit(nogil=True, cache=True)
def _digests(data, starts, ends):  # pragma: no cover (compiled)
    out = np.empty(len(starts) * DIGEST_BYTES, np.uint8)
    scratch = _scratch()
    for row in range(len(starts)):
        _md5(data, starts[row], ends[row] - starts[row], out, DIGEST_BYTES * row, scratch)
    return out


def digests(text, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """The md5 digests, concatenated, of the lines `text[starts[i]:ends[i]]` (`text`: bytes-like;
    `starts`, `ends`: offsets, as many as there are lines)."""
    if not len(ends):
        return b""
    data = np.frombuffer(text, np.uint8)
    data.flags.writeable = False  # one compiled (and cached) signature, whatever the buffer
    bounds = (np.ascontiguousarray(b, np.int64) for b in (starts, ends))
    return _digests(data, *bounds).tobytes()


def warm() -> None:
    """Compile the loop now, or load it from the cache: an image's build does, so that its
    containers' first hash does not wait for the compiler."""
    digests(b"\n", np.zeros(1, np.int64), np.zeros(1, np.int64))
