"""Scores of the windows (Algorithm 2 steps 2–3; docs/select.md): the predictor f_φ of the per-example gradient norm
J from cheap features, its quality on a held-out part of D_small, the length correction, and the kept top fraction.

J(z) = ‖∇_θ L(z; θ_base)‖ costs a backward pass per example; f_φ maps what one forward pass gives every window (the
base model's pooled last hidden state, its loss, log length) to log J with a ridge regression (scikit-learn), so the
whole corpus is scored at the price of one forward pass. Its Spearman ρ against the true J on windows it was not
fitted on says whether its ranking can be trusted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

RIDGE_ALPHAS = tuple(10.0**k for k in range(-3, 5))


@dataclass(frozen=True, kw_only=True)
class PredictorReport:
    """How well f_φ ranks windows it was not fitted on."""

    kind: str
    features: str
    n_fit: int
    n_holdout: int
    spearman: float
    """ρ(f_φ(x), J) on the held-out windows."""
    p_value: float
    alpha: float
    """The ridge penalty cross-validation chose (on the fit part)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Spearman's ρ and its p-value; (nan, nan) when either side is constant or there are fewer than 3 points."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan
    res = stats.spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def _ridge() -> Any:
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))


def fit_predictor(
    features: np.ndarray, log_j: np.ndarray, *, holdout: float, seed: int, feature_names: str
) -> tuple[Any, PredictorReport]:
    """f_φ fitted on D_small minus a random `holdout` share, scored by Spearman ρ on that share, then refitted on all of
    D_small (the model returned is the refit: the report measures the same procedure on fewer points)."""
    x, y = np.asarray(features, dtype=float), np.asarray(log_j, dtype=float)
    n = y.size
    n_hold = max(3, round(holdout * n))
    if n - n_hold < 3:
        raise ValueError(f"{n} sampled windows are too few to fit and hold out {n_hold}")
    order = np.random.default_rng(seed).permutation(n)
    hold, fit = order[:n_hold], order[n_hold:]
    probe = _ridge().fit(x[fit], y[fit])
    rho, p = spearman(probe.predict(x[hold]), y[hold])
    model = _ridge().fit(x, y)
    report = PredictorReport(
        kind="ridge (StandardScaler + RidgeCV)",
        features=feature_names,
        n_fit=int(fit.size),
        n_holdout=int(hold.size),
        spearman=rho,
        p_value=p,
        alpha=float(model[-1].alpha_),
    )
    return model, report


@dataclass(frozen=True, kw_only=True)
class LengthBias:
    """log score regressed on log length over every window: the slope taken out, and Spearman ρ(score, length)
    before and after."""

    slope: float
    intercept: float
    rho_before: float
    rho_after: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def length_bias(log_score: np.ndarray, length: np.ndarray) -> LengthBias:
    """The least-squares line of log score on log length, and how much of the ranking length explains."""
    y, x = np.asarray(log_score, dtype=float), np.log(np.asarray(length, dtype=float))
    if np.ptp(x) == 0:
        slope, intercept = 0.0, float(y.mean())
    else:
        slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
    after = y - slope * x
    return LengthBias(slope=slope, intercept=intercept, rho_before=spearman(y, x)[0], rho_after=spearman(after, x)[0])


def corrected(log_score: np.ndarray, length: np.ndarray, bias: LengthBias) -> np.ndarray:
    """log score with the length trend regressed out (the residual, up to the constant)."""
    return np.asarray(log_score, dtype=float) - bias.slope * np.log(np.asarray(length, dtype=float))


def window_scores(
    kind: str, *, log_predicted: np.ndarray, loss: np.ndarray, length: np.ndarray, length_correction: bool, seed: int
) -> tuple[np.ndarray, LengthBias]:
    """The score every window is ranked by under `kind` (select.score), and the length bias of the prediction:
    predicted: log Ĵ, with the length trend regressed out when `length_correction`; loss: the base model's loss;
    random: a seeded uniform draw (the top q of it is a random q)."""
    bias = length_bias(log_predicted, length)
    if kind == "predicted":
        return (corrected(log_predicted, length, bias) if length_correction else np.asarray(log_predicted)), bias
    if kind == "loss":
        return np.asarray(loss, dtype=float), bias
    if kind == "random":
        return np.random.default_rng([seed, 1]).random(np.asarray(length).size), bias
    raise ValueError(f"unknown score {kind!r}")


def choose(scores: np.ndarray | None, n: int, fraction: float, seed: int, skip_top: float = 0.0) -> np.ndarray:
    """Indices of the kept windows, ascending: ⌈q·n⌉ windows by descending score after the top ⌊skip_top·n⌋ (ties:
    the earlier window), or a seeded random draw of as many when `scores` is None."""
    if not 0.0 < fraction <= 1.0 or not 0.0 <= skip_top < 1.0 or fraction + skip_top > 1.0 + 1e-12:
        raise ValueError(f"fraction {fraction} and skip_top {skip_top}: need 0 < q, 0 ≤ skip, q + skip ≤ 1")
    k = min(n, max(1, math.ceil(fraction * n)))
    if scores is None:
        return np.sort(np.random.default_rng(seed).permutation(n)[:k])
    s = np.asarray(scores, dtype=float)
    if s.size != n or not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite, one per window")
    first = min(math.floor(skip_top * n), n - k)
    return np.sort(np.argsort(-s, kind="stable")[first : first + k])
