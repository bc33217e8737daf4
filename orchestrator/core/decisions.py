"""Decisions as data: a small typed vocabulary (as Ray Tune's schedulers keep theirs) plus the figures behind it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestrator.core.forecast import Forecast
from orchestrator.core.gain_left import GainLeft
from orchestrator.core.numbers import finite_or_none


class Action(StrEnum):
    CONTINUE = "continue"
    STOP = "stop"


class StopReason(StrEnum):
    MARGINAL_RETURN = "marginal_return"
    """ΔΨ/ΔΓ stayed below η for P successive checks (§3)."""
    BUDGET = "budget"
    """Γ reached the budget cap."""
    DIVERGED = "diverged"
    """Ψ was non-finite (NaN/Inf loss) for the configured number of successive checks."""
    USER = "user"
    """Someone asked for it."""
    INTERRUPTED = "interrupted"
    """Its attached client got SIGTERM or SIGINT (a scheduler's or a person's kill): checkpointed, resumable."""
    DOMINATED = "dominated"
    """The scheduler stopped it: another job of its group already has a Ψ its forecast says it will not reach by
    its budget, so its remaining Γ buys the group nothing."""


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What the stop rule decided at one evaluation check, with the figures it decided on."""

    check: int
    """1-based index of the evaluation check."""
    step: int | None
    """Optimizer step of the check, when known."""
    action: Action
    reason: StopReason | None
    psi: float
    """Ψ at this check (NaN/Inf when the evaluation was non-finite)."""
    gamma: float
    """Γ (the rule's resource kind) at this check."""
    ratio: float | None
    """Window ratio ΔΨ/ΔΓ, None while the window is not full or Γ did not move."""
    eta: float | None
    """Threshold η in force, None while a relative η awaits its reference ratio."""
    checks_below: int
    """Successive eligible checks with ratio < η, this one included."""
    warmup: bool
    """True while no marginal-return decision may be taken."""
    forecast: Forecast | None = None
    """Saturating power-law forecast: attached to STOP decisions, and to every budget-aware check that fitted one."""
    evidence: GainLeft | None = None
    """The budget-aware rule's figures at this check (gain so far, what the rest would buy, on which basis)."""

    @property
    def stopped(self) -> bool:
        return self.action is Action.STOP

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite Ψ is written as null."""
        return {
            "check": self.check,
            "step": self.step,
            "action": self.action.value,
            "reason": self.reason.value if self.reason else None,
            "psi": finite_or_none(self.psi),
            "gamma": self.gamma,
            "ratio": self.ratio,
            "eta": self.eta,
            "checks_below": self.checks_below,
            "warmup": self.warmup,
            "forecast": self.forecast.to_dict() if self.forecast else None,
            "evidence": self.evidence.to_dict() if self.evidence else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(
            check=int(data["check"]),
            step=data["step"],
            action=Action(data["action"]),
            reason=StopReason(data["reason"]) if data["reason"] else None,
            psi=math.nan if data["psi"] is None else float(data["psi"]),
            gamma=float(data["gamma"]),
            ratio=data["ratio"],
            eta=data["eta"],
            checks_below=int(data["checks_below"]),
            warmup=bool(data["warmup"]),
            forecast=Forecast.from_dict(data["forecast"]) if data["forecast"] else None,
            evidence=GainLeft.from_dict(data["evidence"]) if data.get("evidence") else None,
        )
