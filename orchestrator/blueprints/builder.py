"""Build a blueprint from measured gradient statistics (§5 "Blueprints as a New Standard", App. A logging procedure).

Per id: the mean or median gradient norm over validation batches with a bootstrap CI (§5 "Fidelity"); from its
magnitude histogram the power-law exponent α with the fit's quality, γ = 1 − α/(1+α), the empirical γ of
m(k) ≈ k^γ, the CSN tail fit with its likelihood-ratio tests, k* from the measured γ and the job's resource model
(Prop. B.1), and a recommendation that is null with its reason when the fit does not support one; domain weights
relative to the general set.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from orchestrator.blueprints.grouping import ParamGroup
from orchestrator.blueprints.model import (
    SCHEMA_VERSION,
    Blueprint,
    ConfidenceInterval,
    FitInfo,
    LayerEntry,
    blueprint_to_dict,
    resource_record_from_dict,
)
from orchestrator.blueprints.tailfit import FitPolicy, TailFit, fit_tail, unsupported
from orchestrator.core.gradmass import (
    MagnitudeHistogram,
    fit_gamma,
    fit_powerlaw,
    gamma_from_alpha,
    k_star,
)
from orchestrator.core.numbers import is_finite_number
from orchestrator.core.resource_model import ResourceModel
from orchestrator.errors import InputError

STATISTICS = ("mean", "median")
FIT_METHODS = ("binned-mle", "rank-lstsq")
GENERAL_DOMAIN = "general"
_MAX_FIT_ERROR_CHARS = 1000


def _statistic_fn(statistic: str) -> Callable[..., Any]:
    """The numpy reduction of a statistic name (both take `axis`, as scipy's vectorized bootstrap needs)."""
    return np.mean if statistic == "mean" else np.median


def _rng_for(seed: int, layer_id: str) -> np.random.Generator:
    """A generator per id, so a layer's CI does not depend on which other layers are in the blueprint."""
    return np.random.default_rng([seed, zlib.crc32(layer_id.encode("utf-8"))])


def _batch_norms(layer_id: str, values: Sequence[float]) -> np.ndarray:
    field = f"samples[{layer_id!r}]"
    try:
        x = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError(field, "must be a sequence of numbers", "one gradient norm per validation batch") from None
    if x.size == 0:
        raise InputError(field, "has no batches", "measure at least one validation batch per id")
    if not np.all(np.isfinite(x)):
        raise InputError(field, "contains NaN or Infinity", "a non-finite gradient norm is a bug upstream")
    if np.any(x < 0):
        raise InputError(field, f"contains a negative norm ({float(x.min())!r})", "gradient norms are magnitudes")
    return x


def _bootstrap_ci(
    x: np.ndarray, statistic: str, ci_level: float, n_resamples: int, rng: np.random.Generator
) -> ConfidenceInterval | None:
    """Percentile bootstrap CI of the statistic over batches (§5 "Fidelity"); None with fewer than 2 batches."""
    if x.size < 2:
        return None
    res = stats.bootstrap(
        (x,),
        _statistic_fn(statistic),
        n_resamples=n_resamples,
        confidence_level=ci_level,
        method="percentile",
        vectorized=True,
        rng=rng,
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return ConfidenceInterval(low=max(low, 0.0), high=max(high, 0.0), level=float(ci_level))


def _tail_fields(tail: TailFit) -> dict[str, object]:
    return {
        "tail_alpha": tail.pdf_alpha,
        "tail_x_min": tail.x_min,
        "tail_n": tail.n,
        "tail_n_tail": tail.n_tail,
        "tail_share": tail.tail_share,
        "tail_ks_distance": tail.ks_distance,
        "likelihood_ratios": {k: {"ratio": c.ratio, "p": c.p} for k, c in tail.comparisons.items()},
    }


def _fit_fields(
    hist: MagnitudeHistogram, fit_method: str, resource_model: ResourceModel | None, policy: FitPolicy
) -> dict[str, object]:
    """alpha, gamma, gamma_fit, k_star, k_star_interior, fit and the recommendation of one id, from its histogram.

    k* uses gamma_fit, the measured exponent of m(k) ≈ k^γ: it is m(k) that the partial-update gain G(k) of
    App. B.2 divides by cost(k), and the paper's γ = 1 − α/(1+α) matches it only for an exact power law
    (docs/maths.md). The paper's γ is published beside it as `gamma`."""
    out: dict[str, object] = {}
    fit: dict[str, object] = {"method": fit_method}
    try:
        pl = fit_powerlaw(hist, method=fit_method)
    except ValueError as err:  # too little data: say so in the entry instead of inventing numbers
        fit["error"] = " ".join(str(err).split())[:_MAX_FIT_ERROR_CHARS]
    else:
        out["alpha"] = float(pl.powerlaw_alpha)
        fit.update(
            method=pl.method,
            r2=None if pl.r2 is None else float(pl.r2),
            ks_distance=None if pl.ks_distance is None else float(pl.ks_distance),
            x_min=None if pl.x_min is None else float(pl.x_min),
            n_tail=int(pl.n_tail),
            rank_range=None if pl.rank_range is None else (float(pl.rank_range[0]), float(pl.rank_range[1])),
        )
        with contextlib.suppress(ValueError):  # α <= 0: no concentration to speak of
            out["gamma"] = float(gamma_from_alpha(pl.powerlaw_alpha))  # App. A (ii): γ = 1 − α/(1+α)
    reason: str | None = None
    try:
        tail = fit_tail(hist)
    except ValueError as err:
        reason = f"no tail fit: {err}"
    else:
        fit.update(_tail_fields(tail))
        reason = unsupported(tail, policy)
    gamma_fit: float | None = None
    with contextlib.suppress(ValueError):  # an empty histogram has no m(k)
        gamma_fit = float(fit_gamma(hist).gamma)  # empirical γ of m(k) ≈ k^γ (§4.1)
        out["gamma_fit"] = gamma_fit
    if "alpha" in out and gamma_fit is not None and resource_model is not None and 0 < gamma_fit < 1:
        ks = k_star(gamma_fit, resource_model.cost_fixed, resource_model.cost_per_param)  # Prop. B.1
        out["k_star"] = float(ks.k_star)
        out["k_star_interior"] = bool(ks.interior)
        if reason is None:
            out["recommendation"] = float(ks.k_star)
            reason = (
                f"k* = {ks.k_star:.3g} from gamma_fit = {gamma_fit:.3g}"
                if ks.interior
                else f"full update: gamma_fit = {gamma_fit:.3g} is not below cost_per_param/(cost_fixed+cost_per_param)"
            )
    elif reason is None:
        reason = "no resource model" if resource_model is None else f"no k*: gamma_fit {gamma_fit} is not in (0, 1)"
    out["recommendation_reason"] = reason
    out["fit"] = FitInfo(**fit)  # type: ignore[arg-type]
    return out


def _created_at(created_at: str | _dt.datetime | None) -> str:
    if created_at is None:
        created_at = _dt.datetime.now(_dt.UTC)
    if isinstance(created_at, _dt.datetime):
        if created_at.tzinfo is None:
            raise InputError("created_at", "has no time zone", "pass an aware datetime, e.g. in UTC")
        return created_at.isoformat(timespec="seconds").replace("+00:00", "Z")
    return created_at


def _check_args(
    statistic: str, ci_level: float, n_resamples: int, fit_method: str, resource_model: ResourceModel | None
) -> None:
    if statistic not in STATISTICS:
        raise InputError("statistic", f"must be one of {', '.join(STATISTICS)}, got {statistic!r}", None)
    if isinstance(ci_level, bool) or not isinstance(ci_level, int | float) or not 0 < ci_level < 1:
        raise InputError("ci_level", f"must lie strictly between 0 and 1, got {ci_level!r}", "e.g. 0.95")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise InputError("n_resamples", f"must be an integer >= 1, got {n_resamples!r}", "e.g. 1000")
    if fit_method not in FIT_METHODS:
        raise InputError("fit_method", f"must be one of {', '.join(FIT_METHODS)}, got {fit_method!r}", None)
    if resource_model is not None:
        for name in ("cost_fixed", "cost_per_param"):
            value = getattr(resource_model, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"resource_model.{name}", f"must be finite and > 0, got {value!r}", None)


def _order(samples: Mapping[str, Sequence[float]], groups: Mapping[str, ParamGroup] | None) -> list[str]:
    """Ids in model order (as groups are given), else sorted."""
    if groups is None:
        return sorted(samples)
    unknown = sorted(set(samples) - set(groups))
    if unknown:
        raise InputError(
            f"samples[{unknown[0]!r}]", "is not one of the parameter groups", "measure the ids group_parameters gives"
        )
    return [gid for gid in groups if gid in samples]


def _domain_tags(
    layer_id: str, general: float, domain_norms: Mapping[str, Mapping[str, float]]
) -> dict[str, float] | None:
    """App. A.1 (vi): per domain, the domain's norm relative to the general set's (general = 1.0)."""
    if general <= 0:
        return None  # no scale to be relative to
    tags = {GENERAL_DOMAIN: 1.0}
    for domain, norms in domain_norms.items():
        if layer_id not in norms:
            continue
        value = norms[layer_id]
        if not (is_finite_number(value) and value >= 0):
            raise InputError(
                f"domain_norms[{domain!r}][{layer_id!r}]", f"must be a finite number >= 0, got {value!r}", None
            )
        tags[domain] = float(value) / general
    return tags


def build_blueprint(
    *,
    model_id: str,
    training_checkpoint: float,
    samples: Mapping[str, Sequence[float]],
    histograms: Mapping[str, MagnitudeHistogram] | None = None,
    groups: Mapping[str, ParamGroup] | None = None,
    resource_model: ResourceModel | None = None,
    statistic: str = "mean",
    ci_level: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
    domain_norms: Mapping[str, Mapping[str, float]] | None = None,
    run_id: str | None = None,
    step: int | None = None,
    tokens_seen: int | None = None,
    blueprint_version: int | None = None,
    provenance: Mapping[str, str | int | float | bool] | None = None,
    fit_method: str = "binned-mle",
    fit_policy: FitPolicy | None = None,
    created_at: str | _dt.datetime | None = None,
) -> Blueprint:
    """A schema 1.0 blueprint from per-batch gradient norms per id (and optionally their magnitude histograms).

    Validated against the schema before it is returned; bad inputs raise InputError naming the field.
    """
    _check_args(statistic, ci_level, n_resamples, fit_method, resource_model)
    if not samples:
        raise InputError("samples", "is empty", "measure the gradient norm of at least one id")
    histograms = histograms or {}
    extra_hists = sorted(set(histograms) - set(samples))
    if extra_hists:
        raise InputError(f"histograms[{extra_hists[0]!r}]", "has no per-batch samples", "give samples for every id")
    if domain_norms is not None and GENERAL_DOMAIN in domain_norms:
        raise InputError(
            f"domain_norms[{GENERAL_DOMAIN!r}]",
            "is reserved: the general set is the samples themselves",
            "name the domain differently",
        )
    reduce = _statistic_fn(statistic)
    layers: list[LayerEntry] = []
    for layer_id in _order(samples, groups):
        x = _batch_norms(layer_id, samples[layer_id])
        value = float(reduce(x))
        fields: dict[str, object] = {}
        if layer_id in histograms:
            fields = _fit_fields(histograms[layer_id], fit_method, resource_model, fit_policy or FitPolicy())
        group = groups.get(layer_id) if groups is not None else None
        layers.append(
            LayerEntry(
                id=layer_id,
                gradient_norm=value,
                statistic=statistic,
                ci=_bootstrap_ci(x, statistic, ci_level, n_resamples, _rng_for(seed, layer_id)),
                n_batches=int(x.size),
                n_params=group.n_params if group is not None else None,
                prefixes=group.prefixes if group is not None else None,
                domain_tags=_domain_tags(layer_id, value, domain_norms) if domain_norms is not None else None,
                **fields,  # type: ignore[arg-type]
            )
        )
    bp = Blueprint(
        schema_version=SCHEMA_VERSION,
        model_id=model_id,
        training_checkpoint=training_checkpoint,
        layers=tuple(layers),
        blueprint_version=blueprint_version,
        created_at=_created_at(created_at),
        run_id=run_id,
        step=step,
        tokens_seen=tokens_seen,
        resource_model=resource_record_from_dict(resource_model.to_dict()) if resource_model is not None else None,
        provenance=dict(provenance) if provenance is not None else None,
    )
    blueprint_to_dict(bp)  # validate on write: the schema names any bad field
    return bp
