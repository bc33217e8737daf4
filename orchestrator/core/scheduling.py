"""Decisions across jobs over one pool of worker slots: who starts, who stops, who grows or shrinks, who waits.

The policy is pure and runs one tick at a time: the controller hands it the pool's size and every job's state
(its priority, its slots, and its stop rule's latest window ratio ΔΨ/ΔΓ against its own η), applies what comes
back, and calls it again at the next tick. The vocabulary is small and typed, as Ray Tune's schedulers keep
theirs: START, STOP, PAUSE, RESIZE, plus IDLE for slots deliberately left free. CONTINUE is the absence of a
decision. A job's *merit* is ratio/η: above 1 another unit of resource still buys more than its threshold asks.

Jobs of one *group* (a sweep) compete for one result, its best Ψ: a running job whose forecast Ψ at its budget
stays below the Ψ another job of its group already reached is *dominated* — what it has left to spend buys the
group nothing — and is stopped (as ASHA stops a trial below its rung's cutoff, but on where the job's own Ψ(Γ)
curve can still go by its budget rather than on a quantile of others' current Ψ).

A job *cooling* (its STOP decided, its ranks training the learning-rate cool-down before they end) keeps its slots
to its end and is never paused, shrunk, grown or found dominated: its slots free when it ends.

Order within a tick: STOP what its rule (or a user) halted, then dominated jobs; start waiting jobs by priority,
then submission time, making room for one by pausing lower-priority jobs or shrinking the least meritorious ones;
give what is left to the running jobs that pay the most above η; leave the rest idle and say why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from orchestrator.core.lifecycle import JobLifecycle
from orchestrator.core.numbers import finite_or_none
from orchestrator.errors import InputError

PRIORITY_MIN, PRIORITY_MAX = 0, 9
"""Priorities run from 0 (lowest) to 9 (highest)."""


class SlotAction(StrEnum):
    START = "start"
    """A waiting (queued or paused) job takes its slots, all at once (gang start)."""
    STOP = "stop"
    """A halted job ends and frees its slots."""
    PAUSE = "pause"
    """A running job checkpoints and gives its slots to a higher-priority job; it waits to start again."""
    RESIZE = "resize"
    """A running job restarts from its checkpoint at another data-parallel size."""
    IDLE = "idle"
    """Free slots stay free this tick (no job id): the reason says why."""


@dataclass(frozen=True, kw_only=True)
class JobState:
    """What the policy knows of one job at a tick."""

    job_id: str
    priority: int
    submitted_t: float
    status: JobLifecycle
    """The policy's view: QUEUED, RUNNING (its gang starting, running or coming back) or PAUSED."""
    slots: int
    """Slots held now (0 while queued or paused)."""
    requested_slots: int
    """The data-parallel size it asked for: what it starts with."""
    min_slots: int
    """The smallest size it may be shrunk to."""
    max_slots: int
    """The largest size it may grow to."""
    halted: bool = False
    """Its stop rule (or a user) decided STOP."""
    stop_reason: str = ""
    """Why it halted (the stop decision's reason: marginal_return, budget, diverged, user)."""
    cooling: bool = False
    """Its STOP is decided and it trains its cool-down: it holds its slots until it ends, and nothing moves it."""
    ratio: float | None = None
    """Latest window ratio ΔΨ/ΔΓ of its stop rule; None before the window fills."""
    eta: float | None = None
    """Its stop rule's threshold η; None while a relative η awaits its reference."""
    remaining_fraction: float = 1.0
    """Share of its budget still ahead of it."""
    last_resize_t: float | None = None
    slot_step: int = 1
    """Slots per rank: every size it runs at is a multiple of this (a rank with 2 CPUs moves 2 slots at once)."""
    resize_cooldown_s: float | None = None
    """Its own least time between resizes; None: the policy's."""
    group: str | None = None
    """Jobs of one group (a sweep) compete for its best Ψ; None: it competes with nobody."""
    psi: float | None = None
    """Its latest Ψ."""
    psi_at_budget: float | None = None
    """An optimistic forecast of its Ψ at its token budget (`forecast.optimistic_psi_at`); None while too early."""

    def size_at_most(self, n: int) -> int | None:
        """The largest size it may run at that is ≤ n, or None when even its smallest is larger."""
        size = min(n, self.max_slots) // self.slot_step * self.slot_step
        return size if size >= self.min_slots else None

    @property
    def merit(self) -> float | None:
        """ratio/η; None when either is unknown (a job still warming up is neither grown nor shrunk first)."""
        ratio, eta = finite_or_none(self.ratio), finite_or_none(self.eta)
        if ratio is None or eta is None or eta <= 0:
            return None
        return ratio / eta


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Switches and guards of the policy; the defaults grow, shrink, preempt and stop dominated jobs."""

    grow: bool = True
    shrink: bool = True
    preempt: bool = True
    resize_cooldown_s: float = 300.0
    """Least time between two resizes of one job: each costs a checkpoint-restart."""
    min_remaining_to_grow: float = 0.1
    """Do not grow a job with less of its budget ahead than this: the restart would not pay back."""
    dominance: bool = True
    """Stop a grouped job whose forecast Ψ at budget (plus the margin) is below its group's best Ψ."""
    dominance_margin: float = 0.0
    """Ψ units of benefit of the doubt given to a forecast."""


