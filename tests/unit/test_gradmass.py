"""Gradient-mass maths (§4.1, App. B.1–B.2): histograms, m(k), power-law fits, γ and k*."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from orchestrator.core.gradmass import (
    GammaFit,
    HistogramSpec,
    KStar,
    MagnitudeHistogram,
    PowerLawFit,
    fit_gamma,
    fit_powerlaw,
    gamma_from_alpha,
    k_star,
    partial_update_gain,
    retained_mass_formula7,
)
from orchestrator.errors import InputError

N_RANKS = 100_000
SPEC = HistogramSpec()

# Magnitudes a gradient can take, with exact zeros, values on either side of lo/hi and subnormal-free tiny values.
grad_values = hnp.arrays(
    np.float64,
    st.integers(0, 60),
    elements=st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        st.sampled_from([0.0, -0.0, 1e-12, 1e4, -1e4, 1e-13, 3e-300]),
    ),
)


def rank_size(alpha: float, n: int = N_RANKS) -> np.ndarray:
    """Exact rank-size data g_r = r^(-α), r = 1..n (eq. (1) with C = 1)."""
    return np.arange(1, n + 1, dtype=np.float64) ** -alpha


def exact_retained_mass(values: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """m(k) from the sorted cumulative sum, linear between integer ranks."""
    g = np.sort(np.abs(values))[::-1]
    cum = np.concatenate(([0.0], np.cumsum(g))) / g.sum()
    return np.interp(ks * g.size, np.arange(g.size + 1), cum)


def assert_hist_close(a: MagnitudeHistogram, b: MagnitudeHistogram) -> None:
    assert a.spec == b.spec
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_allclose(a.sums, b.sums, rtol=1e-12, atol=0)
    np.testing.assert_allclose(a.sumsq, b.sumsq, rtol=1e-12, atol=0)


# --- HistogramSpec -------------------------------------------------------------------------------------------


def test_spec_edges_and_bin_count() -> None:
    e = SPEC.edges()
    assert e[0] == 1e-12 and e[-1] == 1e4
    assert e.size == 16 * 8 + 1
    assert SPEC.n_bins == 16 * 8 + 2
    np.testing.assert_allclose(np.diff(np.log10(e)), 1 / 8, rtol=1e-9)
    assert HistogramSpec.from_dict(json.loads(json.dumps(SPEC.to_dict()))) == SPEC


@pytest.mark.parametrize("kwargs", [{"lo": 0.0}, {"lo": 1.0, "hi": 0.5}, {"bins_per_decade": 0}, {"hi": np.inf}])
def test_spec_rejects_bad_layout(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        HistogramSpec(**kwargs)


def test_spec_from_dict_bad_input_is_input_error() -> None:
    with pytest.raises(InputError):
        HistogramSpec.from_dict({"lo": -1.0})
    with pytest.raises(InputError):
        HistogramSpec.from_dict({"lo": 1e-9, "bogus": 1})


# --- MagnitudeHistogram --------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(a=grad_values, b=grad_values)
def test_merge_equals_histogram_of_concatenation(a: np.ndarray, b: np.ndarray) -> None:
    merged = MagnitudeHistogram.of(a) + MagnitudeHistogram.of(b)
    assert_hist_close(merged, MagnitudeHistogram.of(np.concatenate([a, b])))
    assert merged.count == a.size + b.size


@settings(max_examples=100, deadline=None)
@given(a=grad_values, b=grad_values, c=grad_values)
def test_merge_commutative_and_associative(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    ha, hb, hc = (MagnitudeHistogram.of(v) for v in (a, b, c))
    assert ha.merge(hb) == hb.merge(ha)  # float addition is commutative: exact
    assert_hist_close((ha + hb) + hc, ha + (hb + hc))
    # merge returns a new object and leaves its inputs alone
    before = ha.counts.copy()
    _ = ha + hb
    np.testing.assert_array_equal(ha.counts, before)


@settings(max_examples=100, deadline=None)
@given(v=grad_values, bpd=st.integers(1, 20))
def test_to_dict_round_trip_is_exact(v: np.ndarray, bpd: int) -> None:
    h = MagnitudeHistogram.of(v, HistogramSpec(lo=1e-9, hi=1e3, bins_per_decade=bpd))
    back = MagnitudeHistogram.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back == h
    assert back.counts.dtype == np.int64 and back.sums.dtype == np.float64


@settings(max_examples=100, deadline=None)
@given(v=grad_values)
def test_norm_mass_count(v: np.ndarray) -> None:
    h = MagnitudeHistogram.of(v)
    assert h.count == v.size
    assert h.norm == pytest.approx(float(np.linalg.norm(v)), rel=1e-12, abs=1e-300)
    assert h.mass == pytest.approx(float(np.abs(v).sum()), rel=1e-12, abs=1e-300)


def test_bin_assignment_zeros_underflow_overflow_and_edges() -> None:
    h = MagnitudeHistogram.of([0.0, -0.0, 5e-13, 1e-12, -1.2e-12, 1e4, 3e7])
    assert h.counts[0] == 3  # two zeros and 5e-13 < lo
    assert h.counts[1] == 2  # lo itself (left-closed) and |-1.2e-12| < 10^(1/8)·lo
    assert h.counts[-1] == 2  # hi itself and 3e7
    assert h.count == 7
    assert h.sums[-1] == pytest.approx(1e4 + 3e7)
    assert h.sums[0] == pytest.approx(5e-13)


def test_add_is_in_place_and_accumulates() -> None:
    h = MagnitudeHistogram.empty()
    h.add(np.array([[1.0, -2.0], [3.0, 0.5]], dtype=np.float32))
    h.add([4.0])
    assert h.count == 5
    assert h.norm == pytest.approx(np.sqrt(1 + 4 + 9 + 0.25 + 16))
    assert h.mass == pytest.approx(10.5)


def test_spec_mismatch_refuses_to_merge() -> None:
    a = MagnitudeHistogram.of([1.0], HistogramSpec(bins_per_decade=8))
    b = MagnitudeHistogram.of([1.0], HistogramSpec(bins_per_decade=4))
    with pytest.raises(ValueError, match="different specs"):
        a.merge(b)
    with pytest.raises(ValueError):
        _ = a + b


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_refused_and_histogram_unchanged(bad: float) -> None:
    h = MagnitudeHistogram.of([1.0, 2.0])
    before = h.to_dict()
    with pytest.raises(ValueError, match="non-finite"):
        h.add([3.0, bad])
    assert h.to_dict() == before
    with pytest.raises(ValueError):
        MagnitudeHistogram.of([bad])


def test_sumsq_overflow_refused() -> None:
    with pytest.raises(ValueError, match="overflow"):
        MagnitudeHistogram.of([1e200])


def test_from_dict_rejects_malformed() -> None:
    good = MagnitudeHistogram.of([1.0, 2.0]).to_dict()
    for broken in (
        {**good, "counts": good["counts"][:-1]},
        {**good, "counts": [-1, *good["counts"][1:]]},
        {**good, "sums": ["x", *good["sums"][1:]]},
        {k: v for k, v in good.items() if k != "sumsq"},
        {**good, "sumsq": float("nan")},
        [1, 2],
    ):
        with pytest.raises(InputError):
            MagnitudeHistogram.from_dict(broken)  # type: ignore[arg-type]


# --- retained mass m(k) --------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(v=grad_values.filter(lambda x: x.size > 0))
def test_retained_mass_endpoints_monotone_concave(v: np.ndarray) -> None:
    h = MagnitudeHistogram.of(v)
    ks = np.linspace(0.0, 1.0, 201)
    m = h.retained_mass(ks)
    assert h.retained_mass(0.0) == 0.0
    assert h.retained_mass(1.0) == pytest.approx(1.0, abs=1e-15)
    assert np.all(np.diff(m) >= -1e-15)
    # concave: increments do not grow
    assert np.all(np.diff(m, 2) <= 1e-12)


def test_retained_mass_matches_exact_sorted_cumsum_of_power_law() -> None:
    g = rank_size(1.5)
    h = MagnitudeHistogram.of(g, HistogramSpec(bins_per_decade=32))
    ks = np.concatenate(([0.0], np.geomspace(1e-5, 1.0, 200)))
    err = np.abs(h.retained_mass(ks) - exact_retained_mass(g, ks))
    assert err.max() <= 0.02
    # the paper's toy setting: the top 10% carry far more than "nearly 50%"
    assert h.retained_mass(0.1) > 0.95


def test_retained_mass_scalar_vs_array_and_errors() -> None:
    h = MagnitudeHistogram.of(rank_size(1.0, 1000))
    assert isinstance(h.retained_mass(0.5), float)
    assert h.retained_mass(np.array([0.5])).shape == (1,)
    for bad in (-0.1, 1.1, np.nan):
        with pytest.raises(ValueError):
            h.retained_mass(bad)
    with pytest.raises(ValueError, match="empty"):
        MagnitudeHistogram.empty().retained_mass(0.5)


def test_retained_mass_of_all_zeros_is_uniform() -> None:
    h = MagnitudeHistogram.of(np.zeros(10))
    assert h.retained_mass(0.3) == pytest.approx(0.3)


# --- formula (7) erratum -------------------------------------------------------------------------------------


def test_formula7_toy_example_erratum() -> None:
    m = retained_mass_formula7(10_000, 1.5, 0.1)
    assert m == pytest.approx(0.978, abs=1e-3)
    assert abs(m - 0.5) > 0.4  # §4.1's "nearly 50%" is not what eq. (7) gives


def test_formula7_agrees_with_discrete_sum_only_loosely() -> None:
    g = rank_size(1.5, 10_000)
    exact = lambda k: g[: round(k * g.size)].sum() / g.sum()  # noqa: E731
    # close at k=0.1 (0.978 vs 0.983) ...
    assert abs(retained_mass_formula7(10_000, 1.5, 0.1) - exact(0.1)) < 0.01
    # ... but the integral from 1 underweights the first ranks: at k=0.001 it is 0.69 vs the exact 0.77.
    assert abs(retained_mass_formula7(10_000, 1.5, 0.001) - exact(0.001)) > 0.05


def test_formula7_alpha_one_limit_and_errors() -> None:
    assert retained_mass_formula7(1000, 1.0, 0.1) == pytest.approx(np.log(100) / np.log(1000))
    assert retained_mass_formula7(1000, 1.0, 0.1) == pytest.approx(retained_mass_formula7(1000, 1.0 + 1e-7, 0.1))
    assert retained_mass_formula7(1000, 1.5, 1.0) == pytest.approx(1.0)
    for args in ((1, 1.5, 0.5), (1000, 0.0, 0.5), (1000, 1.5, 0.0), (1000, 1.5, 1e-4), (1000, 1.5, 1.5)):
        with pytest.raises(ValueError):
            retained_mass_formula7(*args)


# --- power-law fit -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.8, 1.5])
def test_fit_powerlaw_recovers_alpha_rank_lstsq(alpha: float) -> None:
    fit = fit_powerlaw(MagnitudeHistogram.of(rank_size(alpha)), method="rank-lstsq")
    assert fit.method == "rank-lstsq"
    assert fit.powerlaw_alpha == pytest.approx(alpha, rel=0.10)
    assert fit.r2 is not None and fit.r2 > 0.95
    assert fit.rank_range == (1e-4, 0.5)
    assert fit.ks_distance is None and fit.x_min is None
    assert 0 < fit.n_tail <= N_RANKS


@pytest.mark.parametrize("alpha", [0.8, 1.5])
def test_fit_powerlaw_recovers_alpha_binned_mle(alpha: float) -> None:
    fit = fit_powerlaw(MagnitudeHistogram.of(rank_size(alpha)), method="binned-mle")
    assert fit.method == "binned-mle"
    assert fit.powerlaw_alpha == pytest.approx(alpha, rel=0.10)
    assert fit.ks_distance is not None and fit.ks_distance < 0.01
    assert fit.x_min is not None and fit.x_min > 0
    assert fit.n_tail >= 50
    assert fit.r2 is None and fit.rank_range is None
    assert json.loads(json.dumps(fit.to_dict()))["powerlaw_alpha"] == fit.powerlaw_alpha


def test_fit_powerlaw_binned_mle_on_sampled_pareto_with_lognormal_body() -> None:
    # A noisy sample: log-normal body below 1e-3 and a Pareto tail above it with density exponent a = 2.5
    # (rank-size α = 1/(a-1) = 2/3). The KS choice of x_min must find the tail.
    rng = np.random.default_rng(0)
    body = rng.lognormal(np.log(1e-5), 1.0, 20_000)
    body = body[body < 1e-3]
    tail = 1e-3 * (1 - rng.random(20_000)) ** (-1 / 1.5)  # CCDF (x/1e-3)^(-1.5)
    fit = fit_powerlaw(MagnitudeHistogram.of(np.concatenate([body, tail])), method="binned-mle")
    assert fit.powerlaw_alpha == pytest.approx(2 / 3, rel=0.10)
    assert fit.x_min is not None and 3e-4 <= fit.x_min <= 1e-2


def test_fit_powerlaw_too_little_data() -> None:
    few = MagnitudeHistogram.of([1.0, 0.5, 0.25])
    for method in ("binned-mle", "rank-lstsq"):
        with pytest.raises(ValueError, match="needs"):
            fit_powerlaw(few, method=method)
    one_bin = MagnitudeHistogram.of(np.full(1000, 0.3))
    for method in ("binned-mle", "rank-lstsq"):
        with pytest.raises(ValueError):
            fit_powerlaw(one_bin, method=method)
    with pytest.raises(ValueError, match="unknown"):
        fit_powerlaw(MagnitudeHistogram.of(rank_size(1.0, 1000)), method="magic")
    with pytest.raises(ValueError):
        fit_powerlaw(MagnitudeHistogram.of(rank_size(1.0, 1000)), method="rank-lstsq", rank_range=(0.5, 0.1))


def test_powerlaw_fit_is_a_frozen_value() -> None:
    fit = PowerLawFit(
        powerlaw_alpha=1.0, method="rank-lstsq", r2=0.99, ks_distance=None, x_min=None, n_tail=10, rank_range=(0.1, 0.5)
    )
    with pytest.raises(AttributeError):
        fit.powerlaw_alpha = 2.0  # type: ignore[misc]
    assert fit.to_dict()["rank_range"] == [0.1, 0.5]


# --- γ -------------------------------------------------------------------------------------------------------


def test_gamma_from_alpha_and_appendix_a_erratum() -> None:
    assert gamma_from_alpha(1.47) == pytest.approx(0.405, abs=1e-3)
    assert abs(gamma_from_alpha(1.47) - 0.60) > 0.15  # App. A pairs α=1.47 with γ=0.60
    assert gamma_from_alpha(1.0) == pytest.approx(0.5)
    for bad in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError):
            gamma_from_alpha(bad)


def test_fit_gamma_recovers_half_for_sqrt_mass_curve() -> None:
    # g_r = r^-0.5 gives Σ_{r<=kN} g_r ≈ 2√(kN): m(k) ≈ k^0.5.
    h = MagnitudeHistogram.of(rank_size(0.5), HistogramSpec(bins_per_decade=16))
    fit = fit_gamma(h)
    assert isinstance(fit, GammaFit)
    assert fit.gamma == pytest.approx(0.5, abs=0.02)
    assert fit.r2 > 0.99
    assert fit.k_range == (1e-3, 1.0)
    assert fit.to_dict()["k_range"] == [1e-3, 1.0]


def test_fit_gamma_bad_range() -> None:
    h = MagnitudeHistogram.of(rank_size(0.5, 1000))
    for kr in ((0.0, 1.0), (0.5, 0.1), (0.1, 1.5)):
        with pytest.raises(ValueError):
            fit_gamma(h, k_range=kr)
    with pytest.raises(ValueError):
        fit_gamma(h, n_points=1)


# --- G(k) and k* ---------------------------------------------------------------------------------------------


def test_paper_worked_example_and_its_erratum() -> None:
    ks = k_star(0.6, cost_fixed=1.0, cost_per_param=4.0)
    assert isinstance(ks, KStar)
    assert ks.interior
    assert ks.k_star == pytest.approx(0.375, rel=1e-12)
    assert ks.gain_at_k_star == pytest.approx(0.4 * 0.375**0.6, rel=1e-12)
    assert ks.gain_at_k_star == pytest.approx(0.2221, abs=1e-3)  # exact value
    assert abs(ks.gain_at_k_star - 0.228) < 0.01  # the paper's printed, rounded value
    assert ks.gain_full == pytest.approx(0.2)
    assert ks.gain_at_k_star > ks.gain_full
    grid = np.linspace(1e-4, 1.0, 100_001)
    g = partial_update_gain(grid, 0.6, 1.0, 4.0)
    assert g.max() <= ks.gain_at_k_star + 1e-12
    assert grid[np.argmax(g)] == pytest.approx(0.375, abs=1e-4)


def test_partial_update_gain_formula() -> None:
    assert partial_update_gain(1.0, 0.6, 1.0, 4.0) == pytest.approx(0.2)
    assert partial_update_gain(0.25, 0.5, 2.0, 8.0) == pytest.approx(0.5 / 4.0)
    assert isinstance(partial_update_gain(0.5, 0.5, 1.0, 1.0), float)


@pytest.mark.parametrize(("gamma", "cf", "cp"), [(0.8, 1.0, 4.0), (0.9, 1.0, 4.0), (0.5, 1.0, 1.0), (0.3, 10.0, 1.0)])
def test_k_star_full_update_when_condition_fails(gamma: float, cf: float, cp: float) -> None:
    assert gamma >= cp / (cf + cp)
    ks = k_star(gamma, cf, cp)
    assert ks.k_star == 1.0 and not ks.interior
    assert ks.gain_at_k_star == ks.gain_full
    grid = np.linspace(1e-3, 1.0, 1000)
    assert np.all(partial_update_gain(grid, gamma, cf, cp) <= ks.gain_full + 1e-12)


@settings(max_examples=200, deadline=None)
@given(
    gamma=st.floats(0.01, 0.99),
    cf=st.floats(0.01, 100.0),
    cp=st.floats(0.01, 100.0),
)
def test_k_star_maximises_gain(gamma: float, cf: float, cp: float) -> None:
    ks = k_star(gamma, cf, cp)
    assert 0 < ks.k_star <= 1
    assert ks.interior == (gamma < cp / (cf + cp))
    grid = np.linspace(1e-6, 1.0, 2001)
    assert np.all(partial_update_gain(grid, gamma, cf, cp) <= ks.gain_at_k_star * (1 + 1e-9))
    if ks.interior:  # never worse than the full update (equal at the boundary γ ≈ c_p/(c_f + c_p), where k* → 1)
        assert ks.gain_at_k_star >= ks.gain_full


@pytest.mark.parametrize(
    "args", [(0.0, 1.0, 4.0), (1.0, 1.0, 4.0), (-0.2, 1.0, 4.0), (0.5, 0.0, 4.0), (0.5, 1.0, -1.0), (np.nan, 1, 4)]
)
def test_k_star_invalid_inputs(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        k_star(*args)


def test_k_star_to_dict_is_json_safe() -> None:
    d = k_star(0.6, 1.0, 4.0).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["interior"] is True
