"""What the package's compiled loops (numba: `md5lines`, `pgbinary`, `csvlines`) share: how an
Arrow column becomes the read-only numpy arrays they take, one compiled signature for every
feed, and `warm`, which compiles them now or loads them from their cache. An image's build and
the test runner warm them once (`python -m taxi_assets.compiled`), so that no step waits for
the compiler (some 10 s a loop on a fresh install)."""

from __future__ import annotations

import numpy as np

# A loop over columns takes this many, the unused ones empty: one signature for every feed.
MAX_COLUMNS = 32
# 10**k exactly, k <= 22: one division by them is correctly rounded (Clinger's fast path).
POWERS = np.array([10.0**k for k in range(23)])
NO_BYTES = np.empty(0, np.uint8)
NO_NUMBERS = np.empty(0, np.int64)
for _array in (POWERS, NO_BYTES, NO_NUMBERS):
    _array.flags.writeable = False


def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view: the loops are compiled (and cached) for read-only arrays alone,
    whatever buffer an array comes from."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


def validity(column) -> np.ndarray:
    """1 per valid row of an Arrow array, 0 per NULL; empty when it has no NULL (nothing to look up)."""
    if not column.null_count:
        return NO_BYTES
    bits = np.frombuffer(column.buffers()[0], np.uint8)
    return readonly(np.unpackbits(bits, count=column.offset + len(column), bitorder="little")[column.offset :])


def fixed_values(column, dtype) -> np.ndarray:
    """A fixed-width Arrow array's values as numpy `dtype` (a float's or a timestamp's 8 bytes
    as an int64's if asked), without a copy; a NULL's slot holds whatever Arrow left there."""
    dtype = np.dtype(dtype)
    data = column.buffers()[1]
    return np.frombuffer(data, dtype, count=len(column), offset=dtype.itemsize * column.offset)


def text_buffers(column) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow string (or binary) array's offsets (int64) and bytes."""
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], np.int32, count=len(column) + 1, offset=4 * column.offset)
    data = buffers[2]
    return readonly(offsets.astype(np.int64)), readonly(
        np.frombuffer(data, np.uint8)
    ) if data and data.size else NO_BYTES


def warm() -> None:
    from taxi_assets import csvlines, md5lines, pgbinary

    for module in (md5lines, pgbinary, csvlines):
        module.warm()


if __name__ == "__main__":
    warm()
