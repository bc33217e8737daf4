"""Does a submodule's gradient-magnitude tail follow a power law, and does the fit support a k* (docs/maths.md)?

The Clauset–Shalizi–Newman method (SIAM Review 51, 2009) through the `powerlaw` package: x_min by the KS distance,
α by maximum likelihood above it, and likelihood-ratio tests of the power law against its usual alternatives.
The package needs values; the probe sends log-binned histograms (count and sum of |g| per bin), so the values are
the histogram's quantiles, with a log-linear density inside each bin whose slope reproduces the bin's measured mean:
a deterministic sample of the measured distribution (a log-uniform fill would put a saw-tooth into the CDF that
the KS search for x_min mistakes for the tail's start).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np

from orchestrator.core.gradmass import MagnitudeHistogram

SAMPLE_SIZE = 2000
"""Quantiles drawn from a histogram: enough for the LR tests' power, few enough for ~0.2 s per submodule."""
ALTERNATIVES = ("exponential", "lognormal")
"""The alternatives tested (CSN §5): a thinner tail (exponential) and a heavy non-power-law one (lognormal)."""


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """A likelihood-ratio test of the power law against one alternative: R > 0 favours the power law; p is the
    significance of the sign of R (Vuong's normalised ratio, CSN eq. 5.4)."""

    ratio: float
    p: float

    def favours(self, p_level: float) -> str:
        """'power_law', 'alternative', or 'neither' (the sign of R is not significant at p_level)."""
        if self.p >= p_level:
            return "neither"
        return "power_law" if self.ratio > 0 else "alternative"


@dataclass(frozen=True, kw_only=True)
class TailFit:
    """A CSN fit of p(x) ∝ x^(−pdf_alpha) for x ≥ x_min, on `n` quantiles of which `n_tail` lie in the tail."""

    pdf_alpha: float
    x_min: float
    n: int
    n_tail: int
    ks_distance: float
    comparisons: dict[str, Comparison]

    @property
    def tail_share(self) -> float:
        """The share of the submodule's entries in the fitted tail."""
        return self.n_tail / self.n

    @property
    def rank_alpha(self) -> float:
        """The rank-size exponent of g_(r) ∝ r^(−α) (§4.1, `powerlaw_alpha`): α = 1/(pdf_alpha − 1)."""
        return 1.0 / (self.pdf_alpha - 1.0) if self.pdf_alpha > 1 else math.inf


_MAX_SLOPE = 60.0  # per unit of log|g|: steeper than any bin can resolve


def _mean_ratio(slope: float, width: float) -> float:
    """E[x]/x_lo inside a bin [x_lo, x_lo·e^width] whose density in u = log x is ∝ e^(slope·u)."""
    if abs(slope) < 1e-9:
        return math.expm1(width) / width
    if abs(slope + 1) < 1e-9:
        return width / -math.expm1(-width)
    return slope / (slope + 1) * math.expm1((slope + 1) * width) / math.expm1(slope * width)


def _bin_slope(mean_ratio: float, width: float) -> float:
    """The log-linear slope whose bin mean is `mean_ratio`·x_lo (0, log-uniform, when the mean says nothing)."""
    from scipy.optimize import brentq

    lo, hi = _mean_ratio(-_MAX_SLOPE, width), _mean_ratio(_MAX_SLOPE, width)
    if not lo < mean_ratio < hi:
        return -_MAX_SLOPE if mean_ratio <= lo else _MAX_SLOPE
    return float(brentq(lambda s: _mean_ratio(s, width) - mean_ratio, -_MAX_SLOPE, _MAX_SLOPE, xtol=1e-6))


def quantile_sample(hist: MagnitudeHistogram, size: int = SAMPLE_SIZE) -> np.ndarray:
    """`size` magnitudes at the histogram's mid-quantiles; the underflow bin (magnitudes below spec.lo, numerically
    zero) gives no values, since a power law's support is x > 0."""
    counts = hist.counts[1:-1].astype(np.float64)  # log bins only; the overflow bin is empty by construction
    sums = hist.sums[1:-1]
    total = counts.sum()
    if total <= 0:
        return np.empty(0)
    n = int(min(size, total))
    edges = np.log(hist.spec.edges())
    cum = np.concatenate(([0.0], np.cumsum(counts))) / total
    q = (np.arange(n) + 0.5) / n
    b = np.clip(np.searchsorted(cum, q, side="right") - 1, 0, counts.size - 1)
    f = np.clip((q - cum[b]) / np.where(counts[b] > 0, counts[b] / total, 1.0), 0.0, 1.0)
    out = np.empty(n)
    for i in np.unique(b):  # invert each bin's log-linear CDF at its quantiles
        width = float(edges[i + 1] - edges[i])
        slope = _bin_slope(float(sums[i] / counts[i]) / math.exp(edges[i]), width)
        at = b == i
        t = f[at] * width if abs(slope) < 1e-9 else np.log1p(f[at] * math.expm1(slope * width)) / slope
        out[at] = np.exp(edges[i] + np.clip(t, 0.0, width))
    return out


