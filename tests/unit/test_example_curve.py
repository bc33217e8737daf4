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
    r = replay(read_curve(CURVE), StopRuleConfig(resource=ResourceKind.ENERGY_KWH))
    assert r.stopped and r.reason == "marginal_return" and r.stop_step == 1920
    assert r.gamma_saved_fraction == pytest.approx(0.240, abs=1e-3)
    assert r.psi_lost == pytest.approx(0.124, abs=1e-3)
    # The forecast made at the stop predicted the Ψ the rest of the run bought to within 10 %.
    assert r.forecast.ok and r.forecast.psi_gain_to_budget == pytest.approx(r.psi_lost, rel=0.1)
