"""Checks a valid blueprint can still fail: do its numbers follow from each other as the paper defines them?

These are notes, not errors: the paper's own Appendix A example pairs α = 1.47 with γ = 0.60, while
γ = 1 − α/(1+α) gives 0.405 (docs/maths.md, erratum), and a consumer should know before relying on γ or k*.
Warnings name the entries whose fit supports no recommendation (docs/blueprints.md "Fit quality").
"""

from __future__ import annotations

from orchestrator.blueprints.model import Blueprint
from orchestrator.core.gradmass import gamma_from_alpha, k_star

GAMMA_TOLERANCE = 0.01
K_STAR_TOLERANCE = 0.01


def consistency_notes(bp: Blueprint) -> list[str]:
    """One line per entry whose γ does not follow from its α, or whose k* does not follow from γ and the
    resource model the file records (Prop. B.1)."""
    notes: list[str] = []
    rm = bp.resource_model
    for i, layer in enumerate(bp.layers):
        where = f"layers[{i}] ({layer.id})"
        if layer.alpha is not None and layer.gamma is not None and layer.alpha > 0:
            expected = gamma_from_alpha(layer.alpha)  # App. A (ii): γ = 1 − α/(1+α)
            if abs(expected - layer.gamma) > GAMMA_TOLERANCE:
                notes.append(
                    f"{where}: gamma {layer.gamma:g} is not 1 − α/(1+α) = {expected:.3f} for alpha {layer.alpha:g}"
                )
        # cpr's files derive k* from the measured gamma_fit; the paper's shape from its γ.
        gamma, name = (layer.gamma_fit, "gamma_fit") if layer.gamma_fit is not None else (layer.gamma, "gamma")
        if rm is not None and gamma is not None and layer.k_star is not None and 0 < gamma < 1:
            expected_k = k_star(gamma, rm.cost_fixed, rm.cost_per_param).k_star  # App. B.2, eq. (15)
            if abs(expected_k - layer.k_star) > K_STAR_TOLERANCE:
                notes.append(
                    f"{where}: k_star {layer.k_star:g} is not {expected_k:.3f}, the k* of {name} {gamma:g} "
                    f"under the file's resource model"
                )
    return notes


MIN_TAIL = 100
"""For files without a recommendation (older ones): fewer values in the fitted tail and α is noise."""


def degenerate_entries(bp: Blueprint) -> list[str]:
    """One line per entry whose k* a consumer should not act on: its recommendation is null (with the file's
    reason), or, in a file that predates recommendations, its α ≤ 1 or its tail holds too few values."""
    warnings: list[str] = []
    for i, layer in enumerate(bp.layers):
        where = f"layers[{i}] ({layer.id})"
        if layer.recommendation_reason is not None:
            if layer.recommendation is None:
                warnings.append(f"{where}: no recommendation: {layer.recommendation_reason}")
            continue
        if layer.k_star is None:
            continue
        if layer.alpha is not None and layer.alpha <= 1:
            warnings.append(f"{where}: k_star {layer.k_star:g} rests on alpha {layer.alpha:g} <= 1")
        elif layer.fit is not None and layer.fit.n_tail is not None and layer.fit.n_tail < MIN_TAIL:
            warnings.append(f"{where}: k_star {layer.k_star:g} rests on a tail of {layer.fit.n_tail} values")
    return warnings
