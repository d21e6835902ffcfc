"""The package's compiled loops (numba), compiled now or loaded from their cache: an image's
build and the test runner do it once, so that no step waits for the compiler (some 10 s a loop
on a fresh install). `python -m taxi_assets.compiled`."""

from __future__ import annotations


def warm() -> None:
    from taxi_assets import csvlines, md5lines, pgbinary

    for module in (md5lines, pgbinary, csvlines):
        module.warm()


if __name__ == "__main__":
    warm()
