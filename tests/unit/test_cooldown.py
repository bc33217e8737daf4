"""A STOP into a learning-rate cool-down, in the pure parts: the WSD schedule and its decay shapes, the cool-down's
length, the tracker that keeps its checks from the rule, the state machine's `cooling` state and the scheduler that
leaves a cooling job alone."""

from __future__ import annotations

import json
import math

import pytest

from orchestrator.config.compose import compose_job
from orchestrator.controller.events import Eval, GangStarted, LogMetrics, StopRequest, Tick
from orchestrator.controller.state import ControllerState
from orchestrator.core import names
from orchestrator.core.cooldown import CooldownPlan
from orchestrator.core.decisions import StopReason
from orchestrator.core.job_tracker import JobTracker
from orchestrator.core.lifecycle import JobLifecycle
from orchestrator.core.lr_schedule import LrSchedule, decay_factor
from orchestrator.core.reports import EvalReport
from orchestrator.core.scheduling import JobState, SlotAction, tick
from tests.unit.test_controller_state import check, of, scheduled, submit, tags
from tests.unit.test_job_tracker import T0, energy, run_checks, saturating_loss, tracker

PLAN = CooldownPlan(enabled=True, shape="1-sqrt", fraction=0.2, fixed_steps=None, eval_interval=10, total_steps=1000)


# -- the schedule --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "half"), [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - math.sqrt(0.5))], ids=str)
def test_each_decay_shape_runs_from_one_to_the_floor(shape: str, half: float) -> None:
    assert decay_factor(shape, 0.0, 0.1) == 1.0
    assert decay_factor(shape, 1.0, 0.1) == pytest.approx(0.1)
    assert decay_factor(shape, 0.5, 0.0) == pytest.approx(half)
    with pytest.raises(ValueError, match="unknown decay shape"):
        decay_factor("sqrt", 0.5, 0.0)


def test_wsd_warms_up_holds_then_decays_over_the_budgets_last_fraction() -> None:
    s = compose_job(["train.max_tokens=819200", "train.warmup_steps=10"]).lr_schedule()  # 100 steps of 8,192
    assert (s.kind, s.total_steps, s.decay_steps, s.decay_start) == ("wsd", 100, 20, 80)
    assert s(0) == pytest.approx(0.1) and s(9) == 1.0 and s(79) == 1.0
    assert s(80) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(1 / 20)))
    assert s(99) == pytest.approx(0.1)  # the budget's last step trains at the floor


def test_a_cool_down_replaces_the_budgets_decay_from_the_stop() -> None:
    s = LrSchedule(kind="wsd", warmup_steps=0, total_steps=1000, floor=0.0, shape="linear", decay_steps=200)
    s.cool(400, 80)
    assert s(399) == 1.0
    assert [s(400 + k) for k in (0, 39, 79)] == pytest.approx([1 - 1 / 80, 0.5, 0.0])
    assert s(800) == 0.0  # never the budget's own decay again


