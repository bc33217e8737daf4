"""Noise on released blueprint statistics (§5 "Privacy"; docs/blueprints.md "Privacy"), in two release modes.

"noise" (`add_gaussian_noise`): each norm and CI bound clipped and noised; no stated guarantee. "dp" (`dp_release`):
the Gaussian mechanism on the mean of clipped per-batch norms, ε at δ from dp-accounting's RDP accountant over every
query of the run, and every field the mechanism does not bound withheld. The noise comes from the operating system's
entropy (a fresh `np.random.default_rng()`): no seed, logged or not, can redraw it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from orchestrator.blueprints.model import (
    SCHEMA_VERSION,
    Blueprint,
    ConfidenceInterval,
    LayerEntry,
    PrivacyRecord,
    as_schema_1_0,
    blueprint_to_dict,
)
from orchestrator.core.numbers import is_finite_number
from orchestrator.errors import InputError

NOISE_NOTE = (
    "per-entry clipping of aggregated statistics; not a differential-privacy guarantee unless the statistics "
    "were computed with per-example clipping"
)
DP_NOTE = (
    "(epsilon, delta)-DP for the probe's validation batches, not for the training data; gradient_norm is the mean "
    "of per-batch norms clipped to `clip` plus Gaussian noise of std sigma; epsilon covers this version and the run's "
    "earlier ones"
)
ADJACENCY = "replace one validation batch of the probe's general set"
ACCOUNTANT = f"dp-accounting {importlib.metadata.version('dp-accounting')} rdp"

DP_NOISED_LAYER_FIELDS = ("gradient_norm",)
DP_PUBLIC_LAYER_FIELDS = ("id", "statistic", "n_batches", "n_params", "prefixes")
"""Layer fields a DP release keeps un-noised: names, counts and structure that the config and the model fix, not the
validation data. Every other field of an entry is withheld."""

_WHY_WITHHELD = {
    "ci_low": "bootstrap interval over the raw batch norms: sensitivity not bounded",
    "ci_high": "bootstrap interval over the raw batch norms: sensitivity not bounded",
    "ci_level": "belongs to the withheld interval",
    "alpha": "power-law fit to the raw gradient-magnitude histogram: sensitivity not bounded",
    "gamma": "derived from the withheld alpha",
    "gamma_fit": "fit to the raw gradient-magnitude histogram: sensitivity not bounded",
    "k_star": "derived from the withheld gamma",
    "k_star_interior": "derived from the withheld k_star",
    "fit": "quality of the withheld power-law fit",
    "domain_tags": "ratios of the other domains' un-noised norms",
}
_WHY_DEFAULT = "not a noised statistic"


def _finite(name: str, value: float, *, positive: bool) -> float:
    if not is_finite_number(value) or (value <= 0 if positive else value < 0):
        bound = "> 0" if positive else ">= 0"
        raise InputError(name, f"must be a finite number {bound}, got {value!r}", None)
    return float(value)


def _unnoised(bp: Blueprint) -> Blueprint:
    if bp.privacy is not None:
        raise InputError("privacy", "this blueprint is already noised", "add noise once, to the un-noised statistics")
    return replace(as_schema_1_0(bp), schema_version=SCHEMA_VERSION)


def add_gaussian_noise(bp: Blueprint, *, clip: float, noise_multiplier: float) -> Blueprint:
    """A copy of `bp` with clipped, Gaussian-noised gradient norms and CI bounds, and `privacy` recorded.

    Domain weights and fit results are left as they are, so this states no guarantee (`dp_release` does).
    """
    clip = _finite("clip", clip, positive=True)
    noise_multiplier = _finite("noise_multiplier", noise_multiplier, positive=False)
    bp = _unnoised(bp)
    sigma = noise_multiplier * clip
    rng = np.random.default_rng()  # the OS's entropy: nothing logged can redraw it

    def noised(value: float) -> float:
        # §5 Privacy: clip to bound the sensitivity, add N(0, σ²), σ = noise_multiplier·clip; floor at 0.
        return max(0.0, min(value, clip) + float(rng.normal(0.0, sigma)))

    layers = []
    for entry in bp.layers:
        norm = noised(entry.gradient_norm)
        ci = entry.ci
        if ci is not None:
            low, high = sorted((noised(ci.low), noised(ci.high)))
            # Post-processing only: keep the interval ordered and around the released value.
            ci = ConfidenceInterval(low=min(low, norm), high=max(high, norm), level=ci.level)
        layers.append(replace(entry, gradient_norm=norm, ci=ci))
    out = replace(
        bp,
        layers=tuple(layers),
        privacy=PrivacyRecord(
            mechanism="gaussian",
            clip=clip,
            noise_multiplier=noise_multiplier,
            sigma=sigma,
            note=NOISE_NOTE,
            release="noise",
        ),
    )
    blueprint_to_dict(out)  # validate on write
    return out


def dp_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """ε at δ of `releases` Gaussian queries of noise multiplier z (σ over the L2 sensitivity), composed by
    dp-accounting's RDP accountant under replace-one adjacency."""
    # Imported here, not with the module: dp-accounting brings absl, whose log handler closes the stream it grabbed at
    # import when Hydra's job logging clears the handlers (`cpr submit` in-process under a redirected stderr).
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise_multiplier), releases))
    return float(accountant.get_epsilon(delta))


