"""The controller's per-job state stays bounded however many steps a job runs, and its totals stay exact."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.decisions import Action, Decision, StopReason
from orchestrator.core.flops import FlopsModel
from orchestrator.core.job_tracker import CURVE_MAX, DECISIONS_KEPT, JobTracker
from orchestrator.core.ledger import (
    TAIL_POINTS,
    AddResult,
    Metric,
    ResourceLedger,
    TelemetrySample,
)
from orchestrator.core.reports import EvalReport, TrainReport
from orchestrator.core.resources import ResourceKind as K
from orchestrator.core.stop_rule import HISTORY_MAX, StopRuleConfig

T0 = 1_000.0
COUNTERS = [f"n/rank{r}/{kind}" for r in range(2) for kind in ("cpu", "ram", "gpu")]
POWER_SOURCE = "n/psu"
EVAL_EVERY = 10
TOKENS_PER_STEP = 512


def tracker() -> JobTracker:
    """Built as tests/unit/test_job_tracker.py builds one."""
    config = StopRuleConfig(resource=K.ENERGY_KWH, window=3, patience=2, eta_rel=0.2)
    return JobTracker(
        job_id="j",
        rule_config=config,
        enforce=True,
        max_tokens=10**9,
        flops_model=FlopsModel(n_matmul_params=1000, n_layers=2, d_model=16, seq_len=8),
        carbon_intensity_kg_per_kwh=0.4,
        start_t=T0,
    )


class Feed:
    """A job's reports over many steps, with the unbounded reference totals kept alongside.

    Per step: one energy-counter sample per source (one counter resets once), one power sample, a train report,
    and an eval every EVAL_EVERY steps. Every 7th batch arrives one step late, every 5th is sent twice, and every
    1000 steps a batch from 500 steps back is replayed (older than the ledger's tail: rejected as late)."""

    def __init__(self, t: JobTracker) -> None:
        self.t = t
        self.rng = random.Random(0)
        self.counter = dict.fromkeys(COUNTERS, 0.0)
        self.increments: list[float] = []  # every counter increment ever: the reference energy
        self.power: list[tuple[float, float]] = []  # every (t, W) of the power source: the reference trapezoid
        self.batches: dict[int, list[TelemetrySample]] = {}
        self.held: list[TelemetrySample] | None = None
        self.late_sent = 0
        self.step = 0

    def batch(self, s: int) -> list[TelemetrySample]:
        t_s = T0 + s
        out = []
        for src in COUNTERS:
            inc = self.rng.uniform(90.0, 110.0)
            if s > 1:  # a counter's first reading is its baseline (NVML counts from driver load)
                self.increments.append(inc)
            reset = src == "n/rank1/gpu" and s == 12_345
            self.counter[src] = inc if reset else self.counter[src] + inc  # a reset restarts from 0
            out.append(
                TelemetrySample(
                    sample_id=f"{src}/{s}", source=src, metric=Metric.ENERGY_J, t_s=t_s, value=self.counter[src]
                )
            )
        watts = self.rng.uniform(200.0, 300.0)
        self.power.append((t_s, watts))
        out.append(
            TelemetrySample(sample_id=f"psu/{s}", source=POWER_SOURCE, metric=Metric.POWER_W, t_s=t_s, value=watts)
        )
        return out

    def run_to(self, last: int) -> None:
        t = self.t
        for s in range(self.step + 1, last + 1):
            b = self.batches[s] = self.batch(s)
            self.batches.pop(s - 600, None)
            if s % 7 == 0:
                self.held = b  # arrives after the next step's batch
            else:
                t.on_telemetry(b)
                if self.held is not None:
                    t.on_telemetry(self.held)
                    self.held = None
            if s % 5 == 0 and s - 1 in self.batches:
                t.on_telemetry(self.batches[s - 1])  # sent twice
            if s % 1000 == 0:
                t.on_telemetry(self.batches[s - 500])  # a replay older than the tail
                self.late_sent += len(self.batches[s - 500])
            t_s = T0 + s
            t.on_train(TrainReport(step=s, tokens=s * TOKENS_PER_STEP, loss=9.0, lr=1e-3, tokens_per_s=1e4, t_s=t_s))
            if s % EVAL_EVERY == 0:
                # Ψ linear in steps while Γ grows ~linearly: the ratio stays near r_ref, so the rule never stops.
                out = t.on_eval(EvalReport(step=s, tokens=s * TOKENS_PER_STEP, val_loss=10.0 - 1e-4 * s, t_s=t_s))
                assert not out.halt
        if self.held is not None:
            t.on_telemetry(self.held)
            self.held = None
        self.step = last

    def reference_energy_j(self) -> float:
        trapezoid = math.fsum(
            0.5 * (a[1] + b[1]) * (b[0] - a[0]) for a, b in zip(self.power, self.power[1:], strict=False)
        )
        return math.fsum(self.increments) + trapezoid


def sizes(t: JobTracker) -> dict[str, Any]:
    series = t.ledger._series.values()
    return {
        "points": sorted(len(s.points) for s in series),
        "cum": sorted(len(s.cum) for s in series),
        "ids": sorted(len(s.ids) for s in series),
        "decisions": len(t.decisions),
        "window": len(t.rule.state.window_gamma),
    }


def test_tracker_state_is_bounded_and_totals_exact_over_20k_steps() -> None:
    t = tracker()
    feed = Feed(t)
    feed.run_to(10_000)
    at_10k, json_10k = sizes(t), len(json.dumps(t.to_dict()))
    feed.run_to(20_000)
    at_20k, json_20k = sizes(t), len(json.dumps(t.to_dict()))

    assert at_10k == at_20k  # the ledger, decisions and window hold the same number of entries
    assert max(at_20k["points"]) == TAIL_POINTS and max(at_20k["ids"]) == TAIL_POINTS
    assert at_20k["decisions"] <= DECISIONS_KEPT + 1
    assert len(t.curve) <= CURVE_MAX and len(t.rule.state.history_gamma) <= HISTORY_MAX
    assert json_20k <= 1.05 * json_10k  # what the controller persists after every check does not grow either

    # Totals equal the unbounded reference: every increment, every power interval, the last token count.
    totals = t.ledger.exact_totals()
    assert totals[K.ENERGY_KWH] == pytest.approx(feed.reference_energy_j() / 3.6e6, rel=1e-9)
    assert totals[K.TOKENS] == 20_000 * TOKENS_PER_STEP
    assert totals[K.WALL_HOURS] == pytest.approx(20_000 / 3600, rel=1e-12)
    assert t.ledger.totals()[K.ENERGY_KWH] == totals[K.ENERGY_KWH]
    assert t.ledger.n_late == feed.late_sent == 20 * (len(COUNTERS) + 1)
    assert t.ledger.n_rejected == t.ledger.n_late

    # The curve: thinned, its first and latest rows kept, in step order; _last_psi and the CSV follow it.
    steps = [row["step"] for row in t.curve]
    assert steps[0] == EVAL_EVERY and steps[-1] == 20_000 and steps == sorted(steps)
    assert t.summary()["psi"] == pytest.approx(-(10.0 - 1e-4 * 20_000))
    assert len(t.curve_csv().splitlines()) == len(t.curve) + 1
    assert t.view()["ratio"] is not None and t.summary()["last_ratio"] is not None

    restored = JobTracker.from_dict(json.loads(json.dumps(t.to_dict())))
    assert restored.to_dict() == t.to_dict()
    assert restored.ledger.exact_totals() == t.ledger.exact_totals()


def test_decisions_keep_the_newest_and_the_first_stop() -> None:
    t = tracker()
    figures: dict[str, Any] = {
        "psi": -5.0,
        "gamma": 1.0,
        "ratio": None,
        "eta": None,
        "checks_below": 0,
        "warmup": False,
    }
    stop = Decision(check=1, step=10, action=Action.STOP, reason=StopReason.USER, **figures)
    t._record(stop, T0)
    for i in range(3 * DECISIONS_KEPT):
        t._record(Decision(check=i + 2, step=i, action=Action.CONTINUE, reason=None, **figures), T0 + i)
    assert len(t.decisions) == DECISIONS_KEPT + 1
    assert t.rule_decision() == {"job_id": "j", "t_s": T0, **stop.to_dict()}
    assert t.decisions[-1]["step"] == 3 * DECISIONS_KEPT - 1

    # A state saved before the bound (every record) loads bounded the same way, the STOP still first.
    old = t.to_dict()
    old["decisions"] = [old["decisions"][0]] + [{**old["decisions"][-1], "step": i} for i in range(5 * DECISIONS_KEPT)]
    restored = JobTracker.from_dict(json.loads(json.dumps(old)))
    assert len(restored.decisions) == DECISIONS_KEPT + 1 and restored.rule_decision() == t.rule_decision()
    assert JobTracker.from_dict(restored.to_dict()).decisions == restored.decisions


def counter_samples(n: int, source: str = "gpu0") -> list[TelemetrySample]:
    rng = random.Random(n)
    value, out = 0.0, []
    for i in range(n):
        value = rng.uniform(0, 50) if i % 97 == 96 else value + rng.uniform(0, 100)  # resets now and then
        out.append(
            TelemetrySample(sample_id=f"{source}/{i}", source=source, metric=Metric.ENERGY_J, t_s=i, value=value)
        )
    return out


def power_samples(n: int) -> list[TelemetrySample]:
    rng = random.Random(-n)
    return [
        TelemetrySample(
            sample_id=f"p/{i}", source="p", metric=Metric.POWER_W, t_s=i + rng.random(), value=rng.uniform(0, 700)
        )
        for i in range(n)
    ]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), reach=st.integers(1, TAIL_POINTS - 1))
