"""`cpr submit [overrides…]`: run one pretraining job on Ray + DeepSpeed, or queue a sweep, and say how it went.

The work is orchestrator.submission's (plan, preflight, Hydra's output folder, prepare, start, follow); this verb
parses the command line and prints: the data preparation, the job's ids, a progress bar, the closing summary. With
`detach=true` it prints the job id and returns, and the job runs on in the Ray cluster.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING, Any

from launch.output import MISSING, console, fmt
from orchestrator.config.compose import GROUPS, config_dir, job_to_yaml, options
from orchestrator.config.schema import JobConfig
from orchestrator.core.lifecycle import JobLifecycle, lifecycle
from orchestrator.errors import InputError

if TYPE_CHECKING:
    from orchestrator.submission import JobPlan, Outcome, Started

DRAIN_S = 300.0


def register(verbs: argparse._SubParsersAction) -> None:
    try:
        groups = "; ".join(f"{g}: {', '.join(options(g))}" for g in GROUPS if (config_dir() / g).is_dir())
    except InputError as err:  # CPR_CONFIG_DIR without a config.yaml: say so at `cpr submit`, not at every verb
        groups = err.one_line()
    p = verbs.add_parser(
        "submit",
        help="run a pretraining job from the config groups with Hydra overrides",
        description="Run a pretraining job on Ray + DeepSpeed with live marginal-return stopping. Arguments are "
        "Hydra overrides of orchestrator/conf/config.yaml, e.g. `cpr submit +experiment=debug stop.max_loss=0.02`. "
        f"Config groups: {groups}.",
    )
    p.add_argument("--cfg", action="store_true", help="print the composed, validated config and exit")
    p.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="a Hydra sweep (e.g. train.lr=1e-3,3e-3): queue every job on the cluster's controller, detached",
    )
    p.add_argument(
        "overrides", nargs=argparse.REMAINDER, help="Hydra overrides: key=value, group=option, +experiment=debug"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.submission import plan_job, preflight

    overrides = list(args.overrides)
    if args.multirun or {"-m", "--multirun"} & set(overrides):
        return run_sweep([o for o in overrides if o not in ("-m", "--multirun")])
    plan = plan_job(overrides)  # one-line InputError on any composition problem or bad value
    if args.cfg:
        sys.stdout.write(job_to_yaml(plan.job))
        return 0
    preflight(plan.job)  # before Hydra's output folder: a refused job leaves nothing behind
    try:
        return launch(plan)
    except KeyboardInterrupt:
        return 130


def launch(plan: JobPlan) -> int:
    """Everything after the checks: Hydra's output folder, data, Ray, controller, then follow or detach."""
    from orchestrator.submission import disconnect, job_env, open_run_dir, prepare, start

    out = console()
    job = plan.job
    output_dir = open_run_dir(plan)
    with job_env(plan):
        prepared = prepare(plan, output_dir=output_dir, log=lambda line: out.print(f"[dim]data:[/dim] {line}"))
        try:
            started = start(prepared)
            out.print(f"job id: {started.job_id}")
            out.print(f"MLflow run id: {started.run_id}")
            out.print(
                f"[dim]{prepared.n_params / 1e6:.2f}M-parameter {job.model.arch} on {started.where}, "
                f"{job.cluster.num_workers} ranks, ZeRO-{job.deepspeed.zero_stage} {job.deepspeed.precision}; "
                f"tracking {started.tracking_uri}[/dim]"
            )
            if job.detach:
                out.print(
                    f"detached: `cpr status --tracking-uri {started.tracking_uri}` follows it, "
                    f"`cpr stop {started.job_id}` stops it"
                )
                return 0
            outcome = follow(started, job)
            drain(started)
            if outcome.input_error:  # bad input only the run could meet: one line, exit 2, like any other
                raise InputError(**outcome.input_error)
            print_summary(outcome, job)
            return 0 if outcome.ok else 1
        finally:
            if not job.detach:
                disconnect()


def run_sweep(overrides: list[str]) -> int:
    """`cpr submit -m …`: every job of the sweep checked, then all queued on the cluster's controller (detached)."""
    from orchestrator.submission import open_sweep_dir, plan_sweep, queue_sweep

    sweep, config = plan_sweep(overrides)  # one line naming the job on the first bad one, nothing written
    open_sweep_dir(config)
    queued = queue_sweep(sweep)
    out = console()
    for q in queued:
        out.print(f"queued {q.job_id} (MLflow run {q.run_id}): {' '.join(q.overrides)}")
    out.print(
        f"{len(queued)} jobs queued on the cluster's controller; `cpr status` follows them, `ray stop` ends the head"
    )
    out.print(
        f"sweep {sweep.sweep_id}: its last job to end logs the comparison report under sweep_report/; "
        f"`cpr report --sweep {sweep.sweep_id}` draws it at any time"
    )
    return 0


def drain(started: Started, timeout_s: float = DRAIN_S) -> None:
    """Before local Ray shuts down with the controller in it: let the run's MLflow writes reach the store (an
    outage at the job's end), else say where they wait."""
    from orchestrator.submission import drain as drain_writes

    owed = drain_writes(started, 1.0)
    if owed:
        out = console()
        out.print(f"[yellow]MLflow has not taken {owed} writes yet: waiting up to {timeout_s:.0f} s…[/yellow]")
        owed = drain_writes(started, timeout_s)
        if owed:
            out.print(
                f"[yellow]{owed} MLflow writes stay in {started.state_dir}/mlflow_journal.jsonl: `cpr sync` sends "
                "them once the store answers[/yellow]"
            )


