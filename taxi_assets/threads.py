"""A step's helper threads: work done a few items ahead of its consumer, and ending them
however the step ends."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_order_ahead(items: Iterable[T], work: Callable[[T], R], threads: int, ahead: int, name: str) -> Iterator[R]:
    """`work(item)` of each item, in order, done by `threads` threads (named `name`) at most
    `ahead` items before the one the caller takes: memory stays bounded, and work that releases
    the GIL runs beside the caller's. The items are drawn in the caller's thread. A caller that
    stops early cancels the work not started."""
    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def wind_down(step: Callable[[], bool]) -> None:
    """Call `step` until it returns True (its threads have ended), through Ctrl-C and SIGTERM too
    (the CLI turns both into KeyboardInterrupt): a thread left running would go on using a
    connection or a file that is about to be closed. An interrupt is re-raised once they have."""
    interrupted = False
    while True:
        try:
            if step():
                break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt
