"""The md5 of every line of a text in one call: the row ids' hash, compiled.

hashlib costs a bytes object and a Python call per line, with the GIL held: a 3 M-row fhvhv
month's lines took 3.4 CPU-s to split and hash, on one core whatever the threads. Here a block's
lines are hashed by one compiled loop (numba) with the GIL released, so the threads that render
lines hash them too, side by side: 16 lines at a time, each of md5's 64 steps one vector
instruction across them (0.83 CPU-s for that month; 1.4 one line at a time). The digests are
hashlib's, byte for byte (tests/test_md5lines.py holds them to it at every padding boundary).

The loop is compiled on first use and cached on disk (beside this file, or in the user's cache
folder where this one is read-only): some 10 s once per install, then 0.3 s per process.
"""

from __future__ import annotations

import numba
import numpy as np

DIGEST_BYTES = 16
# Lines hashed side by side: 16 32-bit lanes fill an AVX-512 register (two AVX2 ones).
LANES = 16

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
def _compress(x, lane, state, active):  # pragma: no cover (compiled)
    """One 64-byte block of a lane (`x[:, lane]`: its 16 little-endian words) into the lane's
    `state` (a row per word a, b, c, d), where `active` (1; 0 leaves it): RFC 1321's 64 steps,
    written out as its reference code does, so that every shift and constant is a literal."""
    a, b, c, d = state[0, lane], state[1, lane], state[2, lane], state[3, lane]
    a = _f(a, b, c, d, x[0, lane], 7, 0xD76AA478)
    d = _f(d, a, b, c, x[1, lane], 12, 0xE8C7B756)
    c = _f(c, d, a, b, x[2, lane], 17, 0x242070DB)
    b = _f(b, c, d, a, x[3, lane], 22, 0xC1BDCEEE)
    a = _f(a, b, c, d, x[4, lane], 7, 0xF57C0FAF)
    d = _f(d, a, b, c, x[5, lane], 12, 0x4787C62A)
    c = _f(c, d, a, b, x[6, lane], 17, 0xA8304613)
    b = _f(b, c, d, a, x[7, lane], 22, 0xFD469501)
    a = _f(a, b, c, d, x[8, lane], 7, 0x698098D8)
    d = _f(d, a, b, c, x[9, lane], 12, 0x8B44F7AF)
    c = _f(c, d, a, b, x[10, lane], 17, 0xFFFF5BB1)
    b = _f(b, c, d, a, x[11, lane], 22, 0x895CD7BE)
    a = _f(a, b, c, d, x[12, lane], 7, 0x6B901122)
    d = _f(d, a, b, c, x[13, lane], 12, 0xFD987193)
    c = _f(c, d, a, b, x[14, lane], 17, 0xA679438E)
    b = _f(b, c, d, a, x[15, lane], 22, 0x49B40821)
    a = _g(a, b, c, d, x[1, lane], 5, 0xF61E2562)
    d = _g(d, a, b, c, x[6, lane], 9, 0xC040B340)
    c = _g(c, d, a, b, x[11, lane], 14, 0x265E5A51)
    b = _g(b, c, d, a, x[0, lane], 20, 0xE9B6C7AA)
    a = _g(a, b, c, d, x[5, lane], 5, 0xD62F105D)
    d = _g(d, a, b, c, x[10, lane], 9, 0x02441453)
    c = _g(c, d, a, b, x[15, lane], 14, 0xD8A1E681)
    b = _g(b, c, d, a, x[4, lane], 20, 0xE7D3FBC8)
    a = _g(a, b, c, d, x[9, lane], 5, 0x21E1CDE6)
    d = _g(d, a, b, c, x[14, lane], 9, 0xC33707D6)
    c = _g(c, d, a, b, x[3, lane], 14, 0xF4D50D87)
    b = _g(b, c, d, a, x[8, lane], 20, 0x455A14ED)
    a = _g(a, b, c, d, x[13, lane], 5, 0xA9E3E905)
    d = _g(d, a, b, c, x[2, lane], 9, 0xFCEFA3F8)
    c = _g(c, d, a, b, x[7, lane], 14, 0x676F02D9)
    b = _g(b, c, d, a, x[12, lane], 20, 0x8D2A4C8A)
    a = _h(a, b, c, d, x[5, lane], 4, 0xFFFA3942)
    d = _h(d, a, b, c, x[8, lane], 11, 0x8771F681)
    c = _h(c, d, a, b, x[11, lane], 16, 0x6D9D6122)
    b = _h(b, c, d, a, x[14, lane], 23, 0xFDE5380C)
    a = _h(a, b, c, d, x[1, lane], 4, 0xA4BEEA44)
    d = _h(d, a, b, c, x[4, lane], 11, 0x4BDECFA9)
    c = _h(c, d, a, b, x[7, lane], 16, 0xF6BB4B60)
    b = _h(b, c, d, a, x[10, lane], 23, 0xBEBFBC70)
    a = _h(a, b, c, d, x[13, lane], 4, 0x289B7EC6)
    d = _h(d, a, b, c, x[0, lane], 11, 0xEAA127FA)
    c = _h(c, d, a, b, x[3, lane], 16, 0xD4EF3085)
    b = _h(b, c, d, a, x[6, lane], 23, 0x04881D05)
    a = _h(a, b, c, d, x[9, lane], 4, 0xD9D4D039)
    d = _h(d, a, b, c, x[12, lane], 11, 0xE6DB99E5)
    c = _h(c, d, a, b, x[15, lane], 16, 0x1FA27CF8)
    b = _h(b, c, d, a, x[2, lane], 23, 0xC4AC5665)
    a = _i(a, b, c, d, x[0, lane], 6, 0xF4292244)
    d = _i(d, a, b, c, x[7, lane], 10, 0x432AFF97)
    c = _i(c, d, a, b, x[14, lane], 15, 0xAB9423A7)
    b = _i(b, c, d, a, x[5, lane], 21, 0xFC93A039)
    a = _i(a, b, c, d, x[12, lane], 6, 0x655B59C3)
    d = _i(d, a, b, c, x[3, lane], 10, 0x8F0CCC92)
    c = _i(c, d, a, b, x[10, lane], 15, 0xFFEFF47D)
    b = _i(b, c, d, a, x[1, lane], 21, 0x85845DD1)
    a = _i(a, b, c, d, x[8, lane], 6, 0x6FA87E4F)
    d = _i(d, a, b, c, x[15, lane], 10, 0xFE2CE6E0)
    c = _i(c, d, a, b, x[6, lane], 15, 0xA3014314)
    b = _i(b, c, d, a, x[13, lane], 21, 0x4E0811A1)
    a = _i(a, b, c, d, x[4, lane], 6, 0xF7537E82)
    d = _i(d, a, b, c, x[11, lane], 10, 0xBD3AF235)
    c = _i(c, d, a, b, x[2, lane], 15, 0x2AD7D2BB)
    b = _i(b, c, d, a, x[9, lane], 21, 0xEB86D391)
    state[0, lane] = np.uint32(state[0, lane] + a * active)
    state[1, lane] = np.uint32(state[1, lane] + b * active)
    state[2, lane] = np.uint32(state[2, lane] + c * active)
    state[3, lane] = np.uint32(state[3, lane] + d * active)


