"""The budget-aware stop rule (`stop.max_loss` = δ, the default): stop when an upper estimate of what the rest of the
budget would buy is under δ′ = δ/(1 − δ) of the gain so far, for `patience` checks (core.gain_left, core.stop_rule).

Synthetic curves only, a few hundred checks at most: pure and fast."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from orchestrator.core.decisions import Action, Decision, StopReason
from orchestrator.core.gain_left import GainLeft, below, explain
from orchestrator.core.stop_rule import DEFAULT_MAX_LOSS, StopRule, StopRuleConfig
from orchestrator.errors import InputError

DELTA = DEFAULT_MAX_LOSS
SHARE = DELTA / (1 - DELTA)


def feed(rule: StopRule, psis, gammas, *, horizon: float | None = None, first: int = 0) -> list[Decision]:
    """The checks in order (step = 10·index, the first after step 0) until the rule stops."""
    out = []
    for i, (p, g) in enumerate(zip(psis, gammas, strict=True), start=first):
        d = rule.observe(psi=float(p), gamma=float(g), step=10 * (i + 1), horizon=horizon)
        out.append(d)
        if d.stopped:
            break
    return out


def stop_index(decisions: list[Decision]) -> int | None:
    return len(decisions) - 1 if decisions[-1].stopped else None


def power_law(n: int, g0: float, g1: float, seed: int, sigma: float = 0.002):
    """Ψ = −(2 + 5·Γ^−0.5) at n evenly spaced checks (a saturating loss curve), with Gaussian noise."""
    g = np.linspace(g0, g1, n)
    clean = -(2.0 + 5.0 * g**-0.5)
    return g, clean, clean + np.random.default_rng(seed).normal(0.0, sigma, n)


# (n, Γ at the first check, Γ at the budget, seed, the latest share of the run the stop may come at): the first two
# saturate early (1 % of the gain is left after about a quarter of the run), the others late.
POWER_LAWS = [(100, 1.0, 1e4, 0, 0.5), (100, 1.0, 1e4, 1, 0.5), (150, 1.0, 1e3, 0, 0.8), (100, 10.0, 1e4, 2, 0.8)]


@pytest.mark.parametrize(("n", "g0", "g1", "seed", "latest"), POWER_LAWS)
def test_default_rule_stops_a_saturating_power_law_giving_up_at_most_delta(n, g0, g1, seed, latest):
    g, clean, psi = power_law(n, g0, g1, seed)
    rule = StopRule(StopRuleConfig())
    decisions = feed(rule, psi, g, horizon=g1)
    i = stop_index(decisions)
    assert i is not None, "the default rule never stopped a saturating curve"
    stop = decisions[-1]
    assert stop.reason is StopReason.MARGINAL_RETURN and stop.checks_below == 3
    gain_lost = (clean[-1] - clean[i]) / (clean[-1] - clean[0])
    assert 0 < gain_lost <= DELTA  # gave up at most 1 % of the run's gain (of the noiseless curve)
    assert i >= 0.12 * n  # not in the first 12 % of the run
    assert i + 1 <= latest * n  # and it does save: not only at the budget
    # What it decided on: the upper estimate of what is left, and the fit's mid where there is one, under δ′.
    e = stop.evidence
    assert e is not None and below(e, SHARE) and e.horizon == g1
    assert e.left < SHARE * e.gain and (e.forecast_mid is None or e.forecast_mid < SHARE * e.gain)
    assert e.left >= clean[-1] - clean[i] - 3 * 0.002  # an upper estimate: at least what the rest did buy, less noise
    if e.forecast is not None:
        assert stop.forecast == e.forecast  # the STOP shows the fit it decided on
    # Before the stop no decision was taken in warm-up, and budget-aware checks report η_t = δ′·gain / (B − Γ).
    assert all(d.action is Action.CONTINUE for d in decisions[:-1])
    for d in decisions:
        if d.evidence is not None and d.gamma < g1:
            assert d.eta == pytest.approx(SHARE * max(0.0, d.evidence.gain) / (g1 - d.gamma))
            assert d.ratio == pytest.approx(d.evidence.left / (g1 - d.gamma))


def test_a_straight_rising_line_never_stops() -> None:
    rng = np.random.default_rng(0)
    g = np.linspace(1.0, 100.0, 400)
    psi = 0.05 * g + rng.normal(0.0, 0.01, g.size)
    # No budget: the horizon is 2·Γ, and as much again always buys as much as so far.
    decisions = feed(StopRule(StopRuleConfig()), psi, g)
    assert stop_index(decisions) is None and len(decisions) == g.size
    assert all(not below(d.evidence, SHARE) for d in decisions if d.evidence is not None)
    # A budget at the end of 100 checks: never within δ′ of the gain before the very last check.
    few = slice(0, 400, 4)
    assert stop_index(feed(StopRule(StopRuleConfig()), psi[few], g[few], horizon=g[few][-1])) is None
    # 400 checks: a stop can only come once the rest of the budget is < δ′ of what was spent since the first check.
    decisions = feed(StopRule(StopRuleConfig()), psi, g, horizon=g[-1])
    i = stop_index(decisions)
    assert i is None or g[-1] - g[i] < SHARE * (g[i] - g[0])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sigma", [0.01, 0.03])
def test_a_noisy_flat_start_does_not_stop(seed: int, sigma: float) -> None:
    """An accuracy-like Ψ: nothing gained for the first 30 % of the run (noise only), then rising to a plateau."""
    n, flat = 100, 30
    g = np.linspace(1.0, 100.0, n)
    acc = np.where(np.arange(n) < flat, 0.25, 0.25 + 0.6 * (1 - np.exp(-(g - g[flat]) / 20.0)))
    psi = acc + np.random.default_rng(seed).normal(0.0, sigma, n)
    decisions = feed(StopRule(StopRuleConfig()), psi, g, horizon=g[-1])
    i = stop_index(decisions)
    assert i is None or i > flat + 20  # never during the flat start, nor while it climbs
    assert any(d.evidence is not None for d in decisions[:flat])  # the rule did judge the flat start


def test_without_a_budget_the_horizon_is_twice_gamma_and_stops_later_than_a_near_budget() -> None:
    g, _, psi = power_law(150, 1.0, 1e3, 0)
    with_budget = feed(StopRule(StopRuleConfig()), psi, g, horizon=g[-1])
    fallback = feed(StopRule(StopRuleConfig()), psi, g)
    near, far = stop_index(with_budget), stop_index(fallback)
    assert near is not None
    assert far is None or far > near
    assert all(d.evidence.horizon == pytest.approx(2 * d.gamma) for d in fallback if d.evidence is not None)
    # A config budget (a cap on Γ) is the horizon when none is passed: the same decisions as passing it.
    capped = feed(StopRule(StopRuleConfig(budget=float(g[-1]))), psi, g)
    assert [d.to_dict() for d in capped] == [d.to_dict() for d in with_budget]


def evidence(**changes) -> GainLeft:
    figures = {"gain": 1.0, "left": 0.001, "basis": "slope", "slope_left": 0.001, "horizon": 10.0}
    return GainLeft(**{**figures, **changes})


def test_below_needs_what_is_left_under_the_share_of_a_positive_gain() -> None:
    assert below(evidence(), SHARE)  # left 0.1 % of the gain
    assert not below(evidence(left=SHARE * 1.0), SHARE)  # at the limit is not under it
    assert not below(evidence(left=0.02), SHARE)
    assert not below(evidence(gain=0.0, left=0.0), SHARE)  # nothing gained: nothing to stop on
    assert not below(evidence(gain=-1.0, left=0.0), SHARE)


def test_a_forecast_never_says_more_is_left_than_the_rule_allowed() -> None:
    """A curve that saturates faster than a power law (exponential approach, then flat): wherever a fit is used its
    central estimate is at most the bound the rule compared, and the STOP's forecast is that fit or none."""
    g = np.linspace(1.0, 400.0, 200)
    psi = -(2.0 + 3.0 * np.exp(-g / 40.0)) + np.random.default_rng(3).normal(0.0, 0.003, g.size)
    decisions = feed(StopRule(StopRuleConfig()), psi, g, horizon=g[-1])
    used = [d.evidence for d in decisions if d.evidence is not None and d.evidence.forecast is not None]
    assert used, "the fit was usable somewhere on this curve"
    assert all(e.forecast_mid is not None and e.forecast_mid <= e.left + 1e-12 for e in used)
    stop = decisions[-1]
    assert stop.stopped and stop.evidence is not None
    assert stop.forecast is stop.evidence.forecast
    if stop.forecast is not None:
        assert stop.forecast.psi_gain_to_budget <= stop.evidence.left + 1e-12


