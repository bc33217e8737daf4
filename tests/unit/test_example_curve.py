"""The shipped example curve (a real CPU pretraining run) and the rule's decision on it: a golden result."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.replay import read_curve, replay

CURVE = Path(__file__).resolve().parents[2] / "orchestrator" / "examples" / "tiny_llama_stdlib.csv"


def test_the_shipped_curve_is_a_valid_curve_with_every_kind_it_measured():
    curve = read_curve(CURVE)
    assert len(curve) == 64 and curve.psi_from_loss
    assert set(curve.resources) == {
        ResourceKind.TOKENS,
        ResourceKind.FLOPS,
        ResourceKind.WALL_HOURS,
        ResourceKind.ENERGY_KWH,
        ResourceKind.CO2_KG,
    }
    assert curve.psi[0] < curve.psi[-1]  # it learned


def test_golden_decision_with_the_default_rule():
    """The default budget-aware rule (δ = 0.01): the cosine schedule makes this curve fall to its end, so it stops
    late, giving up well under δ of the run's gain (orchestrator/examples/README.md)."""
    curve = read_curve(CURVE)
    config = StopRuleConfig(resource=ResourceKind.ENERGY_KWH)
    assert config.max_loss == 0.01 and config.eta is None and config.eta_rel is None
    r = replay(curve, config)
    assert r.stopped and r.reason == "marginal_return" and r.stop_step == 2480
    assert r.gamma_saved_fraction == pytest.approx(0.028, abs=1e-3)
    assert r.psi_lost == pytest.approx(0.0055, abs=1e-4)
    gain = curve.psi[-1] - curve.psi[0]  # the first check is already after step 0
    assert r.psi_lost / gain == pytest.approx(0.0017, abs=1e-4) and r.psi_lost / gain <= config.max_loss
    # What the STOP was decided on: an upper estimate of what is left, under δ′ of the gain so far, that did bound
    # what the rest of the run actually bought.
    e = r.decisions[-1].evidence
    assert e is not None and e.gain > 0 and e.left < config.max_loss / (1 - config.max_loss) * e.gain
    assert r.psi_lost <= e.left


def test_golden_decision_with_the_former_relative_default():
    """The former default (ρ = 0.02, no warm-up) given explicitly decides as it always did."""
    config = StopRuleConfig(resource=ResourceKind.ENERGY_KWH, eta_rel=0.02, min_checks=0)
    r = replay(read_curve(CURVE), config)
    assert r.stopped and r.reason == "marginal_return" and r.stop_step == 1920
    assert r.gamma_saved_fraction == pytest.approx(0.240, abs=1e-3)
    assert r.psi_lost == pytest.approx(0.124, abs=1e-3)
    assert all(d.evidence is None for d in r.decisions)
    # The forecast made at the stop predicted the Ψ the rest of the run bought to within 10 %.
    assert r.forecast.ok and r.forecast.psi_gain_to_budget == pytest.approx(r.psi_lost, rel=0.1)
