"""A job's lifecycle: the one list of states that the controller sets, the scheduler reads, the metrics count,
the tracking store tags (`cpr.state`) and the CLI shows.

    queued ─► starting ─► running ─┬─► stopping ─► stopped | finished
      ▲                            ├─► cooling ─► stopping          (a STOP into a learning-rate cool-down)
      ▲                            ├─► restarting ─► running        (a resize, or a lost rank)
      └──── paused ◄── pausing ◄───┤
                                   ├─► failed
                                   └─► interrupted ─► (`cpr submit +resume=JOB`) queued

`lost` is no state the controller sets: it is what a reader (`cpr status`, `+resume`) observes of a job whose
record says live while its controller can no longer be reached (its client killed, its machine rebooted).
"""

from __future__ import annotations

from enum import StrEnum


class JobLifecycle(StrEnum):
    QUEUED = "queued"
    """Submitted; waits for the scheduler's START."""
    STARTING = "starting"
    """Its slots given; its ranks are starting."""
    RUNNING = "running"
    COOLING = "cooling"
    """Its STOP is decided; its ranks train the learning-rate cool-down, then end. It holds its slots to the end and the
    scheduler does not move it."""
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
    INTERRUPTED = "interrupted"
    """Its attached client got SIGTERM/SIGINT: checkpointed and ended; `cpr submit +resume=JOB` continues it."""

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


ENDED = frozenset({JobLifecycle.FINISHED, JobLifecycle.STOPPED, JobLifecycle.FAILED, JobLifecycle.INTERRUPTED})
WAITING = frozenset({JobLifecycle.QUEUED, JobLifecycle.PAUSED})
RUNNING = frozenset({JobLifecycle.STARTING, JobLifecycle.RUNNING, JobLifecycle.COOLING, JobLifecycle.RESTARTING})
LIVE = frozenset(JobLifecycle) - ENDED


def lifecycle(state: str | None) -> JobLifecycle | None:
    """A state as a store or a tag spells it; None for one this version does not know (or none)."""
    try:
        return JobLifecycle(state) if state is not None else None
    except ValueError:
        return None


LOST = "lost"
"""The observed state of a job whose record says live but whose controller or cluster is gone (never stored)."""

RESUMABLE = frozenset({JobLifecycle.INTERRUPTED.value, LOST})
"""What `cpr submit +resume=JOB` continues from its last checkpoint."""


def observed_state(state: str, controller_reachable: bool | None) -> str:
    """The state a reader shows: `lost` for a live record whose controller cannot be reached (None: not known,
    e.g. a record of an older version without the controller's identity), the stored state otherwise."""
    known = lifecycle(state)
    if known is not None and known.live and controller_reachable is False:
        return LOST
    return state


def lost_label(last_report_t: float | None, now: float) -> str:
    """`lost (last report 14:02:11 / 7 min ago)` in local time; without a known last report, just `lost`."""
    import time

    if last_report_t is None:
        return LOST
    ago = max(0.0, now - last_report_t)
    since = f"{ago:.0f} s" if ago < 60 else f"{ago / 60:.0f} min" if ago < 5400 else f"{ago / 3600:.1f} h"
    return f"{LOST} (last report {time.strftime('%H:%M:%S', time.localtime(last_report_t))} / {since} ago)"
