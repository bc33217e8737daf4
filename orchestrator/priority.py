"""The control plane's CPU priority: where it shares cores with the ranks, the ranks come first (docs/overhead.md).

The controller actor and the process following a job (`cpr submit`'s driver) lower every thread of theirs to the
lowest priority (Unix nice 19; Ray runs the ranks at its worker niceness, 15). Both mostly wait: the controller
answers a check while the rank that asked is blocked waiting for it, so the answer is not delayed.
"""

from __future__ import annotations

import os

CONTROL_PLANE_NICE = 19


def lower_priority(nice: int = CONTROL_PLANE_NICE) -> None:
    """Every thread of this process to at least `nice` (Linux keeps one per thread; threads started later inherit
    their creator's). Nowhere to do it, or not allowed: the process runs as it is."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            pass
