"""Parameters and data chosen together (§4.4; docs/select.md "Joint selection"): an adaptation that trains on a
selection (`data.selection`) whose manifest carries the cross-influence map T takes its blueprint norms Ḡ from the
map's rows for the kept data, not from the base's whole validation set: the submodules that matter for the kept
blocks are the ones it trains.

Ḡ_i = Σ_j w_j·T̂_ij, with w_j the kept windows' share in block j and T̂ the map's rank-r reconstruction (a block
D_small has no window of is left out). Only shares
of Ḡ enter Algorithm 1's blend, so its scale (per-example norms, larger than the probe's per-batch ones) does not
matter; each entry's CI bounds are scaled with it. Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from orchestrator.blueprints.model import Blueprint, ConfidenceInterval
from orchestrator.errors import InputError
from orchestrator.select.influence import CrossInfluence


def joint_norms(ci: CrossInfluence, kept_blocks: Mapping[str, float]) -> dict[str, float]:
    """Each group's influence on the kept data mix (block -> share of the kept windows). A block none of D_small's
    windows fell in has no column in the map: it adds nothing (its share is not redistributed; only shares of Ḡ
    matter)."""
    known = {b: w for b, w in kept_blocks.items() if b in ci.blocks}
    if not known:
        raise InputError(
            "data.selection",
            f"keeps only blocks the cross-influence map has no column for ({sorted(kept_blocks)[:3]})",
            "select with a larger select.sample, or set adapt.joint=false",
        )
    return ci.group_weights(known)


def joint_blueprint(
    bp: Blueprint, ci: CrossInfluence, kept_blocks: Mapping[str, float], selection_id: str
) -> Blueprint:
    """`bp` with every entry's gradient_norm (and CI) replaced by its influence on the kept blocks; provenance names
    the selection. InputError when the map's groups are not the blueprint's."""
    norms = joint_norms(ci, kept_blocks)
    ids = [e.id for e in bp.layers]
    if set(ids) != set(norms):
        raise InputError(
            "data.selection",
            f"its cross-influence map covers {sorted(norms)[:4]}…, the blueprint {sorted(ids)[:4]}…",
            "select with the same base the blueprint was published for, or set adapt.joint=false",
        )
    if not any(v > 0 for v in norms.values()):
        raise InputError("data.selection", "its cross-influence map gives the kept blocks no influence", None)
    layers = []
    for e in bp.layers:
        new = max(norms[e.id], 1e-12)
        ratio = new / e.gradient_norm if e.gradient_norm > 0 else 1.0
        ci_new = (
            None if e.ci is None else ConfidenceInterval(low=e.ci.low * ratio, high=e.ci.high * ratio, level=e.ci.level)
        )
        layers.append(dataclasses.replace(e, gradient_norm=new, ci=ci_new))
    provenance = {**(bp.provenance or {}), "joint_selection": selection_id, "joint_statistic": ci.statistic}
    return dataclasses.replace(bp, layers=tuple(layers), provenance=provenance)