def csn_xmin(x: np.ndarray) -> float:
    """CSN's x_min (§3.3): of the candidates (every distinct value but the largest), the one whose tail's closed-form
    MLE power law, α = 1 + n/Σ ln(x_i/x_min) (eq. 3.1), is nearest its empirical CDF in KS distance.

    The `powerlaw` package makes the same search, with a numerical optimiser per candidate once α is bounded; the
    closed form is that bounded MLE (it is always ≥ 1) at a fraction of the cost: the same x_min, ~20× faster."""
    x = np.sort(x)
    suffix = np.cumsum(np.log(x)[::-1])[::-1]  # Σ ln x_j for j ≥ i
    best_d, best = math.inf, float(x[0])
    for xm in np.unique(x)[:-1]:
        i = int(np.searchsorted(x, xm, side="left"))
        tail = x[i:]
        s = suffix[i] - tail.size * math.log(xm)
        if s <= 0:
            continue
        alpha = 1.0 + tail.size / s
        d = float(np.max(np.abs(np.arange(tail.size) / tail.size - (1.0 - (tail / xm) ** (1.0 - alpha)))))
        if d < best_d:
            best_d, best = d, float(xm)
    return best


def fit_tail(hist: MagnitudeHistogram, *, size: int = SAMPLE_SIZE, min_values: int = 50) -> TailFit:
    """The CSN fit of a histogram's tail and the LR tests against ALTERNATIVES; ValueError with too few values."""
    import powerlaw  # imports matplotlib: only where a fit is made

    x = quantile_sample(hist, size)
    if x.size < min_values:
        raise ValueError(f"{x.size} non-zero magnitudes; a tail fit needs at least {min_values}")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the package warns on every alternative it cannot fit; the LR test says so
        # The package bounds α to [0, 3] by default, which turns a steep power-law tail into a rejected one.
        fit = powerlaw.Fit(x, xmin=csn_xmin(x), verbose=False, parameter_ranges={"alpha": (1.0, None)})
        comparisons = {}
        for alt in ALTERNATIVES:
            ratio, p = fit.distribution_compare("power_law", alt, normalized_ratio=True)
            if math.isfinite(ratio) and math.isfinite(p):
                comparisons[alt] = Comparison(ratio=float(ratio), p=float(p))
    return TailFit(
        pdf_alpha=float(fit.power_law.alpha),
        x_min=float(fit.xmin),
        n=int(x.size),
        n_tail=int(fit.n_tail),
        ks_distance=float(fit.power_law.D),
        comparisons=comparisons,
    )


@dataclass(frozen=True, kw_only=True)
class FitPolicy:
    """When a tail fit supports a recommendation (the `probe.fit_*` settings)."""

    min_tail: int = 100
    """Fewer quantiles in the tail and α and the LR tests are noise."""
    min_tail_share: float = 0.1
    """A power law on the top 1 % of entries says nothing about the top 10–50 % a k* chooses among."""
    p_level: float = 0.1
    """Significance of an LR test's sign (CSN use 0.1)."""


def unsupported(tail: TailFit, policy: FitPolicy) -> str | None:
    """Why this tail fit does not support a recommendation, or None when it does."""
    if tail.n_tail < policy.min_tail:
        return f"tail too small: n_tail={tail.n_tail} < {policy.min_tail}"
    if tail.tail_share < policy.min_tail_share:
        return f"tail too small: {tail.tail_share:.1%} of entries < {policy.min_tail_share:.0%}"
    exp = tail.comparisons.get("exponential")  # not a power law at all: its α means nothing
    if exp is not None and exp.favours(policy.p_level) == "alternative":
        return f"exponential preferred (R={exp.ratio:.3g}, p={exp.p:.2g})"
    if tail.rank_alpha <= 1:
        return f"alpha<=1: rank-size exponent {tail.rank_alpha:.3g} (the paper's m(k) analysis assumes alpha > 1)"
    return None
