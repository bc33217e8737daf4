"""Sweeps (`cpr submit -m train.lr=1e-3,3e-3`): expand the overrides with Hydra's grammar, plan and check every job
before any is queued, then queue them all, detached, on the cluster's controller."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.config.compose import compose_dict, to_input_error
from orchestrator.errors import InputError
from orchestrator.submission.plan import JobPlan, plan_config
from orchestrator.submission.preflight import check_capacity, preflight
from orchestrator.submission.prepare import prepare
from orchestrator.submission.ray_cluster import disconnect, init_ray

MAX_SWEEP_JOBS = 64
"""A sweep that expands to more jobs than this is refused whole, nothing queued."""
LAUNCHER = "hydra/launcher=cpr"
"""cpr's Hydra launcher: recorded in the sweep's `multirun.yaml` as what queued its jobs."""


def new_sweep_id() -> str:
    """Tagged on every job's run (`cpr.sweep`): `cpr report --sweep <id>` compares them."""
    return f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Sweep:
    """Overrides split as Hydra's basic sweeper splits them: the app's jobs, and the overrides of Hydra itself."""

    jobs: tuple[tuple[str, ...], ...]
    """Each job's overrides (`key=value`, one value of each sweep)."""
    hydra_overrides: tuple[str, ...]


@dataclass(frozen=True)
class SweepPlan:
    """Every job of a sweep composed, named, detached and checked: queueing it needs no further check of input."""

    sweep_id: str
    jobs: tuple[JobPlan, ...]


@dataclass(frozen=True)
class Queued:
    """One job of a sweep, in the controller's queue."""

    job_id: str
    run_id: str
    overrides: tuple[str, ...]


def check_sweep_size(n_jobs: int) -> None:
    """The one cap on a sweep's size."""
    if n_jobs > MAX_SWEEP_JOBS:
        raise InputError("--multirun", f"the sweep expands to {n_jobs} jobs", f"sweep at most {MAX_SWEEP_JOBS}")


def expand_sweep(overrides: Sequence[str]) -> Sweep:
    """The product of every sweep's values, in Hydra's order (a key given twice keeps its first place, its last
    value), with Hydra's override grammar (`a=1,2`, `range(…)`, `choice(…)`); Hydra's own overrides set apart."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:  # Hydra's parse errors: one line naming the override
        raise to_input_error(exc, list(overrides)) from None
    per_key: dict[str, list[str]] = {}
    hydra_overrides = []
    for override in parsed:
        if override.is_hydra_override():
            hydra_overrides.append(override.input_line)
            continue
        key = override.get_key_element()
        if not override.is_sweep_override():
            per_key[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            per_key[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise InputError(
                f"overrides: {key}", "an interval sweep has no discrete values", "sweep a list or a range()"
            )
    jobs = tuple(tuple(job) for job in itertools.product(*per_key.values()))
    return Sweep(jobs=jobs, hydra_overrides=tuple(hydra_overrides))


def plan_sweep_jobs(
    job_overrides: Sequence[Sequence[str]],
    compose: Callable[[list[str]], Any],
    *,
    first_index: int = 0,
    sweep_id: str | None = None,
) -> SweepPlan:
    """Compose (`compose(overrides)` gives a DictConfig), name (`<name>-<index>` unless the sweep sets `name`),
    detach and check each job: one line naming the job on the first bad one, nothing queued."""
    check_sweep_size(first_index + len(job_overrides))
    jobs = []
    for idx, overrides in enumerate(job_overrides, start=first_index):
        try:
            try:
                cfg = compose(list(overrides))
            except InputError:
                raise
            except Exception as exc:  # another app's Hydra composing: its errors, one line
                raise to_input_error(exc, list(overrides)) from None
            name_it(cfg, idx, overrides)
            plan = plan_config(cfg, overrides)
            preflight(plan.job)
        except InputError as err:
            shown = " ".join(overrides)
            shown = shown if len(shown) <= 120 else shown[:117] + "..."
            raise InputError(f"job #{idx} ({shown}): {err.field}", err.problem, err.fix) from None
        jobs.append(plan)
    names = [p.job.name for p in jobs]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise InputError("name", f"the sweep gives several jobs the name {dupes[0]!r}", "sweep over name too")
    return SweepPlan(sweep_id=sweep_id or new_sweep_id(), jobs=tuple(jobs))


def name_it(cfg: Any, idx: int, overrides: Sequence[str]) -> None:
    """Every queued job needs its own name and runs detached."""
    from omegaconf import open_dict

    with open_dict(cfg):
        if not any(o.split("=", 1)[0].lstrip("+~") == "name" for o in overrides):
            cfg.name = f"{cfg.name}-{idx}"
        cfg.detach = True


def plan_sweep(overrides: Sequence[str]) -> tuple[SweepPlan, Any]:
    """`cpr submit -m OVERRIDES`: expand, then plan every job from the package's config groups; also returns the
    sweep's own config (Hydra's multirun composition, for `multirun.yaml`)."""
    sweep = expand_sweep(overrides)
    check_sweep_size(len(sweep.jobs))
    hydra = list(sweep.hydra_overrides)
    plan = plan_sweep_jobs(sweep.jobs, lambda job: compose_dict([*hydra, *job]))
    config = compose_dict([LAUNCHER, *overrides, "hydra.mode=MULTIRUN"], multirun=True)
    return plan, config


def queue_sweep(sweep: SweepPlan, log: Callable[[str], None] | None = None) -> list[Queued]:
    """Prepare every job (data, memory, tracking), join the cluster or start a local head, check each job fits its
    pool, and queue them all on the controller; they run detached. Leaves Ray when done."""
    from orchestrator.controller.actor import controller_handle

    prepared = [prepare(plan, sweep=sweep.sweep_id, log=log) for plan in sweep.jobs]
    first = sweep.jobs[0].job
    try:
        init_ray(first, start_head=True)
        for plan in sweep.jobs:
            check_capacity(plan.job)  # a job that could never fit the pool
        controller = controller_handle(first.cluster.namespace, detached=True)
        return [
            Queued(p.submission.job_id, p.submission.send(controller)["run_id"], p.plan.overrides) for p in prepared
        ]
    finally:
        disconnect()
