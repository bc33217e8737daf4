"""Optional Gaussian noise on released gradient norms (§5 "Privacy"), recorded in the file.

Each released norm (and its CI bounds) is clipped to `clip` and gets N(0, (noise_multiplier·clip)²) noise,
floored at 0. This is the Gaussian mechanism applied to aggregated statistics; it is a differential-privacy
guarantee only if the statistics were computed with per-example clipping, and the note in the file says so.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from orchestrator.blueprints.model import (
    Blueprint,
    ConfidenceInterval,
    PrivacyRecord,
    as_schema_1_0,
    blueprint_to_dict,
)
from orchestrator.core.numbers import is_finite_number
from orchestrator.errors import InputError

PRIVACY_NOTE = (
    "per-entry clipping of aggregated statistics; not a differential-privacy guarantee unless the statistics "
    "were computed with per-example clipping"
)


def _finite(name: str, value: float, *, positive: bool) -> float:
    if not is_finite_number(value) or (value <= 0 if positive else value < 0):
        bound = "> 0" if positive else ">= 0"
        raise InputError(name, f"must be a finite number {bound}, got {value!r}", None)
    return float(value)


def add_gaussian_noise(bp: Blueprint, *, clip: float, noise_multiplier: float, seed: int | None = None) -> Blueprint:
    """A copy of `bp` with clipped, Gaussian-noised gradient norms and CI bounds, and `privacy` recorded.

    Domain weights and fit results are left as they are. The seed is never recorded (it would undo the noise).
    """
    clip = _finite("clip", clip, positive=True)
    noise_multiplier = _finite("noise_multiplier", noise_multiplier, positive=False)
    if bp.privacy is not None:
        raise InputError("privacy", "this blueprint is already noised", "add noise once, to the un-noised statistics")
    bp = as_schema_1_0(bp)
    sigma = noise_multiplier * clip
    rng = np.random.default_rng(seed)

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
            mechanism="gaussian", clip=clip, noise_multiplier=noise_multiplier, sigma=sigma, note=PRIVACY_NOTE
        ),
    )
    blueprint_to_dict(out)  # validate on write
    return out
