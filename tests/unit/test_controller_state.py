"""The controller's pure state machine without Ray: jobs queued, started, checked, resized, paused, lost, stopped and
ended by events alone, with the effects the shell would apply; its JSON round trip; the old handle.json."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from orchestrator.controller.events import (
    AppendLog,
    Checkpointed,
    ConvertCheckpoint,
    Effects,
    Ended,
    EndUnstarted,
    Eval,
    Fail,
    Finish,
    GangReturned,
    GangStarted,
    Initial,
    LogMetrics,
    PollStop,
    Probe,
    PublishBlueprint,
    RankLost,
    Release,
    RestartReady,
    SaveSummary,
    SaveTracker,
    ScheduleEntry,
    SetDone,
    SetTags,
    StartGang,
    StopRequest,
    Submitted,
    Telemetry,
    Tick,
    Train,
)
from orchestrator.controller.records import HandleRecord, JobEntry, JobFacts
from orchestrator.controller.state import ControllerState
from orchestrator.core import names
from orchestrator.core.flops import FlopsModel
from orchestrator.core.job_tracker import JobTracker
from orchestrator.core.ledger import Metric
from orchestrator.core.lifecycle import JobLifecycle
from orchestrator.core.reports import EvalReport, TrainReport
from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from tests.unit.test_job_tracker import POWER_W, T0, saturating_loss


def facts(job_id: str, **kw: Any) -> JobFacts:
    base: dict[str, Any] = {
        "name": job_id,
        "priority": 0,
        "group": None,
        "num_workers": 1,
        "min_world": 1,
        "max_world": 1,
        "slot_kind": "CPU",
        "slot_step": 1,
        "resize_cooldown_s": None,
        "max_restarts": 1,
        "max_tokens": 1_000_000,
        "tokens_per_step": 100,
        "zero_stage": 2,
    }
    return JobFacts(**{**base, **kw})


def submit(s: ControllerState, job_id: str, **kw: Any) -> Effects:
    tracker = JobTracker(
        job_id=job_id,
        rule_config=StopRuleConfig(resource=ResourceKind.ENERGY_KWH, window=3, patience=2, eta_rel=0.2),
        max_tokens=kw.get("max_tokens", 1_000_000),
        flops_model=FlopsModel(n_matmul_params=1000, n_layers=2, d_model=16, seq_len=8),
        carbon_intensity_kg_per_kwh=0.4,
        start_t=None,
    )
    entry = JobEntry(
        job_id=job_id, facts=facts(job_id, **kw), tracker=tracker, record=HandleRecord(submitted_t=T0), run_id="r"
    )
    return s.step(Submitted(entry), T0)


def check(s: ControllerState, job_id: str, i: int, loss: float) -> Effects:
    """Telemetry, a training report and an evaluation check at step 10·i."""
    t = T0 + 10 * i
    sample = {"sample_id": f"cpu/{i}", "source": "n/rank0/cpu", "metric": Metric.ENERGY_J.value, "t_s": t}
    s.step(Telemetry(job_id, [{**sample, "value": POWER_W * 10 * i}]), t)
    train = {"step": 10 * i, "tokens": 1000 * i, "loss": loss, "lr": 1e-3, "tokens_per_s": 100.0, "t_s": t}
    s.step(Train(job_id, TrainReport.from_dict(train)), t)
    return s.step(
        Eval(job_id, EvalReport.from_dict({"step": 10 * i, "tokens": 1000 * i, "val_loss": loss, "t_s": t})), t
    )


def of(fx: Effects, kind: type) -> list[Any]:
    return [e for e in fx.items + fx.final if isinstance(e, kind)]


def tags(fx: Effects) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in of(fx, SetTags):
        out.update(e.tags)
    return out


def scheduled(fx: Effects) -> list[tuple[str, str | None, int]]:
    return [(e.entry["action"], e.entry["job_id"], e.entry["to_slots"]) for e in of(fx, ScheduleEntry)]


def result(rank: int, step: int, ended_by: str) -> dict[str, Any]:
    return {
        "rank": rank,
        "step": step,
        "ended_by": ended_by,
        "checkpoint": f"/ck/step{step}",
        "train_s": 5.0,
        "probe_s": 1.0,
    }


def test_a_queued_job_is_started_by_a_tick_and_checked_until_its_rule_stops_it() -> None:
    s = ControllerState()
    submit(s, "a")
    assert s.jobs["a"].state is JobLifecycle.QUEUED
    fx = s.step(Tick({"CPU": 2.0}), T0 + 1)
    assert of(fx, StartGang) == [StartGang("a")]
    assert ("start", "a", 1) in scheduled(fx) and s.jobs["a"].record.slots == 1
    assert tags(fx)[names.STATE] == JobLifecycle.STARTING
    assert s.gang_world("a", adopt=False) == 1
    fx = s.step(GangStarted("a", 1), T0 + 2)
    assert s.jobs["a"].state is JobLifecycle.RUNNING and s.jobs["a"].tracker.start_t == T0 + 2
    for i in range(1, 40):
        fx = check(s, "a", i, saturating_loss(i))
        assert fx.answer is not None
        if fx.answer["halt"]:
            break
    assert fx.answer == {"halt": True, "restart": False, "decision": fx.answer["decision"]}
    assert fx.answer["decision"]["action"] == "stop" and fx.answer["decision"]["reason"] == "marginal_return"
    assert tags(fx)[names.DECISION] == "stop"
    assert [r["action"] for e in of(fx, AppendLog) if e.name == "decisions.jsonl" for r in e.records] == ["stop"]
    # A retried check is answered the same, not decided again.
    again = s.step(Eval("a", EvalReport.from_dict({"step": 10 * i, "tokens": 1000 * i, "val_loss": 1.0, "t_s": 0})), 0)
    assert again.answer == {"halt": True, "restart": False, "decision": None} and again.items == []
    fx = s.step(Tick({"CPU": 2.0}), T0 + 500)
    assert ("stop", "a", 0) in scheduled(fx) and s.jobs["a"].record.slots == 0
    fx = s.step(GangReturned("a", [result(0, 10 * i, "stop")]), T0 + 501)
    assert fx.next == "finish"
    fx = s.step(Finish("a"), T0 + 502)
    assert s.jobs["a"].state is JobLifecycle.STOPPED and of(fx, SaveSummary)
    assert s.jobs["a"].summary is not None and s.jobs["a"].summary["reason"] == "marginal_return"
    assert s.jobs["a"].summary["checkpoint"] == f"/ck/step{10 * i}"
    assert s.step(Release("a"), T0 + 503).items == []  # its slots went back with the scheduler's STOP
    assert of(s.step(Ended("a"), T0 + 504), SetDone) == [SetDone("a")]
    assert s.step(Tick({"CPU": 2.0}), T0 + 505).items == []  # nothing live


def test_a_job_paying_above_its_eta_grows_through_a_converted_checkpoint() -> None:
    s = ControllerState()
    submit(s, "a", max_world=2)
    s.step(Tick({"CPU": 2.0}), T0)
    s.step(GangStarted("a", 1), T0)
    for i in range(1, 16):  # a steady gain: past the warm-up its ratio is its reference, far above η = 0.2 of it
        fx = check(s, "a", i, 5.0 - 0.1 * i)
    assert fx.answer is not None and not fx.answer["halt"]
    fx = s.step(Tick({"CPU": 2.0}), T0 + 100)
    assert ("resize", "a", 2) in scheduled(fx)
    assert s.jobs["a"].record.restart_to == 2 and s.jobs["a"].record.last_resize_t == T0 + 100
    fx = check(s, "a", 16, 3.4)
    assert fx.answer is not None and fx.answer["halt"] and fx.answer["restart"]
    fx = s.step(GangReturned("a", [result(0, 160, "restart")]), T0 + 110)
    assert fx.next == "restart" and of(fx, ConvertCheckpoint) == [ConvertCheckpoint("a", "/ck/step160")]
    assert tags(fx)[names.STATE] == JobLifecycle.RESTARTING
    universal = {"dir": "/ck/universal", "tag": "step160", "universal": True}
    fx = s.step(RestartReady("a", universal, 160), T0 + 115)
    rec = s.jobs["a"].record
    assert fx.next == "restart" and rec.resume == universal and rec.incarnation == 1 and rec.restart_to is None
    assert s.gang_world("a", adopt=False) == 2
    s.step(GangStarted("a", 2), T0 + 120)
    assert rec.restarts == [{"step": 160, "from_workers": 1, "to_workers": 2, "seconds": 20.0}] and rec.world == 2


def test_a_higher_priority_job_pauses_a_running_one_which_resumes_when_it_ends() -> None:
    s = ControllerState()
    submit(s, "low", num_workers=2, min_world=2, max_world=2)
    s.step(Tick({"CPU": 2.0}), T0)
    s.step(GangStarted("low", 2), T0)
    check(s, "low", 1, 5.0)
    submit(s, "high", priority=5, num_workers=2, min_world=2, max_world=2)
    fx = s.step(Tick({"CPU": 2.0}), T0 + 20)
    assert scheduled(fx) == [("pause", "low", 0), ("start", "high", 2)]
    assert of(fx, StartGang) == [StartGang("high")]
    answer = check(s, "low", 2, 4.9).answer
    assert answer is not None and answer["halt"] and answer["restart"]
    fx = s.step(GangReturned("low", [result(0, 20, "restart"), result(1, 20, "restart")]), T0 + 30)
    assert fx.next == "restart" and of(fx, ConvertCheckpoint) == []  # it comes back at its own size
    assert tags(fx)[names.STATE] == JobLifecycle.PAUSING
    fx = s.step(RestartReady("low", {"dir": "/ck", "tag": "step20", "universal": False}, 20), T0 + 31)
    low = s.jobs["low"]
    assert fx.next == "pause" and low.state is JobLifecycle.PAUSED
    assert low.record.schedule == "paused at step 20: waits for 2 ranks' slots"
    assert low.record.restarts[-1]["to_workers"] == 0 and "since" not in low.record.restarts[-1]
    s.step(GangStarted("high", 2), T0 + 32)
    assert s.step(StopRequest("high"), T0 + 40).answer["ok"]  # type: ignore[index]
    s.step(GangReturned("high", [result(0, 10, "stop"), result(1, 10, "stop")]), T0 + 41)
    s.step(Finish("high"), T0 + 42)
    fx = s.step(Release("high"), T0 + 43)
    assert scheduled(fx) == [("stop", "high", 0)]
    assert fx.items and "ended (stopped: user)" in of(fx, ScheduleEntry)[0].entry["reason"]
    s.step(Ended("high"), T0 + 44)
    fx = s.step(Tick({"CPU": 2.0}), T0 + 50)
    assert scheduled(fx)[0] == ("start", "low", 2) and "resumes" in of(fx, ScheduleEntry)[0].entry["reason"]
    assert s.gang_world("low", adopt=False) == 2


def test_a_lost_rank_restarts_from_the_checkpoint_until_max_restarts_then_the_job_fails() -> None:
    s = ControllerState()
    submit(s, "a", max_restarts=1)
    s.step(Tick({"CPU": 1.0}), T0)
    s.step(GangStarted("a", 1), T0)
    check(s, "a", 4, 5.0)
    s.step(Checkpointed("a", {"step": 40, "tokens": 4000, "path": "/ck/step40", "world_size": 1}), T0 + 41)
    s.step(Checkpointed("a", {"step": 30, "tokens": 3000, "path": "/ck/step30", "world_size": 1}), T0 + 42)  # late
    fx = s.step(RankLost("a", "a rank died: killed"), T0 + 50)
    rec = s.jobs["a"].record
    assert fx.next == "restart" and rec.resume == {"dir": "/ck", "tag": "step40", "universal": False}
    assert rec.failures == 1 and rec.incarnation == 1 and s.jobs["a"].state is JobLifecycle.RESTARTING
    assert tags(fx)[names.RESTARTS] == "1" and rec.restarts[-1]["resumed_from"] == 40
    assert s.step(RankLost("a", "gone at restart", failure=False), T0 + 51).next == "restart"  # not its fault
    s.step(GangStarted("a", 1), T0 + 52)
    fx = s.step(RankLost("a", "a rank died: again"), T0 + 60)
    assert fx.next == "fail" and fx.error == "a rank died: again (lost 2 times; cluster.max_restarts=1)"
    fx = s.step(Fail("a", "GangLost: " + fx.error), T0 + 61)
    assert tags(fx)[names.ERROR].startswith("GangLost") and tags(fx)[names.STATE] == JobLifecycle.FAILED
    assert s.jobs["a"].summary is not None and s.jobs["a"].summary["error"].startswith("GangLost")
    fx = s.step(Release("a"), T0 + 62)
    assert scheduled(fx) == [("stop", "a", 0)] and "failed: GangLost" in of(fx, ScheduleEntry)[0].entry["reason"]


def test_a_user_stop_of_a_waiting_job_ends_it_without_starting() -> None:
    s = ControllerState()
    submit(s, "a")
    submit(s, "b")
    fx = s.step(Tick({"CPU": 1.0}), T0)
    assert scheduled(fx) == [("start", "a", 1)] and of(fx, PollStop) == [PollStop(["b"])]
    assert s.jobs["b"].record.schedule == "queued: needs 1 CPU slots, 0 of 1 free"
    fx = s.step(StopRequest("b"), T0 + 1)
    assert fx.answer is not None and fx.answer["ok"] and fx.answer["decision"]["reason"] == "user"
    assert tags(fx) == {names.DECISION: "stop", names.REASON: "user"}
    assert s.step(StopRequest("b"), T0 + 2).items == [SaveTracker("b")]  # asked again: no second decision
    fx = s.step(Tick({"CPU": 1.0}), T0 + 3)
    assert ("stop", "b", 0) in scheduled(fx) and of(fx, EndUnstarted) == [EndUnstarted("b")]
    assert s.jobs["b"].state is JobLifecycle.STOPPING
    s.step(Finish("b"), T0 + 4)
    assert s.jobs["b"].state is JobLifecycle.STOPPED and s.jobs["b"].summary["reason"] == "user"  # type: ignore[index]
    s.step(Ended("b"), T0 + 5)
    assert s.step(StopRequest("b"), T0 + 6).answer == {"ok": False, "error": "job b already ended (stopped)"}
    assert s.step(StopRequest("zz"), T0 + 6).answer == {"ok": False, "error": "no job zz"}


def test_a_json_round_trip_mid_run_gives_the_same_next_effects() -> None:
    s = ControllerState()
    submit(s, "a", max_world=2)
    submit(s, "b")
    s.step(Tick({"CPU": 2.0}), T0)
    s.step(GangStarted("a", 1), T0)
    for i in range(1, 6):
        check(s, "a", i, saturating_loss(i))
    s.step(Checkpointed("a", {"step": 40, "tokens": 4000, "path": "/ck/step40", "world_size": 1}), T0 + 41)
    copy = ControllerState.from_dict(json.loads(json.dumps(s.to_dict())))
    assert copy.to_dict() == s.to_dict()

    def rest(state: ControllerState) -> list[Effects]:
        out = [check(state, "a", i, saturating_loss(i)) for i in range(6, 30)]
        return [*out, state.step(Tick({"CPU": 2.0}), T0 + 400), state.step(RankLost("a", "a rank died"), T0 + 401)]

    original, restored = rest(s), rest(copy)
    assert restored == original
    assert any(fx.answer and fx.answer["halt"] for fx in original)
    assert copy.to_dict() == s.to_dict()


def test_a_handle_json_of_the_earlier_controller_loads_with_the_same_keys() -> None:
    old = {
        "state": "running",
        "submitted_t": T0,
        "slots": 2,
        "schedule": "start: starts: 2 of 2 free slots",
        "world": 2,
        "restart_to": None,
        "resume": {"dir": "/ck", "tag": "step40", "universal": False},
        "incarnation": 1,
        "last_resize_t": None,
        "restarts": [{"step": 40, "from_workers": 2, "to_workers": 2, "reason": "x", "seconds": 1.5}],
        "psi_at_budget": None,
        "train_s": 12.5,
        "probe_s": 1.0,
        "checkpoint": None,
        "failures": 1,
        "error": None,
        "input_error": None,
    }
    record = HandleRecord.from_dict(old)
    assert record.state is JobLifecycle.RUNNING and record.to_dict() == old
    assert HandleRecord.from_dict({"state": "queued"}).to_dict()["slots"] == 0


def test_metrics_logged_once_per_step_and_a_scheduler_slot_metric_per_decision() -> None:
    s = ControllerState()
    submit(s, "a")
    fx = s.step(Tick({"CPU": 1.0}), T0)
    assert [(e.metrics, e.step) for e in of(fx, LogMetrics)] == [({names.SCHEDULER_SLOTS: 1.0}, 0)]
    s.step(GangStarted("a", 1), T0)
    t = T0 + 10
    report = TrainReport.from_dict({"step": 10, "tokens": 1000, "loss": 3.0, "lr": 1e-3, "tokens_per_s": 1.0, "t_s": t})
    assert [e.mark for e in of(s.step(Train("a", report), t), LogMetrics)] == ["train"]
    assert of(s.step(Train("a", report, logged=True), t), LogMetrics) == []  # a retry: answered, not logged


def test_a_retried_blueprint_probe_is_published_again_not_logged_again() -> None:
    """A blueprint is built after the job's lock is let go; a controller killed meanwhile owes it, and the rank's
    retried probe must publish it (idempotent in the store) without logging the probe's metrics twice."""
    s = ControllerState()
    submit(s, "a")
    s.step(Tick({"CPU": 1.0}), T0)
    s.step(GangStarted("a", 1), T0)
    first = s.step(Probe("a", 10, {"grad/norm/x": 1.0}, "0.25", False, False), T0)
    assert [e.step for e in of(first, PublishBlueprint)] == [10] and len(of(first, LogMetrics)) == 1
    retry = s.step(Probe("a", 10, {}, "0.25", False, True), T0)
    assert [e.step for e in of(retry, PublishBlueprint)] == [10] and of(retry, LogMetrics) == []
    assert of(s.step(Probe("a", 20, {}, None, False, True), T0), PublishBlueprint) == []  # periodic: nothing owed
    assert of(s.step(Probe("a", 30, {}, "0.5", True, True), T0), PublishBlueprint) == []  # non-finite: none