def test_reordering_within_the_tail_gives_the_in_order_totals_exactly(seed, reach):
    """A sample arriving after fewer than TAIL_POINTS newer ones of its series is placed exactly: same floats."""
    samples = counter_samples(3 * TAIL_POINTS) + power_samples(3 * TAIL_POINTS)
    in_order = ResourceLedger()
    in_order.add_many(samples)
    rng = random.Random(seed)
    # Each sample moves at most `reach` places: fewer than `reach` newer ones of its series come before it.
    shuffled = [
        s for _, s in sorted(((i + rng.uniform(0, reach), s) for i, s in enumerate(samples)), key=lambda p: p[0])
    ]
    ledger = ResourceLedger()
    assert ledger.add_many(shuffled)[AddResult.ADDED] == len(samples)
    assert ledger.exact_totals() == in_order.exact_totals()
    assert all(len(s.points) == TAIL_POINTS for s in ledger._series.values())


def test_a_sample_older_than_the_tail_is_rejected_as_late_and_changes_nothing() -> None:
    samples = counter_samples(2 * TAIL_POINTS)
    ledger = ResourceLedger()
    ledger.add_many(samples)
    before = ledger.exact_totals()
    assert ledger.add(samples[0]) is AddResult.REJECTED  # a replay of a dropped sample: not counted twice
    new_but_old = TelemetrySample(sample_id="gpu0/new", source="gpu0", metric=Metric.ENERGY_J, t_s=3.5, value=1e6)
    assert ledger.add(new_but_old) is AddResult.REJECTED  # new, but its interval is already folded in
    assert ledger.n_late == ledger.n_rejected == 2 and ledger.exact_totals() == before
    assert ledger.add(samples[-TAIL_POINTS]) is AddResult.DUPLICATE  # the oldest kept one is still recognised
    assert ledger.n_added == len(samples) and ledger.n_duplicates == 1


