"""How many batches one gradient probe takes, and when a periodic probe is due: the probe's cost kept to a share of
training time (docs/overhead.md).

A probe measures each submodule's gradient norm on validation batches, a batch at a time on every rank. It stops
once the statistic is precise enough (every submodule's t-interval of the mean per-batch norm within `ci_target` of
the mean) or once another batch would take it past its time budget, never below `min_batches` nor above the cap.
The budget is what `probe.max_share` of the training time so far leaves after the probes already taken, shared
evenly over the domains still to probe. Every rank calls `enough_batches` with the same gathered norms and the
same (slowest rank's) times, so all of them stop at the same batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True, kw_only=True)
class ProbeSizing:
    """The batches a probe may take per rank and domain, and what stops it before the cap."""

    min_batches: int
    max_batches: int
    ci_target: float | None
    """Relative half-width of every submodule's t-interval of the mean at which the probe stops; None: never."""
    ci_level: float
    max_share: float | None
    """Most of the training time (so far) the probes may take; None: no time budget."""


def relative_half_width(samples: np.ndarray, level: float) -> float:
    """The largest, over columns (submodules), half-width of the t-interval of the mean ÷ the mean; inf when a
    column has fewer than two samples or a zero mean."""
    n = samples.shape[0]
    if n < 2:
        return math.inf
    mean = samples.mean(axis=0)
    if np.any(mean <= 0):
        return math.inf
    sem = samples.std(axis=0, ddof=1) / math.sqrt(n)
    t = float(stats.t.ppf(0.5 + level / 2, n - 1))
    return float(np.max(t * sem / mean))


def enough_batches(
    norms: Sequence[Sequence[float]], *, done: int, elapsed_s: float, budget_s: float | None, sizing: ProbeSizing
) -> bool:
    """Whether a probe that has taken `done` batches per rank (`norms`: every rank's per-batch norms so far, one row
    per batch, one column per submodule) stops here: at the cap; else not below the floor; else when precise enough
    or when one more batch (at the mean time per batch so far) would overrun `budget_s`."""
    if done >= sizing.max_batches:
        return True
    if done < sizing.min_batches:
        return False
    if budget_s is not None and elapsed_s + elapsed_s / done > budget_s:
        return True
    if sizing.ci_target is None:
        return False
    return relative_half_width(np.asarray(norms, dtype=float), sizing.ci_level) <= sizing.ci_target


def probe_budget_s(sizing: ProbeSizing, *, loop_s: float, probe_s: float, domains_left: int) -> float | None:
    """This domain's time budget: `max_share` of the training loop's time so far, less the probes' time so far,
    shared evenly over the domains of this probe still to measure (this one included); None without a budget."""
    if sizing.max_share is None:
        return None
    return max(0.0, sizing.max_share * loop_s - probe_s) / max(1, domains_left)


def periodic_due(step: int, last_probe_step: int, interval: int) -> bool:
    """A periodic probe is due when no probe (periodic or blueprint checkpoint) has run for `interval` steps: the
    grad/norm series keeps a point at least every `interval` steps without probing twice in a row."""
    return step - last_probe_step >= interval
