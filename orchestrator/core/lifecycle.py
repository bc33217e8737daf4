"""A job's lifecycle: the one list of states that the controller sets, the scheduler reads, the metrics count,
the tracking store tags (`cpr.state`) and the CLI shows.

    queued ─► starting ─► running ─┬─► stopping ─► stopped | finished
      ▲                            ├─► restarting ─► running        (a resize, or a lost rank)
      └──── paused ◄── pausing ◄───┤
                                   └─► failed
"""

from __future__ import annotations

from enum import StrEnum


class JobLifecycle(StrEnum):
    QUEUED = "queued"
    """Submitted; waits for the scheduler's START."""
    STARTING = "starting"
    """Its slots given; its ranks are starting."""
    RUNNING = "running"
    RESTARTING = "restarting"
    """Checkpointed, coming back (at another size after a resize, at the same size after a lost rank)."""
    PAUSING = "pausing"
    """Checkpointing to give its slots to a job of higher priority."""
    PAUSED = "paused"
    """Checkpointed; waits for slots again."""
    STOPPING = "stopping"
    """Its STOP is decided; it ends (a waiting job ends without starting)."""
    FINISHED = "finished"
    """Ended at its token budget."""
    STOPPED = "stopped"
    """Ended by a STOP: the rule's, a user's, the scheduler's or a divergence."""
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        """Its run is closed (or its last writes are owed, see `cpr sync`)."""
        return self in ENDED

    @property
    def live(self) -> bool:
        """It has not ended: `cpr stop` applies to it and `cpr stop --wait` waits for it."""
        return self not in ENDED

    @property
    def waiting(self) -> bool:
        """It waits for the scheduler's START (only a tick moves it out of these states)."""
        return self in WAITING

    @property
    def holds_slots(self) -> bool:
        """Its gang runs (or is coming back): it holds pool slots."""
        return self in RUNNING


ENDED = frozenset({JobLifecycle.FINISHED, JobLifecycle.STOPPED, JobLifecycle.FAILED})
WAITING = frozenset({JobLifecycle.QUEUED, JobLifecycle.PAUSED})
RUNNING = frozenset({JobLifecycle.STARTING, JobLifecycle.RUNNING, JobLifecycle.RESTARTING})
LIVE = frozenset(JobLifecycle) - ENDED


def lifecycle(state: str | None) -> JobLifecycle | None:
    """A state as a store or a tag spells it; None for one this version does not know (or none)."""
    try:
        return JobLifecycle(state) if state is not None else None
    except ValueError:
        return None
