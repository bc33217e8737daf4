"""Checks a valid blueprint can still fail: do its numbers follow from each other as the paper defines them?

These are notes, not errors: the paper's own Appendix A example pairs α = 1.47 with γ = 0.60, while
γ = 1 − α/(1+α) gives 0.405 (docs/maths.md, erratum), and a consumer should know before relying on γ or k*.
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
        if rm is not None and layer.gamma is not None and layer.k_star is not None and 0 < layer.gamma < 1:
            expected_k = k_star(layer.gamma, rm.cost_fixed, rm.cost_per_param).k_star  # App. B.2, eq. (15)
            if abs(expected_k - layer.k_star) > K_STAR_TOLERANCE:
                notes.append(
                    f"{where}: k_star {layer.k_star:g} is not {expected_k:.3f}, the k* of gamma {layer.gamma:g} "
                    f"under the file's resource model"
                )
    return notes