def _clipped_batches(layer_id: str, values: Sequence[float], clip: float) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x < 0):
        raise InputError(f"samples[{layer_id!r}]", "must be one or more finite norms >= 0", "one per probe batch")
    return np.minimum(x, clip)


def dp_release(
    bp: Blueprint,
    samples: Mapping[str, Sequence[float]],
    *,
    clip: float,
    noise_multiplier: float,
    delta: float,
    prior_releases: int = 0,
) -> Blueprint:
    """`bp` as an (ε, δ)-DP release of its per-batch norms `samples` (docs/blueprints.md "Privacy").

    Per id, the mean of the n per-batch norms clipped to C has sensitivity C/n when one batch is replaced, so it is
    released with N(0, (z·C/n)²) noise; the L ids of a version are L Gaussian queries, composed with the
    `prior_releases` queries this run released before. Only DP_PUBLIC_LAYER_FIELDS are kept beside the noised norm.
    """
    clip = _finite("clip", clip, positive=True)
    noise_multiplier = _finite("noise_multiplier", noise_multiplier, positive=True)
    if not (is_finite_number(delta) and 0 < delta < 1):
        raise InputError("delta", f"must lie strictly between 0 and 1, got {delta!r}", "e.g. 1e-5")
    if isinstance(prior_releases, bool) or not isinstance(prior_releases, int) or prior_releases < 0:
        raise InputError("prior_releases", f"must be an integer >= 0, got {prior_releases!r}", None)
    bp = _unnoised(bp)
    ids = [entry.id for entry in bp.layers]
    if sorted(samples) != sorted(ids):
        raise InputError("samples", "must hold the per-batch norms of exactly the blueprint's ids", None)
    batches = {gid: _clipped_batches(gid, samples[gid], clip) for gid in ids}
    sizes = {x.size for x in batches.values()}
    if len(sizes) != 1:
        raise InputError("samples", f"ids have different numbers of batches ({sorted(sizes)})", "one norm per batch")
    n = sizes.pop()
    sigma = noise_multiplier * clip / n  # Gaussian mechanism: σ = z·Δ, Δ = C/n
    releases = prior_releases + len(ids)
    epsilon = dp_epsilon(noise_multiplier, releases, delta)
    if not is_finite_number(epsilon):
        raise InputError("noise_multiplier", f"{noise_multiplier!r} gives no finite epsilon", "raise it")
    rng = np.random.default_rng()  # the OS's entropy: nothing logged can redraw it
    withheld: dict[str, str] = {}
    for layer in blueprint_to_dict(bp)["layers"]:
        for key in layer:
            if key not in DP_PUBLIC_LAYER_FIELDS + DP_NOISED_LAYER_FIELDS:
                withheld.setdefault(key, _WHY_WITHHELD.get(key, _WHY_DEFAULT))
    layers = tuple(
        LayerEntry(
            id=entry.id,
            # Clamping to [0, C], where the clipped mean lies, is post-processing: it costs no privacy.
            gradient_norm=min(clip, max(0.0, float(batches[entry.id].mean()) + float(rng.normal(0.0, sigma)))),
            statistic="mean",
            n_batches=n,
            n_params=entry.n_params,
            prefixes=entry.prefixes,
        )
        for entry in bp.layers
    )
    out = replace(
        bp,
        layers=layers,
        privacy=PrivacyRecord(
            mechanism="gaussian",
            clip=clip,
            noise_multiplier=noise_multiplier,
            sigma=sigma,
            epsilon=epsilon,
            delta=float(delta),
            note=DP_NOTE,
            release="dp",
            accountant=ACCOUNTANT,
            adjacency=ADJACENCY,
            composed_releases=releases,
            withheld=withheld or None,
        ),
    )
    blueprint_to_dict(out)  # validate on write
    return out
