"""A STOP that ends in a learning-rate cool-down: when it applies, how long it is, and what it gained.

Under `train.schedule=wsd` a STOP (the rule's `marginal_return`, a `user`'s, or the Γ cap's `budget`, unless
`stop.on_stop=halt`) does not end the job at once: its ranks decay the LR over a short cool-down from the decision's
step, with evaluations going on, then checkpoint and end. The rule decides on the stable phase only: no cool-down
point, nor one of the budget's own decay, ever feeds its ratio. Pure: the controller's tracker holds these.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.core.decisions import StopReason
from orchestrator.core.lr_schedule import budget_decay_steps

COOLS = frozenset({StopReason.MARGINAL_RETURN, StopReason.USER, StopReason.BUDGET})
"""STOPs that may end in a cool-down; a divergence, the scheduler's `dominated` and an interrupt always halt."""


@dataclass(frozen=True, kw_only=True)
class CooldownPlan:
    """A job's cool-down settings (from train.* and stop.on_stop) and the sizes they give at a step."""

    enabled: bool
    """train.schedule=wsd and stop.on_stop=cooldown."""
    shape: str
    fraction: float
    fixed_steps: int | None
    eval_interval: int
    total_steps: int

    @property
    def decay_start(self) -> int:
        """The budget's own decay starts after this many steps: checks past it are not the stable phase."""
        return self.total_steps - budget_decay_steps(self.total_steps, self.fraction, self.fixed_steps)

    def stable(self, step: int) -> bool:
        """A check after `step` steps evaluates a model trained at the stable LR only (WSD), or any step otherwise."""
        return not self.enabled or step <= self.decay_start

    def steps_at(self, step: int) -> int:
        """The cool-down's length from a STOP at `step`: `fixed_steps` or `fraction` of the steps so far, rounded up
        to whole evaluation intervals (it ends on a check), never past the budget."""
        raw = self.fixed_steps if self.fixed_steps is not None else math.ceil(self.fraction * step - 1e-9)
        n = self.eval_interval * max(1, math.ceil(raw / self.eval_interval))
        return max(0, min(n, self.total_steps - step))

    def cools(self, reason: StopReason | None, step: int) -> bool:
        """Whether a STOP for `reason` at `step` goes into a cool-down (not in the budget's own decay: it is one)."""
        return self.enabled and reason in COOLS and self.stable(step) and self.steps_at(step) > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CooldownPlan:
        return cls(**data)


OFF = CooldownPlan(enabled=False, shape="1-sqrt", fraction=0.2, fixed_steps=None, eval_interval=1, total_steps=1)
"""No cool-down (a tracker built without a plan, or one restored from before cool-downs existed)."""


@dataclass(kw_only=True)
class Cooldown:
    """One job's cool-down: where its STOP was decided, how far it runs, and Ψ and Γ at the decision and its end."""

    reason: str
    """The STOP's reason."""
    shape: str
    start_step: int | None = None
    """None while pending: a STOP decided between checks (a user's) starts its cool-down at the next check."""
    steps: int = 0
    decision: dict[str, Any] = field(default_factory=dict)
    """At the decision's check: step, tokens, psi, val_loss, gamma (every kind)."""
    end: dict[str, Any] = field(default_factory=dict)
    """The same at its latest check."""
    done: bool = False
    cut: str | None = None
    """Why it ended before its last step (a user's second stop, a divergence, an interrupt), else None."""

    @property
    def pending(self) -> bool:
        return self.start_step is None

    @property
    def end_step(self) -> int | None:
        return None if self.start_step is None else self.start_step + self.steps

    @property
    def active(self) -> bool:
        """Its ranks are (or are about to be) decaying: the job holds its slots and is not halted."""
        return not self.done and self.cut is None

    def begin(self, step: int, steps: int, figures: dict[str, Any]) -> None:
        self.start_step, self.steps = int(step), int(steps)
        self.decision = dict(figures)
        self.end = dict(figures)
        self.done = steps <= 0

    def reached(self, figures: dict[str, Any]) -> bool:
        """A check during the cool-down: its figures are the latest; True at its last step."""
        self.end = dict(figures)
        assert self.end_step is not None
        if figures["step"] >= self.end_step:
            self.done = True
        return self.done

    def span(self) -> dict[str, Any]:
        """Where it runs: start, steps, end and shape (what its STOP's decision record carries)."""
        return {"start_step": self.start_step, "steps": self.steps, "end_step": self.end_step, "shape": self.shape}

    def psi_gained(self) -> float | None:
        """Ψ at its end minus Ψ at the decision (the gain the cool-down bought)."""
        a, b = self.decision.get("psi"), self.end.get("psi")
        return None if a is None or b is None else b - a

    def to_dict(self) -> dict[str, Any]:
        """As persisted, and as the summary shows it (with its end step and Ψ gained)."""
        return {
            "reason": self.reason,
            **self.span(),
            "decision": self.decision,
            "end": self.end,
            "done": self.done,
            "cut": self.cut,
            "psi_gained": self.psi_gained(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cooldown:
        keep = ("reason", "shape", "start_step", "steps", "decision", "end", "done", "cut")
        return cls(**{k: data[k] for k in keep if k in data})
