"""`cpr adapt [BASE] [overrides…]`: fine-tune a base model on the job's data (the target domain), training only the
submodules a selection strategy picks (the paper's Algorithm 1; docs/adapt.md), on the same path as `cpr submit`:
Ray + DeepSpeed ranks, the controller, telemetry, the stop rule (Ψ = −loss on the target's held-out split), MLflow.
"""

from __future__ import annotations

import argparse
import sys

from launch.output import console
from orchestrator.config.compose import job_to_yaml, options
from orchestrator.errors import InputError

ADAPT_DEFAULTS = ("probe=off", "name=adapt")
"""An adapt job publishes no blueprints (its frozen submodules have no gradient to measure); its ids read adapt-…."""


def register(verbs: argparse._SubParsersAction) -> None:
    try:
        strategies = ", ".join(options("adapt"))
    except InputError as err:
        strategies = err.one_line()
    p = verbs.add_parser(
        "adapt",
        help="fine-tune a model on the job's data, training only the submodules a blueprint says matter",
        description="Adapt BASE (a cpr job id, or a Hugging Face save_pretrained folder such as `cpr export` "
        "writes) to the job's data: measure the gradient on it, blend with the base's blueprint, train only the "
        "chosen submodules under adapt.max_fraction / adapt.memory_gb, stop by the marginal-return rule. "
        f"Strategies (adapt=…): {strategies}. Other arguments are Hydra overrides as for `cpr submit`, e.g. "
        "`cpr adapt my-job data.glob='test/test_*.py' adapt.max_fraction=0.2`.",
    )
    p.add_argument("--cfg", action="store_true", help="print the composed config, base and blueprint resolved")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="BASE first (or adapt.base=…), then Hydra overrides")
    p.set_defaults(func=run)


def base_overrides(args: argparse.Namespace, base_field: str, no_sweep: str, fix: str) -> tuple[list[str], bool]:
    """The Hydra overrides of a verb whose first argument is a base (`cpr adapt`, `cpr select`): BASE becomes
    `base_field=BASE`, `--cfg` may come anywhere, and a sweep (`-m`) is refused. Returns (overrides, --cfg given)."""
    overrides = [o for o in args.overrides if o != "--cfg"]
    cfg_only = args.cfg or len(overrides) < len(args.overrides)  # `cpr adapt BASE --cfg` too
    if {"-m", "--multirun"} & set(overrides):
        raise InputError("-m", no_sweep, fix)
    if overrides and "=" not in overrides[0] and not overrides[0].startswith(("+", "~", "-")):
        overrides[0] = f"{base_field}={overrides[0]}"
    return overrides, cfg_only


def run(args: argparse.Namespace) -> int:
    from launch.submit import launch, signalled
    from orchestrator.submission import plan_job, preflight
    from orchestrator.submission.adapt import plan_adapt

    overrides, cfg_only = base_overrides(
        args,
        "adapt.base",
        "adapt sweeps are not supported",
        "run one `cpr adapt` per strategy; `cpr report` compares runs",
    )
    plan = plan_job([*ADAPT_DEFAULTS, *overrides])
    preflight(plan.job)
    out = console(stderr=cfg_only)  # --cfg: stdout is the YAML alone
    plan = plan_adapt(plan, log=lambda line: out.print(f"[dim]adapt:[/dim] {line}"))
    if cfg_only:
        sys.stdout.write(job_to_yaml(plan.job))
        return 0
    return signalled(launch, plan)
