"""Forecast of where a run is heading (beyond the paper): fit Ψ(Γ) = Ψ∞ − A·Γ^(−b) to the history.

With every STOP the controller reports the Γ at which the fitted marginal return dΨ/dΓ = A·b·Γ^(−b−1) is
predicted to fall to η, and the Ψ that continuing to the budget would still have bought, Ψ(budget) − Ψ(Γ_now).
A saturating power law is the usual shape of loss-vs-compute curves (Kaplan et al. 2020; Hoffmann et al. 2022).

Fitting: the model is linear in (Ψ∞, A) for a fixed b, so b is found by a 1-D search of the least-squares
residual over b (a grid, then four finer grids around the best) with (Ψ∞, A) solved exactly at each b (variable
projection), on Γ rescaled to (0, 1].
No forecast is made when the fit is poor (R² below `min_r2`, too few points, A ≤ 0, or b at its bound):
the result says why instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

B_BOUNDS = (1e-3, 5.0)
OPTIMISTIC_WINDOW = 8
"""Checks the optimistic bound fits its line to (`optimistic_psi_at`)."""


@dataclass(frozen=True, kw_only=True)
class Forecast:
    """A saturating power-law fit of Ψ(Γ) and what it predicts; `ok` is False (with `reason`) when there is none."""

    ok: bool
    reason: str | None = None
    n_points: int = 0
    psi_inf: float | None = None
    """Ψ∞: the asymptote Ψ approaches as Γ grows."""
    scale_a: float | None = None
    """A, in Ψ units per (Γ units)^(−b)."""
    exponent_b: float | None = None
    r2: float | None = None
    rmse: float | None = None
    gamma_now: float | None = None
    eta: float | None = None
    gamma_cross: float | None = None
    """Γ at which the fitted dΨ/dΓ equals η (None when η ≤ 0: it never does)."""
    budget: float | None = None
    psi_at_budget: float | None = None
    psi_gain_to_budget: float | None = None
    """Ψ(budget) − Ψ(Γ_now): what continuing to the budget would still have bought."""

    def predict(self, gamma: float) -> float:
        if not self.ok or self.psi_inf is None or self.scale_a is None or self.exponent_b is None:
            raise ValueError("no forecast to predict from")
        return self.psi_inf - self.scale_a * gamma ** (-self.exponent_b)

    def marginal_return(self, gamma: float) -> float:
        """dΨ/dΓ of the fitted curve at Γ."""
        if not self.ok or self.scale_a is None or self.exponent_b is None:
            raise ValueError("no forecast to predict from")
        return self.scale_a * self.exponent_b * gamma ** (-self.exponent_b - 1.0)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Forecast:
        return cls(**data)  # type: ignore[arg-type]


def _projection(x: np.ndarray, y: np.ndarray, b: float) -> tuple[float, float, float]:
    """For fixed b: exact least squares of y = c − a·x^(−b); returns (sse, c, a)."""
    sse, c, a = _projections(x, y, np.array([b]))
    return float(sse[0]), float(c[0]), float(a[0])


def _projections(x: np.ndarray, y: np.ndarray, bs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_projection` for many b at once: y on z = −x^(−b) is a simple linear regression, solved in closed form."""
    z = -(x[None, :] ** -bs[:, None])
    zc = z - z.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    szz = np.einsum("ij,ij->i", zc, zc)
    szy = zc @ yc
    a = np.divide(szy, szz, out=np.zeros_like(szz), where=szz > 0)
    c = y.mean() - a * z.mean(axis=1)
    sse = np.maximum(float(yc @ yc) - a * szy, 0.0)
    return sse, c, a