@dataclass(frozen=True, kw_only=True)
class SlotDecision:
    """One decision of a tick, with the figures it was taken on."""

    action: SlotAction
    job_id: str | None
    from_slots: int
    to_slots: int
    reason: str
    ratio: float | None = None
    eta: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "job_id": self.job_id,
            "from_slots": self.from_slots,
            "to_slots": self.to_slots,
            "reason": self.reason,
            "ratio": finite_or_none(self.ratio),
            "eta": finite_or_none(self.eta),
        }


def check_job(job: JobState, total_slots: int) -> None:
    """A job the pool can run: priority in range, sizes consistent and within the pool (else InputError)."""
    if isinstance(job.priority, bool) or not isinstance(job.priority, int):
        raise InputError("priority", f"must be an integer, got {job.priority!r}", f"{PRIORITY_MIN}..{PRIORITY_MAX}")
    if not PRIORITY_MIN <= job.priority <= PRIORITY_MAX:
        raise InputError(
            "priority", f"must lie in {PRIORITY_MIN}..{PRIORITY_MAX}, got {job.priority}", "9 is the most urgent"
        )
    if not 1 <= job.min_slots <= job.requested_slots <= job.max_slots:
        raise InputError(
            f"job {job.job_id}",
            f"slot sizes must satisfy 1 ≤ min ≤ requested ≤ max, got {job.min_slots}, {job.requested_slots}, "
            f"{job.max_slots}",
            "fix the job's sizes",
        )
    if job.slot_step < 1 or any(n % job.slot_step for n in (job.min_slots, job.requested_slots, job.max_slots)):
        raise InputError(
            f"job {job.job_id}",
            f"slot sizes {job.min_slots}, {job.requested_slots}, {job.max_slots} must be multiples of its "
            f"{job.slot_step} slots per rank",
            "fix the job's sizes",
        )
    if job.requested_slots > total_slots:
        raise InputError(
            "cluster.num_workers",
            f"job {job.job_id} needs {job.requested_slots} slots, the pool has {total_slots}: it could never start",
            "ask for fewer workers or add nodes",
        )


def _check_tick(total_slots: int, jobs: Sequence[JobState]) -> None:
    if isinstance(total_slots, bool) or not isinstance(total_slots, int) or total_slots < 1:
        raise InputError("pool", f"must have at least one slot, got {total_slots!r}", None)
    seen: set[str] = set()
    for job in jobs:
        if job.job_id in seen:
            raise InputError("job_id", f"{job.job_id!r} appears twice", "job names must be unique")
        seen.add(job.job_id)
        check_job(job, total_slots)
        held = job.status is JobLifecycle.RUNNING
        if held != (job.slots > 0) or job.slots > job.max_slots:
            raise InputError(f"job {job.job_id}", f"is {job.status.value} holding {job.slots} slots", None)
    held = sum(j.slots for j in jobs)
    if held > total_slots:
        raise InputError("pool", f"jobs hold {held} slots, the pool has {total_slots}", None)