@pytest.mark.parametrize("cut_before_stop", [1, 2, 10])
def test_state_round_trip_mid_run_decides_exactly_as_the_original(cut_before_stop: int) -> None:
    g, _, psi = power_law(100, 1.0, 1e4, 0)
    whole = feed(StopRule(StopRuleConfig()), psi, g, horizon=g[-1])
    i = stop_index(whole)
    assert i is not None
    cut = i + 1 - cut_before_stop
    first = StopRule(StopRuleConfig())
    part1 = feed(first, psi[:cut], g[:cut], horizon=g[-1])
    assert not part1[-1].stopped and part1[-1].evidence is not None
    if cut_before_stop < 3:
        assert first.state.checks_below == 3 - cut_before_stop  # a run of checks below δ′ in progress
    text = first.to_json()
    restored = StopRule.from_json(text)
    assert restored.config == first.config and restored.config.max_loss == DELTA
    assert restored.state == first.state and restored.to_json() == text
    rest_a = feed(first, psi[cut:], g[cut:], horizon=g[-1], first=cut)
    rest_b = feed(restored, psi[cut:], g[cut:], horizon=g[-1], first=cut)
    as_json = [json.dumps(d.to_dict(), sort_keys=True) for d in rest_b]
    assert as_json == [json.dumps(d.to_dict(), sort_keys=True) for d in rest_a]
    assert as_json == [json.dumps(d.to_dict(), sort_keys=True) for d in whole[cut:]]
    # The STOP, with its evidence and forecast, survives a round trip too.
    stopped = StopRule.from_json(restored.to_json())
    assert stopped.stopped == restored.stopped and Decision.from_dict(rest_b[-1].to_dict()) == rest_b[-1]


