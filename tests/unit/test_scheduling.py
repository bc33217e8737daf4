"""The cross-job policy, one tick at a time, without Ray: stops free slots, the queue goes first, preemption and
shrinking make room, growth goes to the job that pays most above its η, idle slots are explained, and no sequence
of ticks ever uses more slots than the pool has."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.lifecycle import JobLifecycle
from orchestrator.core.scheduling import (
    JobState,
    PolicyConfig,
    apply,
    check_job,
    tick,
)
from orchestrator.errors import InputError


def job(job_id: str, *, status: JobLifecycle = JobLifecycle.QUEUED, slots: int = 0, want: int = 1, **kw) -> JobState:
    base = {
        "priority": 5,
        "submitted_t": 0.0,
        "min_slots": 1,
        "max_slots": 8,
        "requested_slots": want,
    }
    base.update(kw)
    return JobState(job_id=job_id, status=status, slots=slots, **base)


def running(job_id: str, slots: int, *, ratio: float | None = None, eta: float | None = 1.0, **kw) -> JobState:
    return job(job_id, status=JobLifecycle.RUNNING, slots=slots, want=kw.pop("want", slots), ratio=ratio, eta=eta, **kw)


def actions(decisions) -> list[tuple[str, str | None, int]]:
    return [(d.action.value, d.job_id, d.to_slots) for d in decisions]


def test_a_stop_hands_its_slots_to_the_waiting_job_in_the_same_tick() -> None:
    jobs = [running("a", 2, halted=True, stop_reason="marginal_return"), job("b", want=2, submitted_t=1.0)]
    d = tick(2, jobs, now=10.0)
    assert actions(d) == [("stop", "a", 0), ("start", "b", 2)]
    assert d[0].from_slots == 2 and d[0].reason == "halted: marginal_return"
    after = apply(jobs, d, now=10.0)
    assert [(j.job_id, j.status, j.slots) for j in after] == [("b", JobLifecycle.RUNNING, 2)]


def test_the_queue_goes_by_priority_then_submission_and_small_jobs_backfill() -> None:
    jobs = [
        running("warming", 1),  # no ratio yet: neither shrunk nor paused for an equal
        job("late-urgent", want=1, priority=9, submitted_t=5.0),
        job("early", want=1, priority=5, submitted_t=1.0),
        job("big", want=4, priority=5, submitted_t=0.5),
        job("later", want=1, priority=5, submitted_t=2.0),
    ]
    d = tick(4, jobs, now=0.0)
    # big (4 slots) cannot start on the 3 free: the next ones fill in behind it, in order
    assert actions(d) == [("start", "late-urgent", 1), ("start", "early", 1), ("start", "later", 1)]


def test_a_higher_priority_job_pauses_the_least_urgent_then_least_meritorious() -> None:
    jobs = [
        running("p3-good", 1, ratio=5.0, priority=3),
        running("p3-poor", 1, ratio=0.5, priority=3),
        running("p4", 1, ratio=0.1, priority=4),
        job("urgent", want=1, priority=8),
    ]
    d = tick(3, jobs, now=0.0)
    assert actions(d) == [("pause", "p3-poor", 0), ("start", "urgent", 1)]
    after = {j.job_id: j for j in apply(jobs, d, now=0.0)}
    assert after["p3-poor"].status is JobLifecycle.PAUSED and after["p3-poor"].slots == 0
    # next tick: the paused job waits; nothing else changes and no slot is free
    assert tick(3, list(after.values()), now=1.0) == []


def test_no_preemption_among_equals_and_none_that_cannot_make_enough_room() -> None:
    # equal priority: b waits; a is below its η but already at its minimum size, so nothing can make room
    assert tick(1, [running("a", 1, ratio=0.1), job("b")], now=0.0) == []
    d = tick(
        3, [running("low", 1, priority=1), running("high", 2, priority=9), job("want3", want=3, priority=5)], now=0
    )
    assert d == []  # pausing "low" frees 1 of the 3 it needs; "high" outranks it: nothing moves


def test_shrinking_the_least_meritorious_job_admits_a_waiting_one() -> None:
    jobs = [
        running("fast", 2, ratio=3.0),
        running("slow", 4, ratio=0.4, min_slots=1),
        running("slower", 2, ratio=0.2, min_slots=2),  # already at its minimum
        job("new", want=2, submitted_t=9.0),
    ]
    d = tick(8, jobs, now=1000.0)
    assert actions(d) == [("resize", "slow", 2), ("start", "new", 2)]
    assert "lowest" in d[0].reason and d[0].from_slots == 4
    after = apply(jobs, d, now=1000.0)
    assert sum(j.slots for j in after) == 8
    assert next(j for j in after if j.job_id == "slow").last_resize_t == 1000.0


def test_shrinking_respects_the_cooldown_and_never_takes_a_paying_job() -> None:
    jobs = [running("slow", 4, ratio=0.4, last_resize_t=900.0), job("new", want=2)]
    assert tick(4, jobs, now=1000.0) == []  # resized 100 s ago; the cooldown is 300 s
    assert actions(tick(4, jobs, now=1200.0)) == [("resize", "slow", 2), ("start", "new", 2)]
    assert tick(4, [running("paying", 4, ratio=2.0), job("new", want=2)], now=0.0) == []


def test_free_slots_go_to_the_job_that_pays_most_above_its_eta() -> None:
    jobs = [
        running("a", 1, ratio=3.0, eta=1.0, max_slots=2),
        running("b", 1, ratio=8.0, eta=2.0, max_slots=4),  # merit 4: the highest
        running("c", 1, ratio=0.5, eta=1.0),  # below its η: never grown
        running("warming", 1, ratio=None),  # no merit yet: never grown
    ]
    d = tick(10, jobs, now=0.0)
    assert actions(d) == [("resize", "b", 4), ("resize", "a", 2), ("idle", None, 2)]
    assert d[-1].reason.startswith("no running job pays above its η")


def test_sizes_move_by_whole_ranks_and_a_job_may_have_its_own_cooldown() -> None:
    # 2 slots per rank: 3 free slots grow it by one rank (2), the odd slot stays idle
    d = tick(7, [running("a", 4, ratio=3.0, slot_step=2, min_slots=2, max_slots=8)], now=0.0)
    assert actions(d) == [("resize", "a", 6), ("idle", None, 1)]
    # shrinking for a waiting job of 1 slot frees a whole rank
    jobs = [running("a", 4, ratio=0.5, slot_step=2, min_slots=2, max_slots=8), job("b", want=1)]
    assert actions(tick(4, jobs, now=0.0)) == [("resize", "a", 2), ("start", "b", 1), ("idle", None, 1)]
    # one free slot is less than one rank: no growth
    wide = running("a", 4, ratio=3.0, slot_step=2, min_slots=2, max_slots=8)
    assert actions(tick(5, [wide], now=0.0)) == [("idle", None, 1)]
    # a job's own cooldown overrides the policy's
    quick = running("a", 1, ratio=3.0, max_slots=2, last_resize_t=0.0, resize_cooldown_s=10.0)
    assert actions(tick(2, [quick], now=11.0)) == [("resize", "a", 2)]
    assert actions(tick(2, [replace(quick, resize_cooldown_s=None)], now=11.0)) == [("idle", None, 1)]
    with pytest.raises(InputError, match="multiples"):
        tick(8, [running("a", 3, slot_step=2, max_slots=8)], now=0.0)


def test_growth_skips_jobs_near_their_end_and_waits_for_the_queue() -> None:
    assert actions(tick(4, [running("end", 1, ratio=9.0, remaining_fraction=0.05)], now=0.0)) == [("idle", None, 3)]
    d = tick(4, [running("a", 1, ratio=9.0), job("big", want=4)], now=0.0, config=PolicyConfig(shrink=False))
    assert actions(d) == [("idle", None, 3)]  # slots are held back for the waiting job, not grown into
    assert "waiting" in d[0].reason


def test_switches_turn_each_move_off() -> None:
    off = PolicyConfig(grow=False, shrink=False, preempt=False)
    assert actions(tick(4, [running("a", 1, ratio=9.0)], now=0.0, config=off)) == [("idle", None, 3)]
    jobs = [running("low", 1, priority=0), job("high", priority=9)]
    assert tick(1, jobs, now=0.0, config=off) == []


@pytest.mark.parametrize(
    ("jobs", "field"),
    [
        ([job("a", priority=10)], "priority"),
        ([job("a", priority=-1)], "priority"),
        ([job("a"), job("a")], "job_id"),
        ([job("a", want=9, max_slots=9)], "cluster.num_workers"),  # can never fit a pool of 4
        ([job("a", want=2, min_slots=3)], "job a"),
        ([running("a", 3), running("b", 2)], "pool"),  # holds more than the pool
    ],
)
def test_bad_jobs_name_their_field(jobs, field: str) -> None:
    with pytest.raises(InputError) as err:
        tick(4, jobs, now=0.0)
    assert err.value.field == field


def test_a_job_that_can_never_fit_is_refused_at_admission() -> None:
    with pytest.raises(InputError, match="could never start"):
        check_job(job("huge", want=3, max_slots=3), total_slots=2)


_job = st.builds(
    lambda i, prio, want, extra, ratio, running_, halted, t: job(
        f"j{i}",
        priority=prio,
        want=want,
        max_slots=want + extra,
        ratio=ratio,
        eta=1.0,
        halted=halted,
        submitted_t=t,
        status=JobLifecycle.RUNNING if running_ else JobLifecycle.QUEUED,
        slots=want if running_ else 0,
    ),
    st.integers(0, 10_000),
    st.integers(0, 9),
    st.integers(1, 4),
    st.integers(0, 4),
    st.one_of(st.none(), st.floats(0, 10)),
    st.booleans(),
    st.booleans(),
    st.floats(0, 100),
)


@given(jobs=st.lists(_job, max_size=12, unique_by=lambda j: j.job_id), pool=st.integers(4, 16), ticks=st.integers(1, 6))
def test_no_sequence_of_ticks_overcommits_the_pool(jobs: list[JobState], pool: int, ticks: int) -> None:
    # keep only the running jobs that fit, as a real pool would have them
    held, fleet = 0, []
    for j in jobs:
        if j.status is JobLifecycle.RUNNING:
            if held + j.slots > pool:
                j = replace(j, status=JobLifecycle.QUEUED, slots=0)
            held += j.slots
        fleet.append(j)
    now = 0.0
    for _ in range(ticks):
        decisions = tick(pool, fleet, now=now)
        touched = [d.job_id for d in decisions if d.job_id is not None]
        assert len(touched) == len(set(touched))  # at most one decision per job per tick
        fleet = apply(fleet, decisions, now=now)
        assert sum(j.slots for j in fleet) <= pool
        assert all(j.min_slots <= j.slots <= j.max_slots for j in fleet if j.status is JobLifecycle.RUNNING)
        assert all(j.slots == 0 for j in fleet if j.status is not JobLifecycle.RUNNING)
        assert not any(j.halted for j in fleet)  # halted jobs stopped and left
        fleet = [replace(j, halted=False) for j in fleet]
        now += 400.0


def test_a_job_whose_forecast_cannot_reach_its_groups_best_is_stopped_and_its_slots_reused() -> None:
    jobs = [
        running("lead", 1, group="sweep", psi=-4.4, psi_at_budget=-4.2),
        running("behind", 1, group="sweep", psi=-5.5, psi_at_budget=-5.0),  # -5.0 < -4.4: dominated
        running("close", 1, group="sweep", psi=-4.6, psi_at_budget=-4.3),  # could still beat -4.4: runs on
        running("alone", 1, psi=-9.0, psi_at_budget=-8.0),  # no group: competes with nobody
        job("next", want=1, group="sweep"),
    ]
    d = tick(4, jobs, now=0.0)
    assert actions(d) == [("stop", "behind", 0), ("start", "next", 1)]
    assert d[0].reason == "dominated: its forecast Ψ at budget -5 is below the -4.4 lead reached"
    # the leader is never dominated by itself, and a job without a forecast yet is left alone
    assert tick(1, [running("lead", 1, group="g", psi=-4.0, psi_at_budget=-4.5)], now=0.0) == []
    assert tick(2, [jobs[0], running("new", 1, group="sweep", psi=-7.0)], now=0.0) == []
    # an ended job's best counts; the margin gives a forecast the benefit of the doubt; the switch turns it off
    ended = {"sweep": (-4.1, "gone")}
    assert actions(tick(1, [jobs[0]], now=0.0, ended_best=ended)) == [("stop", "lead", 0), ("idle", None, 1)]
    assert tick(1, [jobs[0]], now=0.0, ended_best=ended, config=PolicyConfig(dominance_margin=0.2)) == []
    assert tick(1, [jobs[0]], now=0.0, ended_best=ended, config=PolicyConfig(dominance=False)) == []
