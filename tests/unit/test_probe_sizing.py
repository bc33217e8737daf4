"""How many batches a probe takes, and when a periodic probe is due (core/probe_sizing.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from orchestrator.config.compose import compose_job
from orchestrator.core.probe_sizing import (
    ProbeSizing,
    enough_batches,
    periodic_due,
    probe_budget_s,
    relative_half_width,
)
from orchestrator.errors import InputError


def sizing(**kw: object) -> ProbeSizing:
    base: dict[str, object] = {
        "min_batches": 2,
        "max_batches": 4,
        "ci_target": 0.1,
        "ci_level": 0.95,
        "max_share": 0.02,
    }
    return ProbeSizing(**{**base, **kw})  # type: ignore[arg-type]


def test_relative_half_width_is_the_t_interval_of_the_worst_submodule() -> None:
    samples = np.array([[1.0, 10.0], [2.0, 10.5], [3.0, 9.5]])
    t = stats.t.ppf(0.975, 2)
    first = t * np.std([1, 2, 3], ddof=1) / math.sqrt(3) / 2.0
    assert relative_half_width(samples, 0.95) == pytest.approx(first)
    assert relative_half_width(samples[:1], 0.95) == math.inf  # one sample: no interval
    assert relative_half_width(np.zeros((3, 2)), 0.95) == math.inf  # a zero mean: no relative width


def test_floor_and_cap_win_over_budget_and_precision() -> None:
    precise = [[1.0, 2.0]] * 4  # zero spread: as precise as it gets
    assert not enough_batches(precise[:1], done=1, elapsed_s=100.0, budget_s=0.0, sizing=sizing())
    assert enough_batches(precise, done=4, elapsed_s=0.0, budget_s=None, sizing=sizing(ci_target=None))
    assert enough_batches(precise, done=2, elapsed_s=0.0, budget_s=None, sizing=sizing())


def test_the_budget_stops_before_a_batch_would_overrun_it() -> None:
    noisy = [[1.0], [3.0], [1.5], [2.5]]  # far from a 10 % interval
    s = sizing()
    # 2 batches in 1 s: a third would end at 1.5 s.
    assert not enough_batches(noisy[:2], done=2, elapsed_s=1.0, budget_s=1.5, sizing=s)
    assert enough_batches(noisy[:2], done=2, elapsed_s=1.0, budget_s=1.49, sizing=s)
    assert not enough_batches(noisy[:2], done=2, elapsed_s=1.0, budget_s=None, sizing=s)


def test_budget_is_the_share_left_split_over_the_domains_to_go() -> None:
    s = sizing(max_share=0.02)
    assert probe_budget_s(s, loop_s=1000.0, probe_s=5.0, domains_left=3) == pytest.approx(5.0)
    assert probe_budget_s(s, loop_s=1000.0, probe_s=30.0, domains_left=1) == 0.0  # overspent: the floor only
    assert probe_budget_s(sizing(max_share=None), loop_s=1000.0, probe_s=0.0, domains_left=1) is None


def test_periodic_probe_counts_from_the_last_probe_of_any_kind() -> None:
    # The default job: blueprint checkpoints at 192, 384, 615, 768 of 768 steps, interval 250: no periodic probe.
    last, periodic = 0, []
    for step in range(1, 769):
        if step in (192, 384, 615, 768):
            last = step
        elif periodic_due(step, last, 250):
            last = step
            periodic.append(step)
    assert periodic == []
    assert periodic_due(250, 0, 250) and not periodic_due(249, 0, 250)


def test_config_sizing_and_its_refusals() -> None:
    job = compose_job([])
    assert job.probe.sizing() == ProbeSizing(min_batches=1, max_batches=4, ci_target=0.1, ci_level=0.95, max_share=0.02)
    dp = compose_job(["probe.privacy=dp", "probe.noise_multiplier=1.0"])
    sized = dp.probe.sizing()
    assert sized.ci_target is None and sized.max_share is None  # under DP n is fixed by the config: always 4
    from orchestrator.submission import plan_of

    with pytest.raises(InputError, match=r"probe\.min_batches"):
        plan_of(compose_job(["probe.min_batches=5"]))
