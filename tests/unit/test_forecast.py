"""Forecast: a saturating power law Ψ∞ − A·Γ^(−b) is recovered, and a poor fit gives no forecast but a reason."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.forecast import fit_forecast


def test_recovers_a_known_curve_and_predicts_the_eta_crossing_and_the_gain_to_budget():
    g = np.geomspace(1e15, 1e17, 40)  # FLOPs-sized numbers: the fit rescales Γ
    psi_inf, a, b = -2.0, 3.0e4, 0.3
    psi = psi_inf - a * g ** (-b)
    eta = a * b * 5e16 ** (-b - 1)  # the true marginal return at Γ = 5e16
    f = fit_forecast(g[:30], psi[:30], eta=eta, budget=1e17)
    assert f.ok and f.r2 > 0.999
    assert f.psi_inf == pytest.approx(psi_inf, rel=1e-6)
    assert f.exponent_b == pytest.approx(b, rel=1e-4)
    assert f.gamma_cross == pytest.approx(5e16, rel=1e-3)
    true_gain = (psi_inf - a * 1e17 ** (-b)) - psi[29]
    assert f.psi_gain_to_budget == pytest.approx(true_gain, rel=1e-3)
    assert f.marginal_return(f.gamma_cross) == pytest.approx(eta, rel=1e-6)
    assert f.predict(1e17) == pytest.approx(psi_inf - a * 1e17 ** (-b), rel=1e-6)


def test_noise_only_gives_no_forecast_and_says_why():
    rng = np.random.default_rng(0)
    g = np.linspace(1, 100, 30)
    f = fit_forecast(g, rng.normal(0, 1, 30), eta=0.1)
    assert not f.ok and f.reason


def test_too_few_points_or_a_flat_curve_give_no_forecast():
    assert "too few" in fit_forecast([1, 2, 3], [1, 2, 3], eta=0.1).reason
    assert "constant" in fit_forecast(np.arange(1, 10), np.ones(9), eta=0.1).reason


def test_falling_psi_gives_no_forecast():
    g = np.linspace(1, 50, 20)
    f = fit_forecast(g, -np.sqrt(g), eta=0.1)
    assert not f.ok


def test_eta_zero_never_crosses():
    g = np.geomspace(1, 1e3, 20)
    f = fit_forecast(g, -(g**-0.5), eta=0.0)
    assert f.ok and f.gamma_cross is None


@given(
    psi_inf=st.floats(-10, 0),
    a=st.floats(0.01, 10),
    b=st.floats(0.05, 2.0),
    n=st.integers(4, 30),
    ahead=st.floats(1.0, 100.0),
)
def test_the_optimistic_bound_is_never_below_a_saturating_curve(psi_inf, a, b, n, ahead) -> None:
    from orchestrator.core.forecast import optimistic_psi_at

    g = np.linspace(1.0, 10.0, n)
    psi = psi_inf - a * g ** (-b)
    budget = 10.0 * ahead
    bound = optimistic_psi_at(g, psi, budget)
    assert bound is not None
    assert bound >= psi_inf - a * budget ** (-b) - 1e-9


def test_the_optimistic_bound_extends_a_log_linear_trend_and_needs_four_checks() -> None:
    from orchestrator.core.forecast import optimistic_psi_at

    g = [1.0, 2.0, 4.0, 8.0]
    assert optimistic_psi_at(g, [-5.0, -4.5, -4.0, -3.5], 32.0) == pytest.approx(-2.5)
    assert optimistic_psi_at(g[:3], [-5.0, -4.5, -4.0], 32.0) is None
    assert optimistic_psi_at(g, [-3.5, -4.0, -4.5, -5.0], 32.0) == pytest.approx(-5.0)  # falling: no rise assumed
    # noise about the same line (residuals ±d, orthogonal to the fit) widens it by two standard deviations, 2·√2·d
    d = 0.05
    noisy = optimistic_psi_at(g, [-5.0 + d, -4.5 - d, -4.0 - d, -3.5 + d], 32.0)
    assert noisy == pytest.approx(-2.5 + 2 * np.sqrt(2) * d)