def _cooled(job: JobState, now: float, config: PolicyConfig) -> bool:
    cooldown = config.resize_cooldown_s if job.resize_cooldown_s is None else job.resize_cooldown_s
    return job.last_resize_t is None or now - job.last_resize_t >= cooldown


def _waiting_order(job: JobState) -> tuple[int, float, str]:
    return (-job.priority, job.submitted_t, job.job_id)


def _merit_order(job: JobState) -> tuple[float, float, str]:
    """Least meritorious first; a job without a merit yet counts as paying (it is still warming up)."""
    m = job.merit
    return (math.inf if m is None else m, -job.submitted_t, job.job_id)


def _leaders(jobs: Sequence[JobState], ended: Mapping[str, tuple[float, str]]) -> dict[str, list[tuple[float, str]]]:
    """Per group, its two best (Ψ, job id): ended jobs' bests and live jobs' latest Ψ."""
    best: dict[str, list[tuple[float, str]]] = {g: [v] for g, v in ended.items() if math.isfinite(v[0])}
    for j in jobs:
        psi = finite_or_none(j.psi)
        if j.group is not None and psi is not None:
            best.setdefault(j.group, []).append((psi, j.job_id))
    return {g: sorted(v, reverse=True)[:2] for g, v in best.items()}


def tick(
    total_slots: int,
    jobs: Sequence[JobState],
    *,
    now: float,
    config: PolicyConfig | None = None,
    ended_best: Mapping[str, tuple[float, str]] | None = None,
) -> list[SlotDecision]:
    """This tick's decisions (CONTINUE is implicit). Applying them never puts more slots in use than the pool has.

    `ended_best`: per group, the best (Ψ, job id) of its jobs that have left the pool."""
    config = config or PolicyConfig()
    _check_tick(total_slots, jobs)
    out: list[SlotDecision] = []
    slots = {j.job_id: j.slots for j in jobs}
    status = {j.job_id: j.status for j in jobs}
    decided: set[str] = set()  # one decision per job per tick: each is a checkpoint-restart or an end

    def decide(action: SlotAction, job: JobState | None, to: int, reason: str) -> None:
        out.append(
            SlotDecision(
                action=action,
                job_id=job.job_id if job else None,
                from_slots=slots[job.job_id] if job else 0,
                to_slots=to,
                reason=reason,
                ratio=job.ratio if job else None,
                eta=job.eta if job else None,
            )
        )
        if job is not None:
            slots[job.job_id] = to
            decided.add(job.job_id)

    for job in jobs:
        if job.halted:
            decide(SlotAction.STOP, job, 0, f"halted: {job.stop_reason or 'its stop rule or a user'}")
    if config.dominance:
        leaders = _leaders(jobs, ended_best or {})
        for job in jobs:
            forecast = finite_or_none(job.psi_at_budget)
            moves = not (job.halted or job.cooling) and job.status is JobLifecycle.RUNNING
            if not moves or job.group is None or forecast is None:
                continue
            rivals = [(psi, who) for psi, who in leaders.get(job.group, []) if who != job.job_id]
            if rivals and forecast + config.dominance_margin < rivals[0][0]:
                psi, who = rivals[0]
                decide(
                    SlotAction.STOP,
                    job,
                    0,
                    f"dominated: its forecast Ψ at budget {forecast:.4g} is below the {psi:.4g} {who} reached",
                )
    live = [j for j in jobs if not j.halted and j.job_id not in decided]
    free = total_slots - sum(slots[j.job_id] for j in live)

    def running() -> list[JobState]:
        return [j for j in live if status[j.job_id] is JobLifecycle.RUNNING and slots[j.job_id] > 0]

    def movable() -> list[JobState]:
        """Running jobs no decision has touched yet this tick."""
        return [j for j in running() if j.job_id not in decided and not j.cooling]

    # Room that pausing and shrinking could make only shrinks down the (priority-ordered) queue, so once a job of
    # some size could not get room, no later job of that size or more can: skip the search (it keeps a tick linear).
    no_room_from = math.inf
    for job in sorted((j for j in live if j.status is not JobLifecycle.RUNNING), key=_waiting_order):
        need = job.requested_slots
        if need > free and need >= no_room_from:
            continue
        if need > free and config.preempt:
            victims = sorted(
                (r for r in movable() if r.priority < job.priority), key=lambda r: (r.priority, *_merit_order(r))
            )
            if free + sum(slots[v.job_id] for v in victims) >= need:
                for v in victims:
                    if free >= need:
                        break
                    free += slots[v.job_id]
                    decide(
                        SlotAction.PAUSE, v, 0, f"makes room for {job.job_id} (priority {job.priority} > {v.priority})"
                    )
                    status[v.job_id] = JobLifecycle.PAUSED
        if need > free and config.shrink:
            donors = [
                r
                for r in sorted(movable(), key=_merit_order)
                if r.priority <= job.priority
                and r.merit is not None
                and r.merit < 1
                and slots[r.job_id] > r.min_slots
                and _cooled(r, now, config)
            ]
            if free + sum(slots[d.job_id] - d.min_slots for d in donors) >= need:
                for d in donors:
                    if free >= need:
                        break
                    to = d.size_at_most(slots[d.job_id] - (need - free)) or d.min_slots
                    free += slots[d.job_id] - to
                    decide(
                        SlotAction.RESIZE,
                        d,
                        to,
                        f"shrinks for {job.job_id}: its ratio is {d.merit:.3g}× its η, the lowest",
                    )
        if need > free:
            no_room_from = min(no_room_from, need)
        else:
            free -= need
            verb = "resumes" if job.status is JobLifecycle.PAUSED else "starts"
            decide(SlotAction.START, job, need, f"{verb}: {need} of {free + need} free slots")
            status[job.job_id] = JobLifecycle.RUNNING

    waiting = [j for j in live if status[j.job_id] is not JobLifecycle.RUNNING]
    if free > 0 and config.grow and not waiting:
        candidates = [
            r
            for r in movable()
            if r.merit is not None
            and r.merit > 1
            and slots[r.job_id] < r.max_slots
            and r.remaining_fraction >= config.min_remaining_to_grow
            and _cooled(r, now, config)
        ]
        for r in sorted(candidates, key=_merit_order, reverse=True):
            to = r.size_at_most(slots[r.job_id] + free)
            if to is None or to <= slots[r.job_id]:
                continue  # the free slots are fewer than one more rank of it
            free -= to - slots[r.job_id]
            decide(SlotAction.RESIZE, r, to, f"grows: its ratio is {r.merit:.3g}× its η, the highest")
    if free > 0:
        if waiting:
            why = f"{len(waiting)} waiting job(s) need more slots than are free"
        elif not running():
            why = "no job to run"
        else:
            why = "no running job pays above its η (or may grow now)"
        out.append(SlotDecision(action=SlotAction.IDLE, job_id=None, from_slots=free, to_slots=free, reason=why))
    return out


def apply(jobs: Sequence[JobState], decisions: Sequence[SlotDecision], *, now: float) -> list[JobState]:
    """The jobs after a tick's decisions (what the controller does, minus the engines): halted jobs leave."""
    by_id = {j.job_id: j for j in jobs}
    for d in decisions:
        if d.job_id is None:
            continue
        job = by_id[d.job_id]
        if d.action is SlotAction.STOP:
            del by_id[d.job_id]
        elif d.action is SlotAction.PAUSE:
            by_id[d.job_id] = replace(job, status=JobLifecycle.PAUSED, slots=0)
        elif d.action is SlotAction.START:
            by_id[d.job_id] = replace(job, status=JobLifecycle.RUNNING, slots=d.to_slots)
        elif d.action is SlotAction.RESIZE:
            by_id[d.job_id] = replace(job, slots=d.to_slots, last_resize_t=now)
    return list(by_id.values())
