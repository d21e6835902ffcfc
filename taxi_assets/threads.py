"""Ending a step's helper threads, however the step ends."""

from __future__ import annotations

from collections.abc import Callable


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