def test_a_trimmed_ledger_round_trips_and_goes_on_identically() -> None:
    samples = counter_samples(3 * TAIL_POINTS) + power_samples(3 * TAIL_POINTS)
    a = ResourceLedger(carbon_intensity_kg_per_kwh=0.4)
    a.add_many(samples[:-5] + samples[-4:])  # one recent sample held back
    a.totals()
    b = ResourceLedger.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b.to_dict() == a.to_dict() and b.totals() == a.totals()
    for ledger in (a, b):
        assert ledger.add(samples[-5]) is AddResult.ADDED  # late, inside the tail
        assert ledger.add(samples[1]) is AddResult.REJECTED  # older than the tail
    assert b.to_dict() == a.to_dict() and b.exact_totals() == a.exact_totals()


def test_a_state_saved_with_every_point_loads_into_the_bounded_tail() -> None:
    samples = counter_samples(3 * TAIL_POINTS)
    live = ResourceLedger()
    live.add_many(samples)
    live.totals()
    old = {  # the format before the tail: every point, no prefix, no time range, three counts
        "carbon_intensity_kg_per_kwh": None,
        "flops_model": None,
        "series": [
            {
                "source": "gpu0",
                "metric": "energy_j",
                "wrap": None,
                "points": [[s.t_s, s.sample_id, s.value] for s in samples],
            }
        ],
        "reported": {k.value: v for k, v in live.totals().items()},
        "counts": [len(samples), 0, 0],
    }
    loaded = ResourceLedger.from_dict(old)
    assert loaded.to_dict() == live.to_dict()
    assert loaded.exact_totals() == live.exact_totals()
