"""The controller's per-job state, without Ray: telemetry → Γ, checks → decisions, halts, persistence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from orchestrator.core.decisions import StopReason
from orchestrator.core.flops import FlopsModel
from orchestrator.core.job_tracker import JobTracker
from orchestrator.core.ledger import Metric, TelemetrySample
from orchestrator.core.reports import EvalReport, TrainReport
from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.replay import read_curve, replay

T0 = 1_000.0
POWER_W = 100.0  # a constant 100 W source: energy is exactly 100 J per second


def tracker(**rule: object) -> JobTracker:
    config = StopRuleConfig(
        resource=ResourceKind(rule.pop("resource", "energy_kwh")), window=3, patience=2, eta_rel=0.2, **rule
    )
    return JobTracker(
        job_id="j",
        rule_config=config,
        enforce=True,
        max_tokens=100_000,
        flops_model=FlopsModel(n_matmul_params=1000, n_layers=2, d_model=16, seq_len=8),
        carbon_intensity_kg_per_kwh=0.4,
        start_t=T0,
    )


def energy(t: JobTracker, seconds: int) -> None:
    t.on_telemetry(
        [
            TelemetrySample(
                sample_id=f"cpu/{s}", source="n/rank0/cpu", metric=Metric.ENERGY_J, t_s=T0 + s, value=POWER_W * s
            )
            for s in range(seconds + 1)
        ]
    )


def saturating_loss(check: int) -> float:
    return 2.0 + 3.0 / math.sqrt(check)


def run_checks(t: JobTracker, n: int, *, seconds_per_check: int = 10) -> list:
    outcomes = []
    for i in range(1, n + 1):
        energy(t, i * seconds_per_check)
        step = 10 * i
        t.on_train(
            TrainReport(
                step=step,
                tokens=step * 100,
                loss=saturating_loss(i) + 0.1,
                lr=1e-3,
                tokens_per_s=1e4,
                t_s=T0 + i * seconds_per_check,
            )
        )
        outcomes.append(
            t.on_eval(
                EvalReport(step=step, tokens=step * 100, val_loss=saturating_loss(i), t_s=T0 + i * seconds_per_check)
            )
        )
        if outcomes[-1].halt:
            break
    return outcomes


def test_energy_and_every_kind_come_from_the_samples_fed() -> None:
    t = tracker()
    energy(t, 30)
    out = t.on_eval(EvalReport(step=10, tokens=1000, val_loss=5.0, t_s=T0 + 30))
    assert out.metrics["cpr/gamma/energy_kwh"] == pytest.approx(POWER_W * 30 / 3.6e6)
    assert out.metrics["cpr/gamma/co2_kg"] == pytest.approx(0.4 * POWER_W * 30 / 3.6e6)
    assert out.metrics["cpr/gamma/tokens"] == 1000
    assert out.metrics["cpr/gamma/flops"] == pytest.approx(1000 * t.ledger.flops_model.per_token)
    assert out.metrics["cpr/gamma/wall_hours"] == pytest.approx(30 / 3600)
    assert "cpr/gamma/gpu_hours" not in out.metrics  # no GPU source: absent, not zero
    assert out.metrics["cpr/psi"] == -5.0


def test_the_rule_halts_the_job_and_matches_replay_of_its_own_curve(tmp_path) -> None:
    t = tracker()
    outcomes = run_checks(t, 60)
    assert outcomes[-1].halt and outcomes[-1].decision.reason is StopReason.MARGINAL_RETURN
    assert t.halted and len(t.decisions) == len(outcomes)
    csv = tmp_path / "curve.csv"
    csv.write_text(t.curve_csv())
    again = replay(read_curve(csv), t.rule.config)
    assert again.stopped and again.to_dict()["stop_step"] == outcomes[-1].decision.step


def test_shadow_mode_logs_the_stop_but_keeps_running() -> None:
    t = tracker()
    t.enforce = False
    outcomes = run_checks(t, 40)
    assert not any(o.halt for o in outcomes) and len(outcomes) == 40
    assert t.rule_decision() is not None and t.rule_decision()["reason"] == "marginal_return"
    assert outcomes[-1].decision is None and len(t.curve) == 40  # the curve goes on for a later replay
    budget = t.budget_reached(step=400, t_s=T0 + 500)
    assert budget.reason is StopReason.BUDGET and t.summary()["reason"] == "budget"


def test_user_stop_halts_at_the_next_report_and_is_recorded_once() -> None:
    t = tracker()
    run_checks(t, 3)
    first = t.user_stop(step=30, t_s=T0 + 40)
    again = t.user_stop(step=35, t_s=T0 + 41)
    assert first.reason is StopReason.USER and again is first
    assert t.halted and [d["reason"] for d in t.decisions].count("user") == 1


def test_nonfinite_evaluations_stop_as_diverged() -> None:
    t = tracker()
    energy(t, 50)
    reasons = [t.on_eval(EvalReport(step=i, tokens=i, val_loss=math.nan, t_s=T0 + i)) for i in range(1, 4)]
    assert [o.halt for o in reasons] == [False, False, True]
    assert reasons[-1].decision.reason is StopReason.DIVERGED


def test_nonfinite_training_reports_stop_as_diverged_after_the_tolerance_and_a_finite_one_resets_it() -> None:
    t = tracker(max_nonfinite=2)
    report = {"tokens": 1, "lr": 1e-3, "tokens_per_s": 1.0}
    losses = [math.nan, 3.0, math.inf, math.nan]  # the finite one in between restarts the count
    seen = []
    for i, loss in enumerate(losses, start=1):
        t.on_train(TrainReport(step=5 * i, loss=loss, t_s=T0 + i, **report))
        seen.append(t.train_diverged())
    assert seen[:3] == [None, None, None]
    assert seen[3] is not None and seen[3].reason is StopReason.DIVERGED and seen[3].step == 20 and t.halted
    assert t.train_diverged() is None  # decided once
    assert JobTracker.from_dict(json.loads(json.dumps(t.to_dict()))).nonfinite_train == 2


def test_summary_reports_every_kind_saved_fraction_and_forecast() -> None:
    t = tracker()
    run_checks(t, 60)
    s = t.summary()
    assert s["reason"] == "marginal_return" and s["gamma"]["energy_kwh"] > 0
    assert s["gamma_saved_fraction"] == pytest.approx(1 - s["gamma"]["tokens"] / 100_000)
    assert s["gamma_projected_at_budget"]["tokens"] == pytest.approx(100_000)
    assert s["forecast"] is not None and "ok" in s["forecast"]
    json.dumps(s, allow_nan=False)


def test_round_trip_through_json_continues_identically() -> None:
    a, b = tracker(), tracker()
    run_checks(a, 5)
    run_checks(b, 5)
    restored = JobTracker.from_dict(json.loads(json.dumps(a.to_dict())))
    for t in (restored, b):
        energy(t, 70)
        t.on_eval(EvalReport(step=70, tokens=7000, val_loss=2.9, t_s=T0 + 70))
    assert restored.decisions == b.decisions
    assert restored.ledger.totals() == b.ledger.totals()


def test_power_metrics_are_the_mean_power_between_calls() -> None:
    t = tracker()
    energy(t, 10)
    t.resource_metrics(T0 + 10)
    energy(t, 20)
    m = t.resource_metrics(T0 + 20)
    assert m["power/total_w"] == pytest.approx(POWER_W)
    assert m["energy/n/rank0/cpu_kwh"] == pytest.approx(POWER_W * 20 / 3.6e6)


def test_wall_hours_count_from_the_ranks_start_not_from_the_queue() -> None:
    t = JobTracker(
        job_id="queued",
        rule_config=StopRuleConfig(resource=ResourceKind.WALL_HOURS, window=3, patience=2, eta_rel=0.2),
        max_tokens=100_000,
        start_t=None,
    )
    assert t.start_t is None and t.ledger.totals() == {}  # waiting: no Γ yet
    t.started(T0 + 7200.0)  # two hours in the queue
    t.started(T0 + 9000.0)  # a restart: the start stays the first one
    t.on_train(TrainReport(step=10, tokens=1000, loss=5.0, lr=1e-3, tokens_per_s=1.0, t_s=T0 + 10800.0))
    assert t.start_t == T0 + 7200.0
    assert t.ledger.totals()[ResourceKind.WALL_HOURS] == pytest.approx(1.0)


def test_energy_is_summed_per_node_and_the_nodes_add_up_to_the_jobs_gamma() -> None:
    t = tracker()
    sources = {"a-1a2b3c4d/rank0/cpu": 100.0, "a-1a2b3c4d/rank0/ram": 20.0, "a-5e6f7a8b/rank1/cpu": 50.0}
    t.on_telemetry(
        [
            TelemetrySample(sample_id=f"{src}/{s}", source=src, metric=Metric.ENERGY_J, t_s=T0 + s, value=w * s)
            for src, w in sources.items()
            for s in range(11)
        ]
    )
    s = t.summary()
    assert s["energy_kwh_by_node"] == pytest.approx({"a-1a2b3c4d": 1200 / 3.6e6, "a-5e6f7a8b": 500 / 3.6e6})
    assert math.fsum(s["energy_kwh_by_node"].values()) == pytest.approx(s["gamma"]["energy_kwh"], rel=1e-12)


@pytest.mark.parametrize("kind", ["energy_kwh", "tokens"])
def test_the_budget_aware_default_stops_in_the_flat_part_as_replay_of_its_curve_does(tmp_path, kind: str) -> None:
    """The default η (δ of the gain, Γ at the token budget projected from the job's own rate) halts a job whose loss
    has flattened, with what the rest would buy below δ; `cpr replay` of its curve, told the token budget, stops at
    the same step (the controller and replay project the horizon with one function)."""
    t = JobTracker(
        job_id="j",
        rule_config=StopRuleConfig(resource=ResourceKind(kind)),
        enforce=True,
        max_tokens=100_000,  # 100 checks of 1,000 tokens
        start_t=T0,
    )
    noise = np.random.default_rng(0).normal(0.0, 0.002, 100)
    stop = None
    for i in range(1, 101):
        energy(t, i * 10)
        loss = 2.0 + 3.0 * math.exp(-i / 8.0) + noise[i - 1]  # a numpy float: curve.csv still writes plain numbers
        out = t.on_eval(EvalReport(step=10 * i, tokens=1000 * i, val_loss=loss, t_s=T0 + i * 10))
        if out.halt:
            stop = out.decision
            break
    assert stop is not None and stop.reason is StopReason.MARGINAL_RETURN
    assert 30 <= stop.check <= 80  # in the flat part, well before the budget
    e = stop.evidence
    assert e is not None and e.left < 0.01 / 0.99 * e.gain
    summary = t.summary()
    assert summary["max_loss"] == 0.01 and "of the run's gain" in summary["why"]
    csv = tmp_path / "curve.csv"
    csv.write_text(t.curve_csv())
    again = replay(read_curve(csv), t.rule.config, max_tokens=t.max_tokens)
    assert again.stopped and again.stop_step == stop.step
