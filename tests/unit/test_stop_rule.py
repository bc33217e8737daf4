"""The stop rule (§3): warm-up, patience, η absolute/relative, budget, divergence, exact state round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.decisions import Action, StopReason
from orchestrator.core.slopes import SlopeEstimator, window_slope
from orchestrator.core.stop_rule import StopRule, StopRuleConfig
from orchestrator.errors import InputError

estimators = st.sampled_from(list(SlopeEstimator))


def run(rule: StopRule, psis, gammas, first_step: int = 0):
    out = []
    for i, (p, g) in enumerate(zip(psis, gammas, strict=True), start=first_step):
        d = rule.observe(psi=p, gamma=g, step=i)
        out.append(d)
        if d.stopped:
            break
    return out


@given(
    window=st.integers(2, 8),
    patience=st.integers(1, 6),
    min_checks=st.integers(0, 20),
    eta=st.floats(1e-6, 10.0),
    estimator=estimators,
    n=st.integers(1, 60),
)
def test_flat_curve_stops_after_exactly_patience_checks_past_warmup(window, patience, min_checks, eta, estimator, n):
    rule = StopRule(
        StopRuleConfig(window=window, patience=patience, eta=eta, min_checks=min_checks, estimator=estimator)
    )
    decisions = run(rule, [1.0] * n, [float(i + 1) for i in range(n)])
    first_eligible = max(window, min_checks)  # window full and warm-up over
    expected_stop = first_eligible + patience - 1
    if n < expected_stop:
        assert not decisions[-1].stopped
    else:
        assert decisions[-1].stopped
        assert decisions[-1].check == expected_stop
        assert decisions[-1].reason is StopReason.MARGINAL_RETURN
        assert decisions[-1].checks_below == patience
        assert decisions[-1].ratio == pytest.approx(0.0, abs=1e-12)


@given(
    window=st.integers(2, 8),
    patience=st.integers(1, 4),
    min_checks=st.integers(0, 30),
    psis=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40),
    estimator=estimators,
)
def test_never_stops_in_warmup(window, patience, min_checks, psis, estimator):
    rule = StopRule(
        StopRuleConfig(window=window, patience=patience, eta=1e9, min_checks=min_checks, estimator=estimator)
    )
    for d in run(rule, psis, [float(i) for i in range(len(psis))]):
        if d.warmup:
            assert d.action is Action.CONTINUE


def test_min_fraction_warmup_blocks_decisions_until_that_share_of_budget():
    rule = StopRule(StopRuleConfig(window=2, patience=1, eta=1.0, budget=100.0, min_fraction=0.5))
    decisions = run(rule, [0.0] * 100, [float(g) for g in range(100)])
    assert decisions[-1].stopped and decisions[-1].gamma == 50.0
    assert all(d.warmup for d in decisions[:-1])


@given(
    slope=st.floats(0.5, 100.0),
    eta=st.floats(0.0, 0.49),
    noise=st.lists(st.floats(-1e-3, 1e-3), min_size=30, max_size=30),
    estimator=estimators,
    window=st.integers(2, 6),
)
def test_curve_whose_ratio_stays_above_eta_never_stops(slope, eta, noise, estimator, window):
    gammas = [float(i) for i in range(30)]
    psis = [slope * g + n for g, n in zip(gammas, noise, strict=True)]  # ratio ≈ slope ± tiny noise, ≫ η
    rule = StopRule(StopRuleConfig(window=window, patience=1, eta=eta, estimator=estimator))
    assert not any(d.stopped for d in run(rule, psis, gammas))


def test_budget_cap_stops_even_in_warmup_and_carries_a_forecast():
    rule = StopRule(StopRuleConfig(eta=0.0, budget=10.0, min_checks=1000))
    gammas = np.linspace(1, 12, 12)
    decisions = run(rule, list(-1.0 / gammas), list(gammas))
    stop = decisions[-1]
    assert stop.reason is StopReason.BUDGET and stop.gamma >= 10.0 and stop.warmup
    assert stop.forecast is not None


def test_nonfinite_psi_stops_as_diverged_after_the_configured_run():
    rule = StopRule(StopRuleConfig(eta=0.0, max_nonfinite=2))
    seq = [1.0, math.nan, 2.0, math.inf, -math.inf]  # a finite check resets the run
    decisions = run(rule, seq, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert [d.action for d in decisions] == [Action.CONTINUE] * 4 + [Action.STOP]
    assert decisions[-1].reason is StopReason.DIVERGED
    assert json.loads(json.dumps(decisions[-1].to_dict(), allow_nan=False))["psi"] is None


def test_relative_eta_uses_the_first_positive_ratio_after_warmup():
    rule = StopRule(StopRuleConfig(window=2, patience=1, eta_rel=0.5, min_checks=3))
    # Check 3 is the first after warm-up (min_checks=3); its window (checks 2-3) has ratio 4, so η = 0.5·4 = 2.
    psis = [0.0, 4.0, 8.0, 11.0, 12.0, 12.5]
    decisions = run(rule, psis, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert rule.state.r_ref == pytest.approx(4.0)
    assert rule.eta == pytest.approx(2.0)
    assert decisions[-1].stopped and decisions[-1].check == 5  # ratio 1 < 2
    assert [d.ratio for d in decisions[2:]] == pytest.approx([4.0, 3.0, 1.0])


def test_relative_eta_waits_for_a_positive_reference():
    rule = StopRule(StopRuleConfig(window=2, patience=1, eta_rel=0.5, min_checks=0))
    decisions = run(rule, [0.0, 0.0, -1.0, 1.0, 1.1], [0.0, 1.0, 2.0, 3.0, 4.0])
    assert decisions[2].eta is None and rule.state.r_ref == pytest.approx(2.0)
    assert decisions[-1].stopped


def test_gamma_not_moving_gives_no_ratio_and_no_count():
    rule = StopRule(StopRuleConfig(window=2, patience=1, eta=1.0))
    d = run(rule, [0.0, 0.0, 0.0], [5.0, 5.0, 5.0])
    assert all(x.ratio is None and not x.stopped for x in d)


def test_user_stop_is_recorded_and_final():
    rule = StopRule(StopRuleConfig(eta=0.0))
    rule.observe(psi=1.0, gamma=1.0, step=10)
    d = rule.user_stop(step=11)
    assert d.reason is StopReason.USER and d.psi == 1.0
    with pytest.raises(RuntimeError):
        rule.observe(psi=1.0, gamma=2.0)


def test_decreasing_gamma_is_a_caller_bug():
    rule = StopRule(StopRuleConfig(eta=0.0))
    rule.observe(psi=1.0, gamma=2.0)
    with pytest.raises(ValueError, match="decreased"):
        rule.observe(psi=1.0, gamma=1.0)


@settings(max_examples=60)
@given(
    psis=st.lists(st.one_of(st.floats(-10, 10), st.just(math.nan)), min_size=2, max_size=50),
    cut=st.integers(0, 49),
    window=st.integers(2, 5),
    eta_rel=st.floats(0.01, 1.0),
    estimator=estimators,
)
def test_state_round_trips_and_the_restored_rule_decides_identically(psis, cut, window, eta_rel, estimator):
    cfg = StopRuleConfig(window=window, patience=2, eta_rel=eta_rel, estimator=estimator, max_nonfinite=3)
    gammas = [float(i) ** 1.3 for i in range(len(psis))]
    whole = run(StopRule(cfg), psis, gammas)
    cut = min(cut, len(whole))
    first = StopRule(cfg)
    part1 = run(first, psis[:cut], gammas[:cut])
    text = first.to_json()
    restored = StopRule.from_json(text)
    assert restored.config == cfg and restored.state == first.state and restored.to_json() == text
    if not (part1 and part1[-1].stopped):
        part2 = run(restored, psis[cut:], gammas[cut:], first_step=cut)
        part1 += part2
    assert [d.to_dict() for d in part1] == [d.to_dict() for d in whole]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"window": 1}, "stop.window"),
        ({"patience": 0}, "stop.patience"),
        ({"eta": -0.1}, "stop.eta"),
        ({"eta": math.nan}, "stop.eta"),
        ({"eta_rel": 0.0}, "stop.eta_rel"),
        ({"eta_rel": 1.5}, "stop.eta_rel"),
        ({"eta": 1.0, "eta_rel": 0.5}, "stop.eta"),
        ({"max_loss": 0.01, "eta": 1.0}, "stop.max_loss"),
        ({"budget": 0.0}, "stop.budget"),
        ({"budget": -5.0}, "stop.budget"),
        ({"min_checks": -1}, "stop.min_checks"),
        ({"min_fraction": 0.5}, "stop.min_fraction"),
        ({"min_fraction": 1.0, "budget": 1.0}, "stop.min_fraction"),
        ({"estimator": "median"}, "stop.estimator"),
        ({"resource": "joules"}, "stop.resource"),
        ({"window": 2.5}, "stop.window"),
        ({"max_nonfinite": 0}, "stop.max_nonfinite"),
    ],
)
def test_bad_settings_name_the_field(changes, field):
    with pytest.raises(InputError) as err:
        StopRuleConfig(**changes)
    assert err.value.field == field
    assert "\n" not in str(err.value)


def test_slope_estimators_agree_on_a_line_and_theil_sen_resists_an_outlier():
    g = [1.0, 2.0, 3.0, 4.0, 5.0]
    line = [2.0 * x + 1 for x in g]
    for est in SlopeEstimator:
        assert window_slope(g, line, est) == pytest.approx(2.0)
    spiked = [*line[:4], 100.0]
    assert window_slope(g, spiked, SlopeEstimator.THEIL_SEN) == pytest.approx(2.0)
    assert window_slope(g, spiked, SlopeEstimator.LSTSQ) != pytest.approx(2.0)
    assert window_slope([1.0, 1.0], [0.0, 1.0], SlopeEstimator.LSTSQ) is None
