"""The cross-influence map (§4.4, App. B.5; docs/select.md): T_ij = |∂L(z_j)/∂θ_i| aggregated to submodule group i
× data block j, and its low-rank summary, which a blueprint carries (`cross_influence`).

T_ij is the mean, over the sampled windows of block j, of group i's per-example gradient norm under the base model.
Its SVD T = U Σ Vᵀ says how many independent "which data moves which submodules" patterns there are: the share of
Σσ² the top r singular values hold is the energy a rank-r summary keeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STATISTIC = "mean per-example gradient norm of the group over the block's sampled windows"


@dataclass(frozen=True, kw_only=True)
class CrossInfluence:
    """T's rank-r summary: the groups and blocks it is over, every singular value, the top r left (groups) and right
    (blocks) singular vectors, and the energy share they hold."""

    statistic: str
    block_kind: str
    """folder | cluster: what a block is."""
    groups: tuple[str, ...]
    blocks: tuple[str, ...]
    examples: tuple[int, ...]
    """Sampled windows per block (T's column j is a mean over that many)."""
    rank: int
    singular_values: tuple[float, ...]
    """All of them, descending."""
    energy: float
    """Σ_{k<r} σ_k² / Σ σ²."""
    u: tuple[tuple[float, ...], ...]
    """groups × rank."""
    v: tuple[tuple[float, ...], ...]
    """blocks × rank."""

    def approx(self) -> np.ndarray:
        """The rank-r reconstruction of T (groups × blocks)."""
        s = np.asarray(self.singular_values[: self.rank])
        return (np.asarray(self.u) * s) @ np.asarray(self.v).T

    def group_weights(self, block_weights: Mapping[str, float]) -> dict[str, float]:
        """Each group's influence on a data mix: Σ_j w_j·T̂_ij over the blocks named (others weigh 0), clipped at 0
        (a rank-r reconstruction can dip below). KeyError for a block the map does not have."""
        t = self.approx()
        w = np.zeros(len(self.blocks))
        for name, weight in block_weights.items():
            w[self.blocks.index(name)] = weight
        return {g: max(0.0, float(v)) for g, v in zip(self.groups, t @ w, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "block_kind": self.block_kind,
            "groups": list(self.groups),
            "blocks": list(self.blocks),
            "examples": list(self.examples),
            "rank": self.rank,
            "singular_values": list(self.singular_values),
            "energy": self.energy,
            "u": [list(r) for r in self.u],
            "v": [list(r) for r in self.v],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CrossInfluence:
        return cls(
            statistic=str(d["statistic"]),
            block_kind=str(d["block_kind"]),
            groups=tuple(d["groups"]),
            blocks=tuple(d["blocks"]),
            examples=tuple(int(n) for n in d["examples"]),
            rank=int(d["rank"]),
            singular_values=tuple(float(s) for s in d["singular_values"]),
            energy=float(d["energy"]),
            u=tuple(tuple(float(x) for x in r) for r in d["u"]),
            v=tuple(tuple(float(x) for x in r) for r in d["v"]),
        )


def influence_matrix(
    norms: np.ndarray, labels: Sequence[str], blocks: Iterable[str]
) -> tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]:
    """T (groups × blocks) from per-example per-group norms (examples × groups) and each example's block; blocks
    no example fell in are left out. Returns T, the blocks kept, and their example counts."""
    x = np.asarray(norms, dtype=float)
    lab = np.asarray(list(labels))
    cols, kept, counts = [], [], []
    for b in blocks:
        mask = lab == b
        if mask.any():
            cols.append(x[mask].mean(axis=0))
            kept.append(b)
            counts.append(int(mask.sum()))
    if not cols:
        raise ValueError("no example falls in any block")
    return np.stack(cols, axis=1), tuple(kept), tuple(counts)


def cross_influence(
    norms: np.ndarray,
    labels: Sequence[str],
    groups: Sequence[str],
    blocks: Iterable[str],
    *,
    rank: int,
    block_kind: str,
) -> CrossInfluence:
    """T's SVD summary at rank min(rank, groups, blocks). Signs are fixed so each singular vector's largest entry
    is positive (an SVD's signs are arbitrary; a stored map should not flip between equal runs)."""
    t, kept, counts = influence_matrix(norms, labels, blocks)
    if t.shape[0] != len(groups):
        raise ValueError(f"{t.shape[0]} group norms per example, {len(groups)} group names")
    u, s, vt = np.linalg.svd(t, full_matrices=False)
    r = max(1, min(rank, s.size))
    for k in range(r):
        if u[np.argmax(np.abs(u[:, k])), k] < 0:
            u[:, k], vt[k] = -u[:, k], -vt[k]
    total = float(np.sum(s**2))
    return CrossInfluence(
        statistic=STATISTIC,
        block_kind=block_kind,
        groups=tuple(groups),
        blocks=kept,
        examples=counts,
        rank=r,
        singular_values=tuple(float(x) for x in s),
        energy=float(np.sum(s[:r] ** 2) / total) if total > 0 else 1.0,
        u=tuple(tuple(float(x) for x in row) for row in u[:, :r]),
        v=tuple(tuple(float(x) for x in row) for row in vt[:r].T),
    )
