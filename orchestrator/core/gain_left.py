"""What the rest of the budget would still buy: the evidence of the budget-aware stop rule (`stop.max_loss`).

At a check with Γ_t spent of a horizon B (the Γ the run reaches at its budget), the rule compares an upper estimate
of ΔΨ(Γ_t → B), what is left, with δ of the gain so far. Two estimates, both from plain (Γ, Ψ) checks:

- **slope bound**: the least-squares slope plus its one-sided upper confidence margin (Student t over the
  residuals, so a noisy evaluation widens it), times B − Γ_t, the tightest over the last w, 2w, 3w and 4w checks
  (`slope_bound`). On a concave Ψ(Γ) the tangent lies above the curve, and a slope fitted over a recent stretch is
  at least the tangent's, so r_t·(B − Γ_t) bounds what is left from above; it is loose early and on curves that
  still bend.
- **forecast bound**: the saturating power law Ψ∞ − A·Γ^(−b) (`forecast`) fitted to the checks of the run's later
  part, Ψ̂(B) − Ψ̂(Γ_t), maximised over the exponents b its residuals do not reject (profile likelihood). Taken only
  where the fit is good (R², a saturating exponent) and its latest residuals show no trend it misses.

`left` is the smaller of the two where the forecast is usable, the slope bound elsewhere. A fit whose central estimate
is above the slope bound is not used: on a concave curve nothing above the bound can be left, so that fit's slope
contradicts the recent checks. So the forecast shown with a STOP never says more is left than the rule allowed.
The gain so far is the window's fitted level at Γ_t less Ψ at the first check after the start, so one noisy
evaluation moves neither much.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from orchestrator.core.forecast import Forecast, fit_forecast, profile_gain

CONFIDENCE = 0.95
"""One-sided level of the upper bounds on what is left."""
FIT_TAIL = 0.125
"""The forecast fits the checks with Γ ≥ FIT_TAIL·Γ_t: the run's later part, which says most about its end (the
first checks of a run follow the initialisation transient, not the power law)."""
MIN_FIT_POINTS = 6
FIT_MAX_POINTS = 64
"""At most this many checks of the later part, evenly spaced and the latest always among them, go into the fit: the
rule fits at every check, and neighbouring checks of a long run add little but time."""


@dataclass(frozen=True, kw_only=True)
class GainLeft:
    """The figures of one budget-aware check, all in Ψ units except `horizon` (Γ units)."""

    gain: float
    """Ψ gained since the first check: the window's fitted level at Γ_t − Ψ_first."""
    left: float
    """The upper estimate of what the rest of the budget would buy that the rule compares with δ of the gain."""
    basis: str
    """Which estimate `left` is: "forecast" or "slope"."""
    slope_left: float
    """Upper slope × (B − Γ_t)."""
    forecast_left: float | None = None
    """The forecast's upper bound on Ψ̂(B) − Ψ̂(Γ_t), None where there is no usable fit."""
    forecast_mid: float | None = None
    """The best fit's Ψ̂(B) − Ψ̂(Γ_t) where the fit is usable (then at most `left`)."""
    forecast_note: str | None = None
    """Why the forecast was not used, when it was not."""
    horizon: float
    """B: the Γ at the run's budget (or, without a budget, twice Γ_t: see `stop_rule`)."""
    forecast: Forecast | None = None
    """The fit behind `forecast_mid`, where it is usable (else `forecast_note` says why there is none)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["forecast"] = self.forecast.to_dict() if self.forecast else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GainLeft:
        data = dict(data)
        fc = data.pop("forecast", None)
        return cls(**data, forecast=Forecast.from_dict(fc) if fc else None)


def upper_slope(gammas: Sequence[float], psis: Sequence[float], level: float = CONFIDENCE) -> tuple[float, float]:
    """(fitted Ψ at the last Γ, upper confidence bound of the slope) of the least-squares line over the window."""
    g = np.asarray(gammas, dtype=np.float64)
    p = np.asarray(psis, dtype=np.float64)
    gc = g - g.mean()
    sxx = float(gc @ gc)
    slope = float(gc @ (p - p.mean())) / sxx
    level_now = float(p.mean() + slope * (g[-1] - g.mean()))
    n = g.size
    if n <= 2:
        return level_now, slope
    resid = p - (p.mean() + slope * gc)
    se = math.sqrt(float(resid @ resid) / (n - 2) / sxx)
    return level_now, slope + _t_quantile(level, n - 2) * se


@functools.lru_cache(maxsize=1024)
def _t_quantile(level: float, dof: int) -> float:
    """Student t's `level` quantile (cached: the rule asks for the same few at every check)."""
    return float(stats.t.ppf(level, dof))


SPANS = (1, 2, 3, 4)
"""The slope bound is taken over the last w, 2w, 3w and 4w checks (as many as there are)."""


def slope_bound(g: np.ndarray, p: np.ndarray, *, window: int, level: float = CONFIDENCE) -> float:
    """An upper bound on today's slope dΨ/dΓ: the tightest of the upper-confidence least-squares slopes over the last
    w, 2w, 3w and 4w checks, each at level 1 − (1 − level)/k (Bonferroni over the k spans tried). On a concave
    curve a slope fitted over a recent stretch is at least today's, so each is an upper bound; a longer stretch is
    looser by the curvature and tighter by the noise, which on a flat, noisy stretch is what counts."""
    spans = sorted({min(k * window, g.size) for k in SPANS})
    each = 1.0 - (1.0 - level) / len(spans)
    return min(upper_slope(g[-n:], p[-n:], each)[1] for n in spans)


