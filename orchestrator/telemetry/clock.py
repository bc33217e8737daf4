"""A wall clock that never steps: read the wall time once, then advance it with a monotonic clock.

NTP corrections and manual clock changes move `time.time()` by any amount, either way. A counter series stamped
with it would be reordered in the ledger (a backward step looks like a reset and counts energy twice) and its span
stretched (a forward step adds wall hours nobody spent). Stamps from a `SteadyClock` stay on the wall-clock scale
(comparable with other ranks and with MLflow) but only ever advance, at the monotonic clock's rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SteadyClock:
    """t = wall₀ + (monotonic() − monotonic₀): wall time anchored once, step-free after. Both clocks injectable."""

    def __init__(
        self, *, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._monotonic = monotonic
        self._mono0 = monotonic()
        self.wall0 = wall()

    def __call__(self) -> float:
        return self.wall0 + (self._monotonic() - self._mono0)


_PROCESS_CLOCK: SteadyClock | None = None
_LOCK = threading.Lock()


def steady_time() -> float:
    """This process's step-free wall time: one anchor shared by everything that stamps (sampler, rank reports)."""
    global _PROCESS_CLOCK
    if _PROCESS_CLOCK is None:
        with _LOCK:
            if _PROCESS_CLOCK is None:
                _PROCESS_CLOCK = SteadyClock()
    return _PROCESS_CLOCK()