def follow(started: Started, job: JobConfig) -> Outcome:
    """A progress bar until the job ends; Ctrl-C asks for a user stop (checkpoint first), twice aborts."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestrator.submission import follow as follow_job
    from orchestrator.submission import request_stop

    total_steps = job.total_steps
    interrupted = {"n": 0}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted["n"] += 1
        if interrupted["n"] > 1:
            raise KeyboardInterrupt
        request_stop(started)

    previous = signal.signal(signal.SIGINT, on_sigint)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    try:
        with Progress(*columns, console=console(), transient=False) as bar:
            task = bar.add_task("steps", total=total_steps, info="starting workers…")
            return follow_job(started, lambda v: bar.update(task, completed=v["step"], info=progress_info(v)))
    finally:
        signal.signal(signal.SIGINT, previous)


def progress_info(v: dict[str, Any]) -> str:
    state = lifecycle(v.get("state"))
    # Waiting, (re)starting or stopping: the scheduler's word says more than the step does.
    if state is not None and state.live and state is not JobLifecycle.RUNNING and v.get("schedule"):
        return f"{v['state']}: {v['schedule']}"
    kind = v["resource"]
    gamma = v["gamma"].get(kind)
    ratio, eta = v.get("ratio"), v.get("eta")
    parts = [
        f"loss {fmt(v['loss'])}",
        f"Ψ {fmt(v['psi'])}",
        f"Γ {fmt(gamma)} {kind}",
        f"ΔΨ/ΔΓ {fmt(ratio)} vs η {fmt(eta)}",
    ]
    if v.get("decision") == "stop":
        parts.append(f"[bold]STOP[/bold] ({v.get('reason')})")
    return "  ".join(parts)


def print_summary(outcome: Outcome, job: JobConfig) -> None:
    """The closing summary: why the job ended, Ψ, Γ used and projected, the stop rule's last numbers, the forecast."""
    from rich.table import Table

    out = console()
    s = outcome.summary
    if outcome.state == "failed":
        out.print(f"[red]job failed[/red]: {outcome.error}")
    reason = s.get("reason") or MISSING
    out.print(
        f"\n[bold]{outcome.state.upper()}[/bold] — reason: {reason} at step {s.get('step')} "
        f"(check {s.get('checks')}), MLflow run {outcome.run_id}"
    )
    out.print(f"Ψ = {fmt(s.get('psi'))} (validation loss {fmt(s.get('val_loss'))} nats/token)")
    table = Table("Γ kind", "used", f"projected at the token budget ({job.train.max_tokens:,} tokens)")
    for kind, value in (s.get("gamma") or {}).items():
        table.add_row(kind, fmt(value), fmt((s.get("gamma_projected_at_budget") or {}).get(kind)))
    out.print(table)
    saved = s.get("gamma_saved_fraction")
    saved_text = MISSING if saved is None else f"{saved:.1%}"
    if s.get("max_loss") is not None:
        out.print(
            f"ΔΨ/ΔΓ the rest of the budget would pay at most = {fmt(s.get('last_ratio'))} per {s.get('resource')}, "
            f"budget-aware η = {fmt(s.get('eta'))} (δ = {s['max_loss']:.0%} of the run's gain); Γ saved against the "
            f"budget: {saved_text}"
        )
    else:
        out.print(
            f"last window ratio ΔΨ/ΔΓ = {fmt(s.get('last_ratio'))} per {s.get('resource')}, η = {fmt(s.get('eta'))}"
            f" (r_ref {fmt(s.get('r_ref'))}); Γ saved against the budget: {saved_text}"
        )
    if s.get("why"):
        out.print(f"why: {s['why']}")
    fc = s.get("forecast") or {}
    if fc.get("ok"):
        out.print(
            f"forecast: continuing to the budget would have bought ΔΨ ≈ {fmt(fc.get('psi_gain_to_budget'))} "
            f"(Ψ {fmt(fc.get('psi_at_budget'))}; fit Ψ∞ − A·Γ^−b, rmse {fmt(fc.get('rmse'))})"
        )
    elif fc:
        out.print(f"forecast: none ({fc.get('reason')})")
    if s.get("absent_sources"):
        out.print(f"[dim]absent telemetry sources: {', '.join(s['absent_sources'])}[/dim]")
    if s.get("checkpoint"):
        out.print(f"[dim]checkpoint: {s['checkpoint']}[/dim]")
    for r in s.get("restarts") or []:
        what = f"resized {r['from_workers']} → {r['to_workers']} ranks" if r["to_workers"] else "paused"
        out.print(f"[dim]step {r['step']}: {what} by checkpoint-restart ({r.get('seconds', 0):.1f} s)[/dim]")
    train_s, probe_s = s.get("train_s"), s.get("probe_s")  # rank 0's, summed over its gangs
    if probe_s and train_s:
        out.print(f"[dim]gradient probe: {probe_s:.1f} s of {train_s:.1f} s training ({probe_s / train_s:.1%})[/dim]")
    print_blueprints(s.get("blueprints") or [], outcome.run_id)


def print_blueprints(published: list[dict[str, Any]], run_id: str | None) -> None:
    """The versions the job published, and the top five submodules of the last one."""
    from orchestrator.blueprints import load_blueprint

    if not published:
        return
    out = console()
    versions = ", ".join(f"v{b['version']} ({b['checkpoint']}, step {b['step']})" for b in published)
    out.print(f"blueprints: {versions} — `cpr blueprint list --run {run_id}`")
    last = max(published, key=lambda b: b["version"])
    bp = load_blueprint(last["path"])
    top = sorted(bp.layers, key=lambda e: e.gradient_norm, reverse=True)[:5]
    out.print(
        f"v{last['version']} top submodules by gradient norm: "
        + ", ".join(f"{e.id} {fmt(e.gradient_norm, 3)}" for e in top)
    )
