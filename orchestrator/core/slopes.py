"""Slope of Ψ against Γ over a window of checks: the ratio ΔΨ/ΔΓ of the stop rule (§3).

Three estimators, chosen by `stop.estimator`:
- ``endpoint``: (Ψ_last − Ψ_first) / (Γ_last − Γ_first), the paper's literal ΔΨ/ΔΓ; noisy.
- ``lstsq``: ordinary least-squares slope of Ψ on Γ over the window (docs/maths.md: a robust slope over the window).
- ``theil-sen``: the median of pairwise slopes (scipy.stats.theilslopes); robust to a noisy evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np
from scipy import stats


class SlopeEstimator(StrEnum):
    ENDPOINT = "endpoint"
    LSTSQ = "lstsq"
    THEIL_SEN = "theil-sen"


def window_slope(gammas: Sequence[float], psis: Sequence[float], estimator: SlopeEstimator) -> float | None:
    """ΔΨ/ΔΓ over the window, or None when Γ did not move (no resource spent: the ratio is undefined)."""
    if len(gammas) != len(psis):
        raise ValueError("gammas and psis must have the same length")
    if len(gammas) < 2:
        raise ValueError("a slope needs at least two points")
    g = np.asarray(gammas, dtype=np.float64)
    p = np.asarray(psis, dtype=np.float64)
    if g[-1] <= g[0]:
        return None
    if estimator is SlopeEstimator.ENDPOINT:
        return float((p[-1] - p[0]) / (g[-1] - g[0]))
    if estimator is SlopeEstimator.LSTSQ:
        gc = g - g.mean()
        return float(np.dot(gc, p - p.mean()) / np.dot(gc, gc))
    if estimator is SlopeEstimator.THEIL_SEN:
        # Pairs with equal Γ are skipped by theilslopes; at least one pair differs since g[-1] > g[0].
        return float(stats.theilslopes(p, g).slope)
    raise ValueError(f"unknown estimator {estimator!r}")
