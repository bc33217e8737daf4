"""The anchors are the real classes (Ray Tune's TrialPlateauStopper, transformers' EarlyStoppingCallback), driven one
evaluation at a time as their frameworks drive them; the hindsight oracle; and the comparison on the shipped curve."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.compare_stoppers import (
    PATIENCE_DEFAULTS,
    PLATEAU_DEFAULTS,
    compare_stoppers,
    format_table,
    oracle,
    patience,
    plateau,
)
from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.replay import Curve, read_curve

CURVE = Path(__file__).resolve().parents[2] / "orchestrator" / "examples" / "tiny_llama_stdlib.csv"
K = ResourceKind.TOKENS


def loss_curve(losses: list[float], first_step: int = 10) -> Curve:
    """A curve recorded as validation loss (Ψ = −loss), one check every 10 steps, Γ = tokens ∝ steps."""
    steps = tuple(first_step + 10 * i for i in range(len(losses)))
    return Curve(
        source="test",
        steps=steps,
        psi=tuple(-v for v in losses),
        psi_from_loss=True,
        resources={K: tuple(100.0 * s for s in steps)},
    )


def psi_curve(psis: list[float], first_step: int = 10) -> Curve:
    """A curve recorded as Ψ itself (higher is better, e.g. an accuracy)."""
    steps = tuple(first_step + 10 * i for i in range(len(psis)))
    return Curve(source="test", steps=steps, psi=tuple(psis), psi_from_loss=False, resources={K: tuple(steps)})


def plateau_at(curve: Curve, **settings) -> int | None:
    o = plateau(curve, K, **settings)
    return o.stop_index if o.stopped else None


def patience_at(curve: Curve, **settings) -> int | None:
    o = patience(curve, K, **settings)
    return o.stop_index if o.stopped else None


def test_plateau_waits_for_grace_and_num_results_then_stops_on_a_small_std() -> None:
    flat = loss_curve([1.0] * 12)
    assert plateau_at(flat, std=0.01, num_results=4, grace_period=6) == 5  # the 6th result ends the grace period
    assert plateau_at(flat, std=0.01, num_results=4, grace_period=0) == 3  # the 4th result fills the window
    assert plateau_at(flat, std=0.01, num_results=8, grace_period=0) == 7
    assert plateau_at(flat, **PLATEAU_DEFAULTS) == 3
    never = plateau(flat, K, std=0.01, num_results=4, grace_period=20)
    assert not never.stopped and never.stop_index == len(flat) - 1 and never.gamma_saved_fraction == 0


def test_plateau_does_not_stop_while_values_still_move() -> None:
    falling = loss_curve([5.0 - 0.1 * i for i in range(30)])  # std of 4 values 0.1 apart: 0.112
    assert plateau_at(falling, std=0.1, num_results=4, grace_period=4) is None
    assert plateau_at(falling, std=0.2, num_results=4, grace_period=4) == 3
    # It stops once the last `num_results` values are close, not when the curve has flattened for good.
    step_down = loss_curve([3.0] * 6 + [2.0] * 6)
    assert plateau_at(step_down, std=0.01, num_results=4, grace_period=4) == 3


def test_plateau_watches_the_loss_with_mode_min_and_psi_with_mode_max() -> None:
    """`mode` matters with a `metric_threshold`: the value must be past it (loss below, Ψ above) before a stop."""
    losses = [1.0] * 6 + [0.4] * 4
    assert plateau_at(loss_curve(losses), std=0.01, num_results=4, grace_period=0, metric_threshold=0.5) == 9
    # The same run recorded as Ψ (an accuracy-like score, here −loss): mode max, threshold −0.5 must be exceeded.
    as_psi = psi_curve([-v for v in losses])
    assert plateau_at(as_psi, std=0.01, num_results=4, grace_period=0, metric_threshold=-0.5) == 9
    # Were Ψ watched with mode min, −1 ≤ −0.5 would already let it stop at the 4th check.
    from ray.tune.stopper import TrialPlateauStopper

    wrong = TrialPlateauStopper(metric="m", std=0.01, num_results=4, grace_period=0, metric_threshold=-0.5, mode="min")
    assert next(i for i, v in enumerate(as_psi.psi) if wrong("t", {"m": v})) == 3


def test_patience_counts_checks_without_improvement_and_resets_on_one() -> None:
    curve = loss_curve([3.0, 2.9, 2.95, 2.96, 2.8, 2.85, 2.86, 2.87])
    assert patience_at(curve, early_stopping_patience=3, early_stopping_threshold=0.0) == 7
    assert patience_at(curve, early_stopping_patience=2, early_stopping_threshold=0.0) == 3
    assert patience_at(curve, **PATIENCE_DEFAULTS) == 2  # patience 1: the first check that does not improve


def test_patience_threshold_is_the_improvement_that_counts() -> None:
    curve = loss_curve([3.0, 2.995, 2.99, 2.985])  # improvements of 0.005: below a threshold of 0.01
    assert patience_at(curve, early_stopping_patience=2, early_stopping_threshold=0.01) == 2
    assert patience_at(curve, early_stopping_patience=2, early_stopping_threshold=0.0) is None
    # The Trainer keeps the best metric up to date even on improvements below the threshold: each is measured
    # against the last best, so a slow steady descent still exhausts the patience.
    slow = loss_curve([3.0 - 0.004 * i for i in range(10)])
    assert patience_at(slow, early_stopping_patience=3, early_stopping_threshold=0.005) == 3


def test_patience_on_a_psi_curve_is_greater_is_better() -> None:
    rising = [0.1, 0.2, 0.3, 0.25, 0.26, 0.27, 0.31]
    # 0.25, 0.26, 0.27 do not beat 0.3: the third of them stops with patience 3.
    assert patience_at(psi_curve(rising), early_stopping_patience=3, early_stopping_threshold=0.0) == 5
    # The same run as a loss curve (loss = −Ψ, lower is better) stops at the same check.
    assert patience_at(loss_curve([-v for v in rising]), early_stopping_patience=3, early_stopping_threshold=0.0) == 5
    # A steadily rising Ψ never stops it (were it watched as lower-is-better, it would stop at once).
    assert patience_at(psi_curve([0.1 * i for i in range(10)]), **PATIENCE_DEFAULTS) is None


def test_oracle_picks_the_earliest_check_within_tau_of_the_gain() -> None:
    # Step 0 is the initialisation: the gain counts from the first check after it (Ψ −10), to the final Ψ (−2).
    curve = loss_curve([100.0, 10.0, 5.0, 3.0, 2.05, 2.01, 2.0, 2.0], first_step=0)
    o = oracle(curve, K, 0.01)  # within 0.08 of the end: loss ≤ 2.08
    assert o.stop_index == 4 and o.psi_first == -10.0
    assert o.gain_lost_fraction == pytest.approx(0.05 / 8) and o.gain_lost_fraction <= 0.01
    assert oracle(curve, K, 0.001).stop_index == 6  # within 0.008: 2.01 is not
    assert oracle(curve, K, 0.5).stop_index == 2  # within 4: loss 5 (6 − 2 = 4, and 10 is not)
    assert oracle(curve, K, 0.0).stop_index == 6  # the first check at the final Ψ
    # The check before the oracle's gives up more than τ: it is the earliest.
    assert curve.psi[-1] - curve.psi[3] > 0.01 * (curve.psi[-1] - curve.psi[1])


def test_outcome_fractions() -> None:
    curve = loss_curve([4.0, 3.0, 2.5, 2.0])
    o = patience(curve, K, early_stopping_patience=1, early_stopping_threshold=0.6)  # 3.0→2.5 is not 0.6 better
    assert o.stopped and o.stop_index == 2
    assert o.gain_lost_fraction == pytest.approx(0.5 / 2.0)
    assert o.loss_increase_fraction == pytest.approx(0.5 / 2.0)
    assert o.stop_fraction == pytest.approx(30 / 40) and o.gamma_saved_fraction == pytest.approx(10 / 40)
    flat = patience(loss_curve([2.0, 2.0, 2.0]), K, **PATIENCE_DEFAULTS)
    assert math.isnan(flat.gain_lost_fraction)  # no gain: no share of it
    assert math.isnan(patience(psi_curve([0.1, 0.2, 0.2]), K, **PATIENCE_DEFAULTS).loss_increase_fraction)


def test_compare_on_the_shipped_curve() -> None:
    curve = read_curve(CURVE)
    rule = StopRuleConfig(resource=ResourceKind.ENERGY_KWH)
    rows = compare_stoppers(curve, rule, tau=0.01)
    names = [r.name for r in rows]
    assert names[:3] == ["full budget", "cpr", "oracle at τ = 0.01"]
    assert "Ray Tune TrialPlateauStopper, defaults" in names and "HF EarlyStoppingCallback, defaults" in names
    by = {r.name: r for r in rows}
    full, ours, best = by["full budget"], by["cpr"], by["oracle at τ = 0.01"]
    assert not full.stopped and full.gamma_saved_fraction == 0 and full.gain_lost_fraction == 0
    assert ours.setting == "max_loss=0.01 window=5 patience=3"
    assert ours.stopped and ours.stop_step == 2480 and ours.gain_lost_fraction <= 0.01
    # The oracle is the most any stopper giving up ≤ τ could save: ours and every anchor's best at Ψ lost ≤ ours
    # (≤ τ too) save no more.
    assert best.gain_lost_fraction <= 0.01 and best.gamma_saved_fraction >= ours.gamma_saved_fraction
    for r in rows:
        assert r.gamma_saved_fraction == pytest.approx(1 - r.gamma_at_stop / r.gamma_final)
        assert r.psi_first == curve.psi[0]  # the shipped curve's first check is at step 40
        if "best at" in r.name:
            assert r.psi_lost <= ours.psi_lost + 1e-12
            assert r.gamma_saved_fraction <= best.gamma_saved_fraction
    # The rows at the defaults are the real classes at their own defaults.
    assert by["Ray Tune TrialPlateauStopper, defaults"].stop_index == plateau(curve, rule.resource).stop_index
    assert by["HF EarlyStoppingCallback, defaults"].stop_index == patience(curve, rule.resource).stop_index
    table = format_table(rows)
    assert all(r.name in table for r in rows) and "gain lost" in table
    without = compare_stoppers(curve, StopRuleConfig(resource=ResourceKind.ENERGY_KWH, eta_rel=0.02, min_checks=0))
    assert not any(r.name.startswith("oracle") for r in without)
    assert next(r for r in without if r.name == "cpr").setting == "eta_rel=0.02 window=5 patience=3"


def test_the_defaults_are_the_classes_own() -> None:
    import inspect

    from ray.tune.stopper import TrialPlateauStopper
    from transformers import EarlyStoppingCallback

    for cls, defaults in ((TrialPlateauStopper, PLATEAU_DEFAULTS), (EarlyStoppingCallback, PATIENCE_DEFAULTS)):
        params = inspect.signature(cls).parameters
        assert {k: params[k].default for k in defaults} == defaults