def test_a_started_cool_down_travels_in_the_lambda_lr_state_of_a_checkpoint() -> None:
    torch = pytest.importorskip("torch")

    def scheduler() -> tuple:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        s = LrSchedule(kind="wsd", warmup_steps=0, total_steps=100, floor=0.0, shape="linear", decay_steps=20)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, s), s

    opt, sched, s = scheduler()
    for _ in range(30):
        opt.step()
        sched.step()
    s.cool(30, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2, sched2, s2 = scheduler()
    sched2.load_state_dict(state)
    assert (s2.cooldown_start, s2.cooldown_steps) == (30, 10) and sched2.lr_lambdas[0] is s2
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(1 - 7 / 10)  # step index 36, the 7th of 10


# -- the plan ------------------------------------------------------------------------------------------------------
def test_the_cool_down_is_a_fraction_of_the_steps_so_far_in_whole_checks_within_the_budget() -> None:
    assert PLAN.decay_start == 800
    assert PLAN.steps_at(400) == 80 and PLAN.steps_at(410) == 90  # 82 rounded up to whole checks
    assert PLAN.stable(800) and not PLAN.stable(810)
    assert PLAN.cools(StopReason.MARGINAL_RETURN, 400) and PLAN.cools(StopReason.USER, 400)
    assert not PLAN.cools(StopReason.DIVERGED, 400) and not PLAN.cools(StopReason.DOMINATED, 400)
    assert not PLAN.cools(StopReason.MARGINAL_RETURN, 810)  # in the budget's own decay: that is a cool-down
    fixed = CooldownPlan(**{**PLAN.to_dict(), "fixed_steps": 35})
    assert fixed.steps_at(400) == 40 and fixed.steps_at(990) == 10 and fixed.decay_start == 965
    assert not CooldownPlan(**{**PLAN.to_dict(), "enabled": False}).cools(StopReason.MARGINAL_RETURN, 400)


def test_a_job_under_the_rule_defaults_to_wsd_cooling_and_on_stop_halt_turns_it_off() -> None:
    assert compose_job([]).cooldown_plan().enabled
    assert not compose_job(["stop.on_stop=halt"]).cooldown_plan().enabled
    assert not compose_job(["train.schedule=constant"]).cooldown_plan().enabled


# -- the tracker ---------------------------------------------------------------------------------------------------
def cooling_tracker(plan: CooldownPlan = PLAN) -> JobTracker:
    t = tracker()
    t.plan = plan
    return t


def evaluate(t: JobTracker, step: int, loss: float) -> object:
    energy(t, step)
    return t.on_eval(EvalReport(step=step, tokens=step * 100, val_loss=loss, t_s=T0 + step))


def until_stop(t: JobTracker) -> tuple[int, object]:
    """Checks every 10 steps on a saturating curve until the rule's STOP: (checks, its outcome)."""
    for i in range(1, 60):
        out = evaluate(t, 10 * i, saturating_loss(i))
        if out.decision is not None and out.decision.stopped:
            return i, out
    raise AssertionError("no STOP")


def test_the_rules_stop_cools_down_its_checks_never_reach_the_rule_and_its_end_halts() -> None:
    t = cooling_tracker()
    n, stop = until_stop(t)
    assert stop.decision is not None and stop.decision.stopped and not stop.halt  # STOP, into a cool-down
    assert t.cooling and not t.halted and t.stop is not None
    start = stop.decision.step
    c = t.cooldown
    assert c is not None and c.start_step == start and c.steps == PLAN.steps_at(start)
    assert c.decision["val_loss"] == pytest.approx(saturating_loss(n))
    assert t.cooldown_answer() == [start, c.steps]
    assert t.decisions[-1]["cooldown"] == {
        "start_step": start,
        "steps": c.steps,
        "end_step": c.end_step,
        "shape": c.shape,
    }
    checks = t.rule.state.checks
    end = start + c.steps
    loss = c.decision["val_loss"]
    for step in range(start + 10, end, 10):
        loss -= 0.01
        out = evaluate(t, step, loss)
        assert out.decision is None and not out.halt and out.metrics[names.COOLING] == 1.0
    again = JobTracker.from_dict(t.to_dict())  # a controller restarted mid-cool-down goes on where it was
    last = evaluate(again, end, loss - 0.01)
    assert last.halt and last.metrics[names.COOLING] == 0.0
    assert again.rule.state.checks == checks  # not one cool-down check reached the rule
    assert again.halted and not again.cooling
    s = again.summary()["cooldown"]
    assert s["end"]["step"] == end and s["done"] and s["cut"] is None
    assert s["psi_gained"] == pytest.approx(s["end"]["psi"] - s["decision"]["psi"]) and s["psi_gained"] > 0
    assert again.summary()["step"] == end and again.summary()["reason"] == "marginal_return"


def test_the_budgets_own_decay_is_not_the_stable_phase_the_rule_reads() -> None:
    t = cooling_tracker(CooldownPlan(**{**PLAN.to_dict(), "total_steps": 100}))  # decay from step 80
    for step in range(10, 110, 10):
        out = evaluate(t, step, 5.0 - step / 1000)
    assert t.rule.state.checks == 8 and out.decision is None and not out.halt


def test_a_user_stop_cools_from_the_next_check_and_a_second_one_cuts_it_short() -> None:
    t = cooling_tracker()
    run_checks(t, 4)
    d = t.user_stop(step=45, t_s=T0 + 45)
    assert d.reason is StopReason.USER and t.cooling and not t.halted and t.cooldown_answer() is None
    out = evaluate(t, 50, 3.0)
    assert not out.halt and t.cooldown_answer() == [50, 10]
    t.user_stop(step=55, t_s=T0 + 55)
    assert t.halted and not t.cooling and t.cooldown is not None and t.cooldown.cut == "user"


def test_on_stop_halt_and_a_divergence_end_at_once() -> None:
    t = cooling_tracker(CooldownPlan(**{**PLAN.to_dict(), "enabled": False}))
    assert until_stop(t)[1].halt and t.cooldown is None
    t = cooling_tracker()
    run_checks(t, 4)
    t.user_stop(step=45, t_s=T0, reason=StopReason.DIVERGED)
    assert t.halted and t.cooldown is None


# -- the state machine and the scheduler -----------------------------------------------------------------------------
def running_job() -> ControllerState:
    """A state machine with job "a" running on one slot, under PLAN."""
    s = ControllerState()
    submit(s, "a")
    s.jobs["a"].tracker.plan = PLAN
    s.step(Tick({"CPU": 2.0}), T0 + 1)
    s.step(GangStarted("a", 1), T0 + 2)
    return s


def test_a_cooling_job_keeps_its_slots_and_state_until_its_cool_down_ends() -> None:
    s = running_job()
    for i in range(1, 40):
        fx = check(s, "a", i, saturating_loss(i))
        if fx.answer and fx.answer.get("cooldown"):
            break
    e = s.jobs["a"]
    start, steps = fx.answer["cooldown"]
    assert not fx.answer["halt"] and start == 10 * i and e.state is JobLifecycle.COOLING
    assert tags(fx)[names.COOLDOWN] == f"steps {start}→{start + steps} (1-sqrt)"
    fx = s.step(Tick({"CPU": 2.0}), T0 + 1000)
    assert scheduled(fx) == [] and e.record.slots == 1  # nothing moves a cooling job
    s.step(GangStarted("a", 1), T0 + 1001)  # a gang restarted from a checkpoint cools on
    assert e.state is JobLifecycle.COOLING
    for j in range(i + 1, i + steps // 10 + 1):
        fx = check(s, "a", j, saturating_loss(i) - 0.01 * (j - i))
    assert fx.answer["halt"] and "cooldown" not in fx.answer
    logged = {k: v for m in of(fx, LogMetrics) for k, v in m.metrics.items()}
    assert logged[names.PSI_GAINED] == pytest.approx(0.01 * steps / 10)
    assert "Ψ +" in tags(fx)[names.COOLDOWN]
    fx = s.step(Tick({"CPU": 2.0}), T0 + 2000)
    assert ("stop", "a", 0) in scheduled(fx)


def test_cpr_stop_on_a_cooling_job_ends_it_at_its_next_report() -> None:
    s = running_job()
    check(s, "a", 1, 5.0)
    fx = s.step(StopRequest("a", StopReason.USER), T0 + 20)
    assert fx.answer["cooling"] and s.jobs["a"].state is JobLifecycle.COOLING
    fx = s.step(Eval("a", EvalReport(step=20, tokens=2000, val_loss=4.9, t_s=T0 + 20)), T0 + 20)
    assert fx.answer["cooldown"] == [20, 10]
    fx = s.step(StopRequest("a", StopReason.USER), T0 + 25)
    assert not fx.answer["cooling"] and s.answer("a")["halt"]


def test_the_policy_never_pauses_or_shrinks_a_cooling_job() -> None:
    base = {"priority": 0, "submitted_t": 0.0, "requested_slots": 2, "min_slots": 1, "max_slots": 2}
    running = JobState(job_id="c", status=JobLifecycle.RUNNING, slots=2, ratio=0.1, eta=1.0, **base)
    urgent = JobState(job_id="u", status=JobLifecycle.QUEUED, slots=0, **{**base, "priority": 9})
    assert (SlotAction.PAUSE, "c") in [(d.action, d.job_id) for d in tick(2, [running, urgent], now=1000.0)]
    cooling = JobState(job_id="c", status=JobLifecycle.RUNNING, slots=2, cooling=True, ratio=0.1, eta=1.0, **base)
    decisions = tick(2, [cooling, urgent], now=1000.0)
    assert all(d.job_id != "c" for d in decisions) and not any(d.action is SlotAction.START for d in decisions)


def test_the_report_names_the_decision_point_and_what_the_cool_down_gained() -> None:
    from orchestrator.report.data import RunData, Series, StopPoint
    from orchestrator.report.page import run_page, stop_sentence

    c = cooling_tracker()
    until_stop(c)
    start = c.cooldown.start_step
    for step in range(start + 10, c.cooldown.end_step + 10, 10):
        evaluate(c, step, c.cooldown.end["val_loss"] - 0.05)
    summary = c.summary()
    run = RunData(
        run_id="r",
        job_id="j",
        run_name="j",
        status="stopped",
        resource="energy_kwh",
        patience=2,
        decision="stop",
        reason="marginal_return",
        psi=Series(steps=(start, summary["step"]), values=(-3.0, -2.9)),
        gamma={},
        ratio=Series(),
        eta=Series(),
        checks_below=Series(),
        stop=StopPoint(step=start, reason="marginal_return", enforced=True),
        summary=summary,
    )
    assert stop_sentence(run) == (
        f"stopped at step {summary['step']} (marginal_return) after a learning-rate cool-down (1-sqrt) from its STOP "
        f"decided at step {start}"
    )
    page = run_page(run, [])
    assert "validation loss at the decision" in page and "Ψ gained by the cool-down" in page


def test_a_polled_stop_request_acts_once_and_a_new_one_again() -> None:
    s = running_job()
    check(s, "a", 1, 5.0)
    s.step(StopRequest("a", StopReason.USER, request="t1"), T0 + 20)
    s.step(Eval("a", EvalReport(step=20, tokens=2000, val_loss=4.9, t_s=T0 + 20)), T0 + 20)
    again = s.step(StopRequest("a", StopReason.USER, request="t1"), T0 + 22)  # the next poll finds the same tag
    assert again.items == [] and s.jobs["a"].tracker.cooling
    restored = ControllerState.from_dict(json.loads(json.dumps(s.to_dict())))  # a restarted controller knows it too
    assert restored.step(StopRequest("a", StopReason.USER, request="t1"), T0 + 23).items == []
    s.step(StopRequest("a", StopReason.USER, request="t2"), T0 + 24)  # a second `cpr stop`
    assert not s.jobs["a"].tracker.cooling and s.answer("a")["halt"]


def test_a_job_stopped_while_it_waits_ends_without_a_cool_down() -> None:
    s = ControllerState()
    submit(s, "q")
    s.jobs["q"].tracker.plan = PLAN
    fx = s.step(StopRequest("q", StopReason.USER), T0 + 1)
    assert not fx.answer["cooling"] and s.jobs["q"].tracker.halted and s.jobs["q"].tracker.cooldown is None
