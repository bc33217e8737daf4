"""The stoppers users pick today, replayed on the same curves as ours (anchors for `benchmarks/savings`).

- `PlateauStopper` mirrors Ray Tune's `TrialPlateauStopper` (python/ray/tune/stopper/trial_plateau.py): keep the
  last `num_results` values; after `grace_period` results, stop when their population std < `std` (and, if set,
  the value is past `metric_threshold` in the `mode` direction).
- `PatienceStopper` mirrors transformers' `EarlyStoppingCallback` (trainer_callback.py): a check improves when it
  beats the best *earlier* value by more than `threshold` (absolute); otherwise the counter grows; stop when it
  reaches `patience`. The Trainer updates the best metric after the callback runs, as here.
Both watch validation loss (lower is better).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from orchestrator.errors import InputError


@dataclass(frozen=True, kw_only=True)
class PlateauConfig:
    std: float = 0.01
    num_results: int = 4
    grace_period: int = 4
    metric_threshold: float | None = None
    mode: str = "min"

    def __post_init__(self) -> None:
        if not (isinstance(self.std, int | float) and math.isfinite(self.std) and self.std > 0):
            raise InputError("plateau.std", f"must be a finite number > 0, got {self.std!r}", "e.g. 0.01")
        if not isinstance(self.num_results, int) or self.num_results < 2:
            raise InputError("plateau.num_results", f"must be an integer ≥ 2, got {self.num_results!r}", "e.g. 4")
        if not isinstance(self.grace_period, int) or self.grace_period < 0:
            raise InputError("plateau.grace_period", f"must be an integer ≥ 0, got {self.grace_period!r}", "e.g. 4")
        if self.mode not in ("min", "max"):
            raise InputError("plateau.mode", f"must be min or max, got {self.mode!r}", "min for a loss")


class PlateauStopper:
    def __init__(self, config: PlateauConfig) -> None:
        self.config = config
        self.results: deque[float] = deque(maxlen=config.num_results)
        self.iterations = 0

    def observe(self, value: float) -> bool:
        c = self.config
        self.results.append(value)
        self.iterations += 1
        if self.iterations < c.grace_period or len(self.results) < c.num_results:
            return False
        threshold = c.metric_threshold
        if threshold is not None and (value > threshold if c.mode == "min" else value < threshold):
            return False
        mean = math.fsum(self.results) / len(self.results)
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in self.results) / len(self.results))  # np.std: population
        return std < c.std


@dataclass(frozen=True, kw_only=True)
class PatienceConfig:
    patience: int = 3
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.patience, int) or self.patience < 1:
            raise InputError("patience.patience", f"must be an integer ≥ 1, got {self.patience!r}", "e.g. 3")
        if not (isinstance(self.threshold, int | float) and math.isfinite(self.threshold) and self.threshold >= 0):
            raise InputError("patience.threshold", f"must be a finite number ≥ 0, got {self.threshold!r}", "e.g. 0")


class PatienceStopper:
    def __init__(self, config: PatienceConfig) -> None:
        self.config = config
        self.best: float | None = None
        self.counter = 0

    def observe(self, loss: float) -> bool:
        if self.best is None or (loss < self.best and abs(loss - self.best) > self.config.threshold):
            self.counter = 0
        else:
            self.counter += 1
        if self.best is None or loss < self.best:
            self.best = loss
        return self.counter >= self.config.patience