def test_explain_states_the_share_left_and_delta() -> None:
    g, _, psi = power_law(100, 1.0, 1e4, 0)
    decisions = feed(StopRule(StopRuleConfig()), psi, g, horizon=g[-1])
    stop = decisions[-1].evidence
    assert stop is not None
    text = explain(stop, max_loss=DELTA, loss=2.5)
    share = stop.left / (stop.gain + stop.left)
    assert f"≤ {share:.2%} of the run's gain" in text and "(δ = 1.00%)" in text and share <= DELTA
    assert f"{stop.left / 2.5:.2%} of the validation loss" in text and "\n" not in text
    assert "of the validation loss" not in explain(stop, max_loss=DELTA)
    on_forecast = [d.evidence for d in decisions if d.evidence is not None and d.evidence.basis == "forecast"]
    assert on_forecast, "no check of a clean power law was judged on its forecast"
    assert "R²" in explain(on_forecast[-1], max_loss=0.05) and "(δ = 5.00%)" in explain(on_forecast[-1], max_loss=0.05)
    slope = explain(evidence(forecast_note="too few checks"), max_loss=DELTA)
    assert "upper slope" in slope and "too few checks" in slope and f"≤ {0.001 / 1.001:.2%}" in slope


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_loss": 0.0}, "stop.max_loss"),
        ({"max_loss": 0.6}, "stop.max_loss"),
        ({"max_loss": math.nan}, "stop.max_loss"),
        ({"max_loss": math.inf}, "stop.max_loss"),
        ({"max_loss": -0.01}, "stop.max_loss"),
        ({"max_loss": "0.01"}, "stop.max_loss"),
        ({"max_loss": 0.01, "eta_rel": 0.1}, "stop.max_loss"),
        ({"max_loss": 0.01, "eta": 1.0}, "stop.max_loss"),
        ({"max_loss": 0.01, "eta": 1.0, "eta_rel": 0.1}, "stop.max_loss"),
        ({"eta": 1.0, "eta_rel": 0.1}, "stop.eta"),
    ],
)
def test_bad_max_loss_names_the_field(changes, field) -> None:
    with pytest.raises(InputError) as err:
        StopRuleConfig(**changes)
    assert err.value.field == field and "\n" not in str(err.value)


def test_the_default_is_budget_aware_and_any_other_threshold_replaces_it() -> None:
    c = StopRuleConfig()
    assert (c.max_loss, c.eta, c.eta_rel, c.window, c.patience, c.min_checks) == (DELTA, None, None, 5, 3, 8)
    assert StopRuleConfig(max_loss=0.5).max_loss == 0.5  # the upper end is allowed
    assert StopRuleConfig(eta_rel=0.1).max_loss is None and StopRuleConfig(eta=0.0).max_loss is None


@pytest.mark.parametrize("threshold", [{"eta_rel": 0.3}, {"eta": 2e-4}])
def test_relative_and_absolute_eta_behave_as_before(threshold) -> None:
    """η = ρ·r_ref (r_ref the first positive window ratio after warm-up) or η absolute: a STOP after `patience`
    window ratios below it; no budget-aware evidence, and the horizon changes nothing."""
    g, _, psi = power_law(100, 1.0, 1e4, 0, sigma=0.0)
    config = StopRuleConfig(min_checks=0, **threshold)
    decisions = feed(StopRule(config), psi, g)
    assert decisions == feed(StopRule(config), psi, g, horizon=float(g[-1]))
    assert all(d.evidence is None for d in decisions)
    ratios = [d.ratio for d in decisions]
    first = next(k for k, r in enumerate(ratios) if r is not None)
    assert first == config.window - 1
    eta = threshold["eta_rel"] * ratios[first] if "eta_rel" in threshold else threshold["eta"]
    assert all(d.eta == pytest.approx(eta) for d in decisions[first:])
    # The stop: the first check closing a run of `patience` ratios below η (a clean concave curve: ratios fall).
    expected = next(k for k in range(first + 2, len(g)) if all(r < eta for r in ratios[k - 2 : k + 1]))
    i = stop_index(decisions)
    assert i == expected and decisions[-1].reason is StopReason.MARGINAL_RETURN
    assert all(r >= eta for r in ratios[first : i - 2])
