"""Gradient-mass maths of §4.1 and App. B.1–B.2: magnitude histograms, retained mass m(k), power-law fits, γ, k*.

Gradient magnitudes are summarised in a mergeable log-spaced histogram (each rank/shard builds its own with the
same spec; merging is exact in the counts), and every quantity is computed from that measured distribution rather
than from the paper's integral approximation (docs/maths.md). Names: ``powerlaw_alpha`` is the rank-size exponent
of eq. (1); ``cost_fixed`` / ``cost_per_param`` are the paper's α, β of the resource model (eq. (10)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from orchestrator.errors import InputError

# Minimum data for a power-law fit: fewer magnitudes or bins and the exponent is noise.
MIN_FIT_VALUES = 50
MIN_FIT_BINS = 3


@dataclass(frozen=True, kw_only=True)
class HistogramSpec:
    """Bin layout of a MagnitudeHistogram: underflow [0, lo), log bins from lo to hi, overflow [hi, inf).

    Log bin i covers [edges[i], edges[i+1]) (left-closed), so a value on an edge always lands in the same bin.
    """

    lo: float = 1e-12
    hi: float = 1e4
    bins_per_decade: int = 8

    def __post_init__(self) -> None:
        if not (isinstance(self.lo, int | float) and math.isfinite(self.lo) and self.lo > 0):
            raise ValueError(f"HistogramSpec.lo must be a finite number > 0, got {self.lo!r}")
        if not (isinstance(self.hi, int | float) and math.isfinite(self.hi) and self.hi > self.lo):
            raise ValueError(f"HistogramSpec.hi must be finite and > lo={self.lo!r}, got {self.hi!r}")
        if isinstance(self.bins_per_decade, bool) or not isinstance(self.bins_per_decade, int):
            raise ValueError(f"HistogramSpec.bins_per_decade must be an int, got {self.bins_per_decade!r}")
        if self.bins_per_decade < 1:
            raise ValueError(f"HistogramSpec.bins_per_decade must be >= 1, got {self.bins_per_decade}")

    @property
    def n_log_bins(self) -> int:
        """Number of log-spaced bins between lo and hi (at least 1)."""
        return max(1, round(self.bins_per_decade * math.log10(self.hi / self.lo)))

    def edges(self) -> np.ndarray:
        """Log-spaced edges lo..hi (len n_log_bins + 1); the end points are exactly lo and hi."""
        e = np.geomspace(self.lo, self.hi, self.n_log_bins + 1)
        e[0], e[-1] = self.lo, self.hi
        return e

    @property
    def n_bins(self) -> int:
        """All bins: underflow + log bins + overflow."""
        return self.n_log_bins + 2

    def to_dict(self) -> dict[str, Any]:
        return {"lo": float(self.lo), "hi": float(self.hi), "bins_per_decade": int(self.bins_per_decade)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HistogramSpec:
        """A spec from its to_dict form (e.g. read from a blueprint file); bad fields raise InputError."""
        if not isinstance(d, dict):
            raise InputError("histogram.spec", f"expected an object, got {type(d).__name__}")
        unknown = set(d) - {"lo", "hi", "bins_per_decade"}
        if unknown:
            raise InputError("histogram.spec", f"unknown keys {sorted(unknown)}", "use lo, hi, bins_per_decade")
        try:
            return cls(
                lo=float(d.get("lo", 1e-12)),
                hi=float(d.get("hi", 1e4)),
                bins_per_decade=d.get("bins_per_decade", 8),
            )
        except (TypeError, ValueError) as exc:
            raise InputError("histogram.spec", str(exc)) from None


def _magnitudes(values: ArrayLike) -> np.ndarray:
    """|values| as a flat float64 array; non-finite entries are refused (a NaN gradient is a bug upstream)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{bad} non-finite value(s) among {x.size} gradient magnitudes")
    return np.abs(x)