@numba.njit(inline="always")
def _word(src, q):  # pragma: no cover (compiled)
    """The little-endian word of `src[q:q + 4]`."""
    return (
        np.uint32(src[q])
        | (np.uint32(src[q + 1]) << np.uint32(8))
        | (np.uint32(src[q + 2]) << np.uint32(16))
        | (np.uint32(src[q + 3]) << np.uint32(24))
    )


@numba.njit(inline="always")
def _padded_tail(src, start, length, tail):  # pragma: no cover (compiled)
    """A line's last bytes padded as md5 pads them (one 1 bit, zeros, the length in bits,
    64-bit little-endian) into `tail`: one block or two; how many."""
    whole = length // 64
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
    return blocks


@numba.njit(nogil=True, cache=True)
def _digests(data, starts, ends):  # pragma: no cover (compiled)
    """The md5 of every line, `LANES` lines at a time: each step of the 64 runs on all the lanes
    in one vector instruction (the lane loop is what LLVM vectorizes)."""
    count = len(starts)
    out = np.empty(count * DIGEST_BYTES, np.uint8)
    words = np.zeros((16, LANES), np.uint32)
    state = np.empty((4, LANES), np.uint32)
    tails = np.zeros((LANES, 128), np.uint8)
    whole = np.zeros(LANES, np.int64)
    blocks = np.zeros(LANES, np.int64)
    active = np.zeros(LANES, np.uint32)
    for first in range(0, count, LANES):
        lanes = min(LANES, count - first)
        most = 0
        for lane in range(LANES):
            state[0, lane], state[1, lane] = 0x67452301, 0xEFCDAB89
            state[2, lane], state[3, lane] = 0x98BADCFE, 0x10325476
            whole[lane], blocks[lane] = 0, 0
            if lane < lanes:
                start, length = starts[first + lane], ends[first + lane] - starts[first + lane]
                whole[lane] = length // 64
                blocks[lane] = whole[lane] + _padded_tail(data, start, length, tails[lane])
                most = max(most, blocks[lane])
        for block in range(most):
            for lane in range(LANES):
                active[lane] = block < blocks[lane]
                if block < whole[lane]:
                    at = starts[first + lane] + 64 * block
                    for j in range(16):
                        words[j, lane] = _word(data, at + 4 * j)
                elif block < blocks[lane]:
                    at = 64 * (block - whole[lane])
                    for j in range(16):
                        words[j, lane] = _word(tails[lane], at + 4 * j)
            for lane in range(LANES):
                _compress(words, lane, state, active[lane])
        for lane in range(lanes):
            at = DIGEST_BYTES * (first + lane)
            for k in range(4):
                for j in range(4):
                    out[at + 4 * k + j] = (state[k, lane] >> np.uint32(8 * j)) & np.uint32(0xFF)
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
