"""The learning-rate schedule as a multiplier on `train.lr` per optimizer step: warm-up, then constant, cosine, or
warmup–stable–decay (WSD) with a decay that a STOP can start early (the cool-down, docs/cooldown.md).

WSD (Hu et al. 2024, MiniCPM; Hägele et al. 2024) holds the LR constant after warm-up and decays it only at the end,
so a run can be ended at any step by a short decay from there and land close to a full schedule to that point.
`LrSchedule` is what torch's LambdaLR calls; it is a plain object so LambdaLR's `state_dict` (which keeps a callable
object's `__dict__`) carries a started cool-down into DeepSpeed checkpoints: a gang restarted from one decays on
where it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "cosine", "wsd")
SHAPES = ("linear", "cosine", "1-sqrt")
"""The decay's shape over its progress p ∈ [0, 1]: 1 − p, ½(1 + cos πp), or 1 − √p (Hägele et al. 2024, §3: the
best of the three at equal length)."""


def decay_factor(shape: str, progress: float, floor: float) -> float:
    """The multiplier at `progress` through a decay from 1 down to `floor`."""
    p = min(1.0, max(0.0, progress))
    if shape == "linear":
        d = 1.0 - p
    elif shape == "cosine":
        d = 0.5 * (1.0 + math.cos(math.pi * p))
    elif shape == "1-sqrt":
        d = 1.0 - math.sqrt(p)
    else:
        raise ValueError(f"unknown decay shape {shape!r} (one of {', '.join(SHAPES)})")
    return floor + (1.0 - floor) * d


def budget_decay_steps(total_steps: int, fraction: float, fixed_steps: int | None) -> int:
    """Steps of a WSD run's own decay at the end of its budget: `fixed_steps`, else `fraction` of the budget."""
    return fixed_steps if fixed_steps is not None else max(1, math.ceil(fraction * total_steps - 1e-9))


@dataclass
class LrSchedule:
    """Multiplier on train.lr for the optimizer step of 0-based index `k` (LambdaLR's `last_epoch`)."""

    kind: str
    warmup_steps: int
    total_steps: int
    floor: float
    """The multiplier a cosine or a decay ends at (train.min_lr_fraction)."""
    shape: str = "1-sqrt"
    decay_steps: int = 0
    """WSD: the budget's own decay, over the last `decay_steps` steps."""
    cooldown_start: int | None = None
    """A cool-down started by a STOP after this many steps (it replaces the budget's decay)."""
    cooldown_steps: int = 0

    @property
    def decay_start(self) -> int:
        """The step count after which the LR decays (WSD): the cool-down's start, else the budget's decay's."""
        if self.cooldown_start is not None:
            return self.cooldown_start
        return self.total_steps - self.decay_steps

    def cool(self, start: int, steps: int) -> None:
        """Decay over the `steps` optimizer steps after `start` steps (index start … start + steps − 1)."""
        self.cooldown_start, self.cooldown_steps = int(start), int(steps)

    def __call__(self, k: int) -> float:
        if self.warmup_steps and k < self.warmup_steps:
            return (k + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            return decay_factor(
                "cosine", (k - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps), self.floor
            )
        start = self.decay_start
        if k < start:
            return 1.0
        n = self.cooldown_steps if self.cooldown_start is not None else self.decay_steps
        # The decay's last step trains at the floor: step index start + n − 1 has progress 1.
        return decay_factor(self.shape, (k - start + 1) / max(1, n), self.floor)