class MagnitudeHistogram:
    """Mergeable log-spaced histogram of |g|: per-bin count (int64) and per-bin sum of |g| (float64), plus the
    total sum of squares and count. Ranks/shards build their own with the same spec and merge exactly."""

    __slots__ = ("counts", "spec", "sums", "sumsq")
    __hash__ = None  # type: ignore[assignment]  # mutable (add), so not hashable

    def __init__(self, *, spec: HistogramSpec, counts: np.ndarray, sums: np.ndarray, sumsq: float) -> None:
        counts = np.asarray(counts, dtype=np.int64)
        sums = np.asarray(sums, dtype=np.float64)
        if counts.shape != (spec.n_bins,) or sums.shape != (spec.n_bins,):
            raise ValueError(f"counts and sums must have shape ({spec.n_bins},) for this spec")
        if np.any(counts < 0) or np.any(sums < 0) or not np.all(np.isfinite(sums)):
            raise ValueError("counts and sums must be non-negative (and sums finite)")
        if not (math.isfinite(sumsq) and sumsq >= 0):
            raise ValueError(f"sumsq must be finite and >= 0, got {sumsq!r}")
        self.spec = spec
        self.counts = counts.copy()
        self.sums = sums.copy()
        self.sumsq = float(sumsq)

    @classmethod
    def empty(cls, spec: HistogramSpec | None = None) -> MagnitudeHistogram:
        spec = spec if spec is not None else HistogramSpec()
        return cls(spec=spec, counts=np.zeros(spec.n_bins, np.int64), sums=np.zeros(spec.n_bins, np.float64), sumsq=0.0)

    @classmethod
    def of(cls, values: ArrayLike, spec: HistogramSpec | None = None) -> MagnitudeHistogram:
        h = cls.empty(spec)
        h.add(values)
        return h

    def add(self, values: ArrayLike) -> None:
        """Add |values| in place. Non-finite values raise ValueError and leave the histogram unchanged."""
        x = _magnitudes(values)
        if x.size == 0:
            return
        with np.errstate(over="ignore"):
            sumsq = self.sumsq + float(np.dot(x, x))
        if not math.isfinite(sumsq):
            raise ValueError("sum of squares overflowed float64; rescale the gradients before histogramming")
        # searchsorted(side="right") maps x < lo -> 0 (underflow), [e_i, e_{i+1}) -> i+1, x >= hi -> n_bins-1.
        idx = np.searchsorted(self.spec.edges(), x, side="right")
        self.counts += np.bincount(idx, minlength=self.spec.n_bins).astype(np.int64)
        self.sums += np.bincount(idx, weights=x, minlength=self.spec.n_bins)
        self.sumsq = sumsq

    def merge(self, other: MagnitudeHistogram) -> MagnitudeHistogram:
        """A new histogram of both inputs' values (counts add exactly); different specs raise ValueError."""
        if not isinstance(other, MagnitudeHistogram):
            return NotImplemented
        if other.spec != self.spec:
            raise ValueError(f"cannot merge histograms with different specs: {self.spec} vs {other.spec}")
        return MagnitudeHistogram(
            spec=self.spec,
            counts=self.counts + other.counts,
            sums=self.sums + other.sums,
            sumsq=self.sumsq + other.sumsq,
        )

    __add__ = merge

    def merge_in(self, other: MagnitudeHistogram) -> None:
        """Add another histogram's values in place (what `merge` returns, without a new histogram per call)."""
        if other.spec != self.spec:
            raise ValueError(f"cannot merge histograms with different specs: {self.spec} vs {other.spec}")
        self.counts += other.counts
        self.sums += other.sums
        self.sumsq += other.sumsq

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MagnitudeHistogram):
            return NotImplemented
        return (
            self.spec == other.spec
            and np.array_equal(self.counts, other.counts)
            and np.array_equal(self.sums, other.sums)
            and self.sumsq == other.sumsq
        )

    def __repr__(self) -> str:
        return f"MagnitudeHistogram(count={self.count}, mass={self.mass:.6g}, norm={self.norm:.6g}, spec={self.spec})"

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    @property
    def norm(self) -> float:
        """L2 norm of all values added: sqrt(Σ g²)."""
        return math.sqrt(self.sumsq)

    @property
    def mass(self) -> float:
        """L1 mass Σ|g| of all values added (the denominator of m(k))."""
        return math.fsum(self.sums.tolist())

    def _descending(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, sums) of the non-empty bins, in descending magnitude (overflow first, underflow last)."""
        keep = self.counts[::-1] > 0
        return self.counts[::-1][keep], self.sums[::-1][keep]

    def retained_mass(self, k: float | np.ndarray) -> float | np.ndarray:
        """m(k) = Σ_{r<=kN} g_(r) / Σ_r g_(r) over sorted magnitudes (§4.1, App. B.1), from the measured histogram.

        Bins are taken in descending magnitude with cumulative counts and sums; inside a bin its members count as
        equal to the bin mean, so m is linear there. Hence m(0)=0, m(1)=1, m is non-decreasing, and it is concave
        (slopes are bin means, which decrease). If every value is zero m(k)=k (all magnitudes equal).
        """
        kk = np.asarray(k, dtype=np.float64)
        if not np.all(np.isfinite(kk)) or np.any(kk < 0) or np.any(kk > 1):
            raise ValueError(f"k must lie in [0, 1], got {k!r}")
        n = self.count
        if n == 0:
            raise ValueError("retained_mass of an empty histogram is undefined")
        c, s = self._descending()
        cum_n = np.concatenate(([0.0], np.cumsum(c, dtype=np.float64)))
        cum_s = np.concatenate(([0.0], np.cumsum(s)))
        if cum_s[-1] <= 0:
            m = kk.copy()
        else:
            # App. B.1 eq. (3) over the measured distribution: mass of the top kN magnitudes / total mass.
            # Normalise before interpolating: with a subnormal total, interpolating first underflows to 0.
            m = np.interp(kk * n, cum_n, cum_s / cum_s[-1])
            m = np.clip(m, 0.0, 1.0)
        return float(m) if m.ndim == 0 else m

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; floats are Python floats, so a JSON round trip is exact."""
        return {
            "spec": self.spec.to_dict(),
            "counts": [int(v) for v in self.counts],
            "sums": [float(v) for v in self.sums],
            "sumsq": float(self.sumsq),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MagnitudeHistogram:
        """The histogram of a to_dict form (e.g. read from a blueprint file); bad fields raise InputError."""
        if not isinstance(d, dict):
            raise InputError("histogram", f"expected an object, got {type(d).__name__}")
        missing = {"spec", "counts", "sums", "sumsq"} - set(d)
        if missing:
            raise InputError("histogram", f"missing keys {sorted(missing)}")
        spec = HistogramSpec.from_dict(d["spec"])
        counts, sums = d["counts"], d["sums"]
        # Exact types, so bools (an int subclass) are refused; `set(map(type, …))` runs at C speed, and the
        # controller parses hundreds of these per probe report.
        if not (isinstance(counts, list) and set(map(type, counts)) <= {int}):
            raise InputError("histogram.counts", "expected a list of integers")
        if not (isinstance(sums, list) and set(map(type, sums)) <= {int, float}):
            raise InputError("histogram.sums", "expected a list of numbers")
        if len(counts) != spec.n_bins or len(sums) != spec.n_bins:
            raise InputError(
                "histogram", f"counts/sums have {len(counts)}/{len(sums)} entries, the spec needs {spec.n_bins}"
            )
        sumsq = d["sumsq"]
        if isinstance(sumsq, bool) or not isinstance(sumsq, int | float):
            raise InputError("histogram.sumsq", "expected a number")
        try:
            return cls(
                spec=spec,
                counts=np.array(counts, dtype=np.int64),
                sums=np.array(sums, dtype=np.float64),
                sumsq=float(sumsq),
            )
        except (ValueError, OverflowError) as exc:
            raise InputError("histogram", str(exc)) from None


def retained_mass_formula7(n: int, powerlaw_alpha: float, k: float) -> float:
    """The paper's integral approximation of m(k) for g_(r) = C r^(-α): App. B.1 eq. (7).

    ((kN)^(1-α) - 1) / (N^(1-α) - 1); at α = 1 its limit ln(kN)/ln(N). Needs kN >= 1.

    Erratum: for N=10,000, α=1.5, k=0.1 this gives ≈ 0.978, while §4.1's toy example says the top 10% carry
    "nearly 50%". It also only loosely matches the exact discrete sum Σ_{r<=kN} r^-α / Σ_{r<=N} r^-α (the integral
    from 1 underweights the first few ranks: at k=0.1 ≈0.978 vs 0.983, at k=0.001 ≈0.69 vs 0.77). Use
    MagnitudeHistogram.retained_mass on measured gradients instead; this function exists to document the paper.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not (math.isfinite(powerlaw_alpha) and powerlaw_alpha > 0):
        raise ValueError(f"powerlaw_alpha must be finite and > 0, got {powerlaw_alpha!r}")
    if not (math.isfinite(k) and 0 < k <= 1 and k * n >= 1):
        raise ValueError(f"k must lie in [1/N, 1] (kN >= 1), got k={k!r}, N={n}")
    kn = k * n
    if math.isclose(powerlaw_alpha, 1.0, rel_tol=0, abs_tol=1e-12):
        return math.log(kn) / math.log(n)  # α → 1 limit of eq. (7)
    e = 1.0 - powerlaw_alpha
    return (kn**e - 1.0) / (n**e - 1.0)  # App. B.1, eq. (7)


@dataclass(frozen=True, kw_only=True)
class PowerLawFit:
    """A fitted rank-size exponent α of g_(r) ≈ C r^(-α) (eq. (1)) with the method and its quality."""

    powerlaw_alpha: float
    method: str
    r2: float | None
    ks_distance: float | None
    x_min: float | None
    n_tail: int
    rank_range: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "powerlaw_alpha": float(self.powerlaw_alpha),
            "method": self.method,
            "r2": None if self.r2 is None else float(self.r2),
            "ks_distance": None if self.ks_distance is None else float(self.ks_distance),
            "x_min": None if self.x_min is None else float(self.x_min),
            "n_tail": int(self.n_tail),
            "rank_range": None if self.rank_range is None else [float(v) for v in self.rank_range],
        }


def _fit_rank_lstsq(hist: MagnitudeHistogram, rank_range: tuple[float, float]) -> PowerLawFit:
    lo_frac, hi_frac = rank_range
    if not (0 < lo_frac < hi_frac <= 1):
        raise ValueError(f"rank_range must satisfy 0 < lo < hi <= 1, got {rank_range!r}")
    n = hist.count
    # Log bins only, descending: the underflow bin may hold exact zeros and has no meaningful magnitude.
    c = hist.counts[-1:0:-1].astype(np.float64)
    s = hist.sums[-1:0:-1]
    start = np.concatenate(([0.0], np.cumsum(c)[:-1]))
    mid_rank = start + (c + 1.0) / 2.0  # middle of the bin's rank interval [start+1, start+c]
    frac = mid_rank / max(n, 1)
    use = (c > 0) & (s > 0) & (frac >= lo_frac) & (frac <= hi_frac)
    n_tail = int(c[use].sum())
    if int(use.sum()) < MIN_FIT_BINS or n_tail < MIN_FIT_VALUES:
        raise ValueError(
            f"rank-lstsq needs >= {MIN_FIT_BINS} non-empty bins and >= {MIN_FIT_VALUES} magnitudes with rank "
            f"fraction in {rank_range}; got {int(use.sum())} bins, {n_tail} magnitudes"
        )
    x = np.log(mid_rank[use])
    y = np.log(s[use] / c[use])  # log of the bin mean
    w = c[use]
    # Weighted least squares of log g_(r) on log r (eq. (1) in logs: log g = log C - α log r), weights = counts.
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    sxx = float(np.sum(w * (x - xm) ** 2))
    slope = float(np.sum(w * (x - xm) * (y - ym)) / sxx)
    resid = y - (ym + slope * (x - xm))
    ss_tot = float(np.sum(w * (y - ym) ** 2))
    r2 = 1.0 - float(np.sum(w * resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(
        powerlaw_alpha=-slope,
        method="rank-lstsq",
        r2=r2,
        ks_distance=None,
        x_min=None,
        n_tail=n_tail,
        rank_range=(float(lo_frac), float(hi_frac)),
    )


def _binned_loglik(a: float, log_u: np.ndarray, h: np.ndarray) -> float:
    """Log-likelihood of density exponent a for counts h in bins [u_i, u_{i+1}), the last bin open above.

    log_u holds each bin's lower edge divided by x_min, in logs (so log_u[0] = 0). P(bin i) = u_i^(1-a) -
    u_{i+1}^(1-a) (Virkar & Clauset 2014), computed in logs; empty bins add nothing to the sum.
    """
    t = 1.0 - a
    probs_log = t * log_u  # log P(X >= u_i): the open top bin's probability as it stands
    # Closed bins: log(u_i^t - u_{i+1}^t) = t log u_i + log(-expm1(t (log u_{i+1} - log u_i))).
    probs_log[:-1] += np.log(-np.expm1(t * np.diff(log_u)))
    nz = h > 0
    return float(np.sum(h[nz] * probs_log[nz]))


def _fit_binned_mle(hist: MagnitudeHistogram) -> PowerLawFit:
    # Bin lower edges of the log bins and of the overflow bin; the overflow bin is open above.
    lower_edges = hist.spec.edges()  # log bins: [e_i, e_{i+1}); overflow: [e_last, inf)
    h_all = hist.counts[1:].astype(np.float64)  # drop the underflow bin [0, lo): no power law reaches 0
    best: tuple[float, float, int, float] | None = None  # (ks, a, n_tail, x_min)
    for j in range(lower_edges.size - 1):
        h = h_all[j:]
        n_tail = float(h.sum())
        if n_tail < MIN_FIT_VALUES or int(np.count_nonzero(h)) < MIN_FIT_BINS:
            continue
        x_min = float(lower_edges[j])
        log_u = np.log(lower_edges[j:] / x_min)
        res = optimize.minimize_scalar(
            lambda a, lu=log_u, hh=h: -_binned_loglik(a, lu, hh),
            bounds=(1.0 + 1e-6, 100.0),
            method="bounded",
            options={"xatol": 1e-10},
        )
        a = float(res.x)
        # KS distance between binned empirical and fitted CCDFs at the tail's bin edges (Clauset et al. 2009).
        emp_ccdf = np.cumsum(h[::-1])[::-1] / n_tail  # P(X >= u_i) at each tail bin's lower edge
        fit_ccdf = np.exp((1.0 - a) * log_u)
        ks = float(np.max(np.abs(emp_ccdf - fit_ccdf)))
        if best is None or ks < best[0]:
            best = (ks, a, int(n_tail), x_min)
    if best is None:
        raise ValueError(
            f"binned-mle needs a tail with >= {MIN_FIT_VALUES} magnitudes in >= {MIN_FIT_BINS} non-empty log bins; "
            f"the histogram has {hist.count} magnitudes in {int(np.count_nonzero(hist.counts[1:]))} such bins"
        )
    ks, a, n_tail, x_min = best
    # Density p(x) ∝ x^(-a) has CCDF ∝ x^(1-a); a rank-size law g_(r) ∝ r^(-α) has CCDF ∝ x^(-1/α): α = 1/(a-1).
    return PowerLawFit(
        powerlaw_alpha=1.0 / (a - 1.0),
        method="binned-mle",
        r2=None,
        ks_distance=ks,
        x_min=x_min,
        n_tail=n_tail,
        rank_range=None,
    )


def fit_powerlaw(
    hist: MagnitudeHistogram, *, method: str = "binned-mle", rank_range: tuple[float, float] = (1e-4, 0.5)
) -> PowerLawFit:
    """Fit the rank-size exponent α of eq. (1), g_(r) ≈ C r^(-α), to a magnitude histogram (App. A step (i)).

    ``rank-lstsq``: count-weighted least squares of log(bin mean) on log(mid-bin rank) over the bins whose rank
    fraction lies in rank_range; reports R². ``binned-mle``: maximum likelihood of p(x) ∝ x^(-a) on the binned
    counts (Virkar & Clauset 2014) with x_min the bin edge minimising the KS distance (Clauset, Shalizi & Newman
    2009); α = 1/(a-1). Too little data raises ValueError.
    """
    if method == "rank-lstsq":
        return _fit_rank_lstsq(hist, rank_range)
    if method == "binned-mle":
        return _fit_binned_mle(hist)
    raise ValueError(f"unknown power-law fit method {method!r}; use 'binned-mle' or 'rank-lstsq'")


def gamma_from_alpha(powerlaw_alpha: float) -> float:
    """The paper's γ = 1 - α/(1+α) = 1/(1+α) (§4.1; App. A logging procedure, step (ii)).

    Erratum: App. A's example pairs α=1.47 with γ=0.60, but the formula gives 0.405. The formula is a definition,
    not a consequence of eq. (1): an exact power law with α < 1 has m(k) ≈ k^(1-α). Report fit_gamma alongside.
    """
    if not (math.isfinite(powerlaw_alpha) and powerlaw_alpha > 0):
        raise ValueError(f"powerlaw_alpha must be finite and > 0, got {powerlaw_alpha!r}")
    return 1.0 - powerlaw_alpha / (1.0 + powerlaw_alpha)  # §4.1 / App. A (ii)


@dataclass(frozen=True, kw_only=True)
class GammaFit:
    """Empirical γ (``gamma_fit``) of m(k) ≈ k^γ, with the R² of the log-log fit and the k range used."""

    gamma: float
    r2: float
    k_range: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"gamma": float(self.gamma), "r2": float(self.r2), "k_range": [float(v) for v in self.k_range]}


def fit_gamma(hist: MagnitudeHistogram, *, k_range: tuple[float, float] = (1e-3, 1.0), n_points: int = 50) -> GammaFit:
    """γ from m(k) ≈ k^γ (§4.1, the relation after eq. (1)): least squares of log m(k) on log k through the origin.

    k is log-spaced over k_range. R² is 1 - SS_res/SS_tot with SS_tot about the mean of log m (may be < 0 for a
    curve that is not a power of k at all).
    """
    k_lo, k_hi = k_range
    if not (0 < k_lo < k_hi <= 1):
        raise ValueError(f"k_range must satisfy 0 < lo < hi <= 1, got {k_range!r}")
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    ks = np.geomspace(k_lo, k_hi, n_points)
    m = np.asarray(hist.retained_mass(ks))
    if np.any(m <= 0):
        raise ValueError("m(k) is zero somewhere in k_range; widen the histogram's range or raise k_range's lower end")
    x, y = np.log(ks), np.log(m)
    gamma = float(np.dot(x, y) / np.dot(x, x))  # through the origin: m(1) = 1 <=> log m(1) = 0
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - gamma * x) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return GammaFit(gamma=gamma, r2=r2, k_range=(float(k_lo), float(k_hi)))


def partial_update_gain(
    k: float | np.ndarray, gamma: float, cost_fixed: float, cost_per_param: float
) -> float | np.ndarray:
    """Performance per resource of updating a fraction k: G(k) = k^γ / (cost_fixed + cost_per_param·k)."""
    kk = np.asarray(k, dtype=np.float64)
    g = kk**gamma / (cost_fixed + cost_per_param * kk)  # App. B.2, eq. (12)
    return float(g) if g.ndim == 0 else g


@dataclass(frozen=True, kw_only=True)
class KStar:
    """Optimal update fraction of Prop. B.1 and the gains that justify it."""

    k_star: float
    interior: bool
    gain_at_k_star: float
    gain_full: float
    gamma: float
    cost_fixed: float
    cost_per_param: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "k_star": float(self.k_star),
            "interior": bool(self.interior),
            "gain_at_k_star": float(self.gain_at_k_star),
            "gain_full": float(self.gain_full),
            "gamma": float(self.gamma),
            "cost_fixed": float(self.cost_fixed),
            "cost_per_param": float(self.cost_per_param),
        }


def k_star(gamma: float, cost_fixed: float, cost_per_param: float) -> KStar:
    """k* = γ·cost_fixed / (cost_per_param·(1-γ)) (Prop. B.1, App. B.2 eq. (15)); 1.0 (full update) unless
    γ < cost_per_param/(cost_fixed+cost_per_param) (eq. (16)).

    Erratum: the paper's example (eq. (21): cost_fixed=1, cost_per_param=4, γ=0.6) gives k*=0.375 and prints
    G(k*) ≈ 0.228, rounding 0.375^0.6 to 0.57 and dropping decimal points ("=375", "4·57"); the exact value is
    0.4·0.375^0.6 ≈ 0.2221, still > G(1) = 0.2, so the conclusion stands.
    """
    if not (math.isfinite(gamma) and 0 < gamma < 1):
        raise ValueError(f"gamma must lie in (0, 1), got {gamma!r}")
    if not (math.isfinite(cost_fixed) and cost_fixed > 0):
        raise ValueError(f"cost_fixed must be finite and > 0, got {cost_fixed!r}")
    if not (math.isfinite(cost_per_param) and cost_per_param > 0):
        raise ValueError(f"cost_per_param must be finite and > 0, got {cost_per_param!r}")
    interior = gamma < cost_per_param / (cost_fixed + cost_per_param)  # App. B.2, eq. (16)
    k = gamma * cost_fixed / (cost_per_param * (1.0 - gamma)) if interior else 1.0  # App. B.2, eq. (15)
    k = min(k, 1.0)  # eq. (16) guarantees k < 1 up to rounding
    return KStar(
        k_star=k,
        interior=interior,
        gain_at_k_star=float(partial_update_gain(k, gamma, cost_fixed, cost_per_param)),  # eq. (17)
        gain_full=float(partial_update_gain(1.0, gamma, cost_fixed, cost_per_param)),  # eq. (20)
        gamma=float(gamma),
        cost_fixed=float(cost_fixed),
        cost_per_param=float(cost_per_param),
    )
