"""What Ψ measures (§3: Ψ is capability, higher is better): −validation loss, a weighted mix of held-out domains'
losses, or a user's score of the model. The stop rule only needs Ψ to rise as the model improves; docs/maths.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.errors import InputError

GENERAL = "general"
"""The job's own validation split, as a domain of Ψ's mix (as the gradient probe names it)."""
LOSS_UNITS = "nats/token"
SCORE_UNITS = "score"


class PsiKind(StrEnum):
    """`psi=<kind>`: which quantity Ψ is."""

    val_loss = "val_loss"
    """Ψ = −validation loss on the job's own held-out split (the default)."""
    domains = "domains"
    """Ψ = −Σ_d w_d·loss_d over named held-out domains, weights normalised to sum 1."""
    fn = "fn"
    """Ψ = a user function's score of the rank-0 model (`psi.fn=package.module:function`)."""


@dataclass(frozen=True, kw_only=True)
class PsiSpec:
    """Ψ as one job defines it: its kind, the name and units it is logged under, and its inputs."""

    kind: PsiKind = PsiKind.val_loss
    name: str = "-val_loss"
    units: str = LOSS_UNITS
    weights: dict[str, float] = field(default_factory=dict)
    """domains: normalised weight per domain ("general" is the job's own validation split)."""
    fn: str | None = None
    """fn: `package.module:function`."""

    @property
    def is_val_loss(self) -> bool:
        """Ψ is exactly −validation loss, so what is left can also be stated as a share of that loss."""
        return self.kind is PsiKind.val_loss

    def params(self) -> dict[str, str]:
        """The run's MLflow params that say what its Ψ is, so runs are compared only on the same Ψ."""
        out = {"psi.kind": self.kind.value, "psi.name": self.name, "psi.units": self.units}
        out["psi.higher_is_better"] = "true"
        if self.weights:
            out["psi.weights"] = ",".join(f"{d}:{w:g}" for d, w in self.weights.items())
        if self.fn:
            out["psi.fn"] = self.fn
        return out

    def label(self) -> str:
        """How a figure or a summary names Ψ, e.g. `Ψ = -val_loss [nats/token]`."""
        return f"Ψ = {self.name} [{self.units}]"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "name": self.name, "units": self.units, "weights": self.weights, "fn": self.fn}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PsiSpec:
        return cls(**{**data, "kind": PsiKind(data["kind"]), "weights": dict(data.get("weights") or {})})


def default_name(kind: PsiKind, fn: str | None) -> str:
    """Ψ's name when `psi.name` is not set: what it is computed from."""
    if kind is PsiKind.fn and fn:
        return fn.rpartition(":")[2]
    return "-domain_mix_loss" if kind is PsiKind.domains else "-val_loss"


def normalised(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights ≥ 0, not all 0, scaled to sum 1 (a domain mix is an average, whatever scale they were given in)."""
    for name, w in weights.items():
        if not (isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0):
            raise InputError(f"psi.weights.{name}", f"must be a finite number ≥ 0, got {w!r}", "e.g. 0.5")
    total = math.fsum(weights.values())
    if total <= 0:
        raise InputError("psi.weights", "are all 0", "give at least one domain a positive weight")
    return {name: float(w) / total for name, w in weights.items()}


def domain_mix(losses: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Ψ = −Σ_d w_d·loss_d with normalised weights; a non-finite loss makes Ψ non-finite (the divergence guard)."""
    return -math.fsum(w * losses[d] for d, w in weights.items() if w > 0)