def fit_forecast(
    gammas: Sequence[float],
    psis: Sequence[float],
    *,
    eta: float | None,
    budget: float | None = None,
    min_points: int = 6,
    min_r2: float = 0.9,
) -> Forecast:
    """Fit Ψ(Γ) = Ψ∞ − A·Γ^(−b) to the (Γ, Ψ) history and predict the η crossing and the gain left to the budget."""
    g_all = np.asarray(gammas, dtype=np.float64)
    p_all = np.asarray(psis, dtype=np.float64)
    keep = (g_all > 0) & np.isfinite(g_all) & np.isfinite(p_all)
    g, p = g_all[keep], p_all[keep]
    n = int(g.size)
    gamma_now = float(g_all[-1]) if g_all.size else None
    if n < min_points:
        return Forecast(ok=False, reason=f"too few points with Γ > 0 to fit ({n} < {min_points})", n_points=n)
    if np.ptp(p) == 0.0:
        return Forecast(ok=False, reason="Ψ is constant: nothing to fit", n_points=n)

    scale = float(g.max())
    x = g / scale
    # A coarse grid, then four finer grids around the best point so far (each pass is one vectorised solve; the
    # bracket shrinks 20-fold a pass, to ~1e-6 of b).
    grid = np.geomspace(B_BOUNDS[0], B_BOUNDS[1], 60)
    for _ in range(5):
        i = int(np.argmin(_projections(x, p, grid)[0]))
        b = float(grid[i])
        grid = np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)], 41)
    sse, psi_inf, a_scaled = _projection(x, p, b)
    sst = float(((p - p.mean()) ** 2).sum())
    r2 = 1.0 - sse / sst
    rmse = math.sqrt(sse / n)
    a = a_scaled * scale**b  # back to Γ's own units: a·(Γ/s)^(−b) = (a·s^b)·Γ^(−b)

    def poor(reason: str) -> Forecast:
        return Forecast(ok=False, reason=reason, n_points=n, r2=r2, rmse=rmse)

    if a_scaled <= 0:
        return poor("Ψ does not rise with Γ (fitted A ≤ 0)")
    if b <= B_BOUNDS[0] * 1.01 or b >= B_BOUNDS[1] * 0.99:
        return poor(f"exponent b={b:.3g} at the edge of its range {B_BOUNDS}: not a saturating curve")
    if r2 < min_r2:
        return poor(f"poor fit: R²={r2:.3f} < {min_r2}")

    gamma_cross = None
    if eta is not None and eta > 0:
        # dΨ/dΓ = A·b·Γ^(−b−1) = η  ⇔  Γ = (A·b/η)^(1/(b+1))
        gamma_cross = float((a * b / eta) ** (1.0 / (b + 1.0)))
    psi_at_budget = gain = None
    if budget is not None and gamma_now is not None:
        psi_at_budget = float(psi_inf - a * budget ** (-b))
        psi_now = float(psi_inf - a * gamma_now ** (-b)) if gamma_now > 0 else float(p[-1])
        gain = max(0.0, psi_at_budget - psi_now)
    return Forecast(
        ok=True,
        n_points=n,
        psi_inf=psi_inf,
        scale_a=float(a),
        exponent_b=b,
        r2=r2,
        rmse=rmse,
        gamma_now=gamma_now,
        eta=eta,
        gamma_cross=gamma_cross,
        budget=budget,
        psi_at_budget=psi_at_budget,
        psi_gain_to_budget=gain,
    )


def optimistic_psi_at(
    gammas: Sequence[float],
    psis: Sequence[float],
    budget: float,
    *,
    window: int = OPTIMISTIC_WINDOW,
    min_points: int = 4,
) -> float | None:
    """An upper bound on Ψ at Γ = `budget` for a run on a saturating curve: its recent trend in log Γ, extended.

    Ψ∞ − A·Γ^(−b) is concave in log Γ, so it lies below its tangent; the least-squares line of Ψ on log Γ over the
    last `window` checks (steeper than the tangent at the last one) stands in for it. Γ must start at 0 with the
    run (steps or tokens; not a measurement with a start-up offset). Two standard deviations of the checks about
    that line are added: a validation loss on a few sequences is noisy, and a close race must not be called on
    noise. The scheduler stops a grouped job when even this bound stays below the best Ψ of its group. None with
    fewer than `min_points` checks at Γ > 0.
    """
    g = np.asarray(gammas, dtype=np.float64)
    p = np.asarray(psis, dtype=np.float64)
    keep = (g > 0) & np.isfinite(g) & np.isfinite(p)
    g, p = g[keep][-window:], p[keep][-window:]
    if g.size < min_points or not (math.isfinite(budget) and budget > 0):
        return None
    x = np.log(g)
    if np.ptp(x) == 0.0:
        return None
    slope, intercept = np.polyfit(x, p, 1)
    noise = float(np.sqrt(((p - (intercept + slope * x)) ** 2).sum() / (x.size - 2)))
    now = float(intercept + slope * x[-1])
    return now + max(0.0, float(slope)) * max(0.0, math.log(budget) - float(x[-1])) + 2.0 * noise


def profile_gain(
    gammas: Sequence[float],
    psis: Sequence[float],
    fit: Forecast,
    *,
    gamma_now: float,
    horizon: float,
    level: float = 0.95,
) -> float:
    """Upper bound of Ψ̂(horizon) − Ψ̂(Γ_now) over the exponents b the data do not reject (profile likelihood).

    For each b the best (Ψ∞, A) is exact (`_projection`); b is kept while its residual sum of squares stays within
    the F-test's bound of the best fit's, SSE(b) ≤ SSE_min·(1 + F(level; 1, n−3)/(n−3)). The gain left is
    largest for the flattest decay the data allow, so the bound answers "at most this much is left".
    """
    g = np.asarray(gammas, dtype=np.float64)
    p = np.asarray(psis, dtype=np.float64)
    n = g.size
    if not fit.ok or fit.rmse is None or n <= 3 or horizon <= gamma_now:
        return max(0.0, fit.psi_gain_to_budget or 0.0)
    scale = float(g.max())
    x = g / scale
    x_now, x_end = gamma_now / scale, horizon / scale
    sse_min = fit.rmse**2 * n
    limit = sse_min * (1.0 + float(stats.f.ppf(level, 1, n - 3)) / (n - 3))
    bs = np.geomspace(B_BOUNDS[0], B_BOUNDS[1], 200)
    sse, _, a = _projections(x, p, bs)
    keep = (sse <= limit) & (a > 0)
    gains = a[keep] * (x_now ** -bs[keep] - x_end ** -bs[keep])
    return float(max(0.0, fit.psi_gain_to_budget or 0.0, *gains))