@pytest.mark.parametrize("module", ["state", "events", "records"])
def test_the_state_modules_load_no_engine(module: str) -> None:
    code = (
        f"import sys, orchestrator.controller.{module}; "
        "print(sorted(m for m in ('ray', 'mlflow', 'torch', 'deepspeed', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_adapt_jobs_selection_is_logged_once_and_its_measured_memory_reaches_the_summary() -> None:
    from orchestrator.adapt.record import selection_metrics
    from orchestrator.controller.events import Adapted, LogText

    s = ControllerState()
    submit(s, "a")
    s.step(Tick({"CPU": 1.0}), T0)
    s.step(GangStarted("a", 1), T0)
    row = {"id": "ffn.1", "blueprint_norm": 2.0, "local_norm": 1.0, "blended": 0.6, "fraction": 1.0, "ci_width": None}
    sel = {"strategy": "blueprint", "chosen": {"ffn.1": 1.0}, "rows": [row], "trainable_params": 10,
           "total_params": 40, "rho": 0.8, "drift": False, "fallback": "none", "lora": None}  # fmt: skip
    fx = s.step(Adapted("a", {"selection": sel, "base": "/b", "blueprint": "/b/v1.json"}), T0 + 1)
    assert tags(fx)[names.ADAPT_STRATEGY] == "blueprint" and tags(fx)[names.ADAPT_CHOSEN] == "ffn.1"
    logged = of(fx, LogMetrics)[0].metrics
    assert logged == selection_metrics(sel) and logged["adapt/trainable_share"] == 0.25
    assert logged["adapt/blueprint_norm/ffn.1"] == 2.0 and "adapt/ci_width/ffn.1" not in logged
    assert [t.name for t in of(fx, LogText)] == ["adapt/selection.json"]
    again = s.step(Adapted("a", {"selection": {**sel, "strategy": "other"}}), T0 + 2)  # a restarted gang's
    assert of(again, LogMetrics) == [] and s.jobs["a"].adapt["selection"]["strategy"] == "blueprint"
    measured = {"step": 1, "optimizer_state_bytes": 80.0, "gradient_bytes": 40.0, "trainable_params": 10,
                "total_params": 40, "optimizer_state_bytes_if_full": 320.0, "memory_saved_bytes": 240.0}  # fmt: skip
    fx = s.step(Adapted("a", {"measured": measured}), T0 + 3)
    assert of(fx, LogMetrics)[0].metrics["adapt/memory_saved_bytes"] == 240.0 and of(fx, LogMetrics)[0].step == 1
    restored = JobEntry.from_dict(json.loads(json.dumps(s.jobs["a"].to_dict())))
    assert restored.adapt == s.jobs["a"].adapt
    s.step(GangReturned("a", [result(0, 10, "budget")]), T0 + 4)
    s.step(Finish("a"), T0 + 5)
    summary = s.jobs["a"].summary
    assert summary is not None and summary["adapt"]["chosen"] == {"ffn.1": 1.0}
    assert summary["adapt"]["measured"]["optimizer_state_bytes"] == 80.0


def test_the_initial_psi_is_logged_once_at_step_0_and_kept_out_of_the_rule() -> None:
    s = ControllerState()
    submit(s, "a")
    fx = s.step(Initial("a", -6.9, 6.9), T0)
    assert of(fx, LogMetrics) == [LogMetrics("a", {names.PSI_INITIAL: -6.9, names.VAL_LOSS_INITIAL: 6.9}, 0)]
    assert s.step(Initial("a", -5.0, 5.0), T0 + 1).items == []  # a gang restarted before its first checkpoint
    assert s.jobs["a"].tracker.rule.state.checks == 0 and s.jobs["a"].record.psi_initial == -6.9
    assert HandleRecord.from_dict(s.jobs["a"].record.to_dict()).psi_initial == -6.9
    s.step(GangReturned("a", [result(0, 10, "budget")]), T0 + 2)
    s.step(Finish("a"), T0 + 3)
    assert s.jobs["a"].summary is not None and s.jobs["a"].summary["psi_initial"] == -6.9