def gain_left(
    gammas: Sequence[float],
    psis: Sequence[float],
    *,
    psi_first: float,
    horizon: float,
    window: int,
    level: float = CONFIDENCE,
) -> GainLeft:
    """The gain so far and the upper estimate of what Γ_t → `horizon` would still buy, from the run's checks."""
    g = np.asarray(gammas, dtype=np.float64)
    p = np.asarray(psis, dtype=np.float64)
    gamma_now = float(g[-1])
    rest = max(0.0, horizon - gamma_now)
    level_now = upper_slope(g[-window:], p[-window:], level)[0]
    gain = level_now - psi_first
    slope_hi = slope_bound(g, p, window=window, level=level)
    slope_left = max(0.0, slope_hi) * rest
    tail = np.flatnonzero(g >= FIT_TAIL * gamma_now)
    if tail.size > FIT_MAX_POINTS:
        tail = tail[np.unique(np.linspace(0, tail.size - 1, FIT_MAX_POINTS).round().astype(int))]
    fc_left = fc_mid = None
    fit: Forecast | None = None
    note: str | None = None
    if tail.size < MIN_FIT_POINTS:
        note = f"too few checks in the run's later part to fit ({tail.size} < {MIN_FIT_POINTS})"
    else:
        fc = fit_forecast(g[tail], p[tail], eta=None, budget=horizon, min_points=MIN_FIT_POINTS)
        if not fc.ok:
            note = fc.reason
        else:
            note = _misses_trend(fc, g[-window:], p[-window:], level)
            mid = fc.psi_gain_to_budget or 0.0
            if note is None and mid > slope_left:
                # The fit's own slope at Γ_t is steeper than the recent checks allow: it does not describe this curve.
                note = f"its fit says {mid:.4g} is left, more than the recent slope allows"
            if note is None:
                fit, fc_mid = fc, mid
                fc_left = profile_gain(g[tail], p[tail], fc, gamma_now=gamma_now, horizon=horizon, level=level)
    use_fit = fc_left is not None and fc_left < slope_left
    return GainLeft(
        gain=gain,
        left=fc_left if use_fit else slope_left,  # type: ignore[arg-type]
        basis="forecast" if use_fit else "slope",
        slope_left=slope_left,
        forecast_left=fc_left,
        forecast_mid=fc_mid,
        forecast_note=note,
        horizon=horizon,
        forecast=fit,
    )


def _misses_trend(fc: Forecast, g: np.ndarray, p: np.ndarray, level: float) -> str | None:
    """Why the fit cannot speak for the run's end, or None. Over the latest window the checks drift away from the fit
    faster than their noise allows: above it (a schedule's decay, a second descent: the fit would undercount what is
    left) or below it (a curve flattening faster than a power law, e.g. on repeated data: the fit would overcount)."""
    resid = p - np.array([fc.predict(float(x)) for x in g])
    _, up_hi = upper_slope(g, resid, level)
    _, down_hi = upper_slope(g, -resid, level)
    if down_hi < 0:  # the residuals' slope is significantly > 0
        return "the latest checks rise above the fit"
    if up_hi < 0:  # significantly < 0
        return "the latest checks fall below the fit"
    return None


def below(evidence: GainLeft, share: float) -> bool:
    """The budget-aware test at one check: what is left is under `share` of the gain so far (share = δ/(1 − δ):
    left / (gain + left) ≤ δ). A usable forecast's central estimate is at most its bound, so at most `left`."""
    e = evidence
    return e.gain > 0 and e.left < share * e.gain


def explain(evidence: GainLeft, *, max_loss: float, loss: float | None = None) -> str:
    """Why the budget-aware rule decided as it did, in the user's terms (summary, replay, decision log, report).

    `loss`: the validation loss at the check, when Ψ = −loss, to state what is left as a share of it too."""
    e = evidence
    total = e.gain + e.left
    share = e.left / total if total > 0 else math.nan
    of_loss = f", {e.left / loss:.2%} of the validation loss" if loss else ""
    text = (
        f"the rest of the budget would buy ≤ {share:.2%} of the run's gain (δ = {max_loss:.2%}): "
        f"ΔΨ ≤ {e.left:.4g}{of_loss}, gain so far {e.gain:.4g}; "
    )
    if e.basis == "forecast" and e.forecast is not None:
        return text + (
            f"forecast {e.forecast_mid:.4g}, {CONFIDENCE:.0%} bound {e.left:.4g} "
            f"(Ψ∞ − A·Γ^−b, R² {e.forecast.r2:.4f}, {e.forecast.n_points} checks)"
        )
    if e.left <= 0:
        text += f"bound: the recent checks' {CONFIDENCE:.0%} upper slope is ≤ 0 (Ψ no longer rises)"
    else:
        text += f"bound: the recent checks' {CONFIDENCE:.0%} upper slope × the Γ left"
    if e.forecast_mid is not None:
        text += f"; forecast {e.forecast_mid:.4g}"
    if e.forecast_note:
        text += f" (its bound not used: {e.forecast_note})"
    return text
