"""`cpr submit [overrides…]`: run one pretraining job on Ray + DeepSpeed, or queue a sweep, and say how it went.

The work is orchestrator.submission's (plan, preflight, Hydra's output folder, prepare, start, follow); this verb
parses the command line and prints: the data preparation, the job's ids, a progress bar, the closing summary. With
`detach=true` it prints the job id and returns, and the job runs on in the Ray cluster.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from launch.output import MISSING, console, fmt
from orchestrator.config.compose import GROUPS, config_dir, job_to_yaml, options
from orchestrator.config.schema import JobConfig
from orchestrator.core.lifecycle import JobLifecycle, lifecycle
from orchestrator.errors import InputError

if TYPE_CHECKING:
    from orchestrator.submission import JobPlan, Outcome, ResumePlan, Started

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
    from orchestrator.submission import plan_job, preflight, split_resume

    overrides = list(args.overrides)
    if args.multirun or {"-m", "--multirun"} & set(overrides):
        return run_sweep([o for o in overrides if o not in ("-m", "--multirun")])
    resume_id, overrides = split_resume(overrides)
    if resume_id is not None:
        return resume(resume_id, overrides, cfg_only=args.cfg)
    plan = plan_job(overrides)  # one-line InputError on any composition problem or bad value
    if args.cfg:
        sys.stdout.write(job_to_yaml(plan.job))
        return 0
    preflight(plan.job)  # before Hydra's output folder: a refused job leaves nothing behind
    return signalled(launch, plan)


def signalled(start_and_attend: Callable[[Any], int], what: Any) -> int:
    """Its exit status, or 128 + the signal that ended the client first (Ctrl-C before the follow loop caught it,
    a second signal, or the grace period over)."""
    try:
        return start_and_attend(what)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Interrupted as exc:
        return 128 + exc.signum


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
            return attend(started, job)
        finally:
            if not job.detach:
                disconnect()


def resume(job_id: str, overrides: list[str], *, cfg_only: bool) -> int:
    """`cpr submit +resume=JOB [safe overrides]`: continue an interrupted or lost job from its last checkpoint, in
    its MLflow run, with its saved config; one line and exit 2 when it cannot be resumed."""
    from orchestrator.submission import plan_resume, preflight

    rp = plan_resume(job_id, overrides)
    job = rp.plan.job
    if cfg_only:
        sys.stdout.write(job_to_yaml(job))
        return 0
    preflight(job)
    return signalled(relaunch, rp)


def relaunch(rp: ResumePlan) -> int:
    """A checked resume: hand it to the controller, then follow or detach."""
    from orchestrator.submission import disconnect, start_resumed

    out = console()
    try:
        started = start_resumed(rp)
        out.print(f"job id: {started.job_id} (resumed: {rp.was}, from step {rp.step})")
        out.print(f"MLflow run id: {started.run_id}")
        return attend(started, rp.plan.job)
    finally:
        if not rp.plan.job.detach:
            disconnect()


def attend(started: Started, job: JobConfig) -> int:
    """A started job: say how to follow it when detached, else follow it to its end and print the summary. Exit
    status: 0 ended well, 1 failed, 128+signal when SIGTERM/SIGINT interrupted it."""
    out = console()
    if job.detach:
        out.print(
            f"detached: `cpr status --tracking-uri {started.tracking_uri}` follows it, "
            f"`cpr stop {started.job_id}` stops it"
        )
        return 0
    caught = Caught(job.interrupt_grace_s)
    outcome = follow(started, job, caught)
    drain(started, DRAIN_S if caught.signum is None else max(1.0, caught.left()))
    if outcome.input_error:  # bad input only the run could meet: one line, exit 2, like any other
        raise InputError(**outcome.input_error)
    print_summary(outcome, job)
    if caught.signum is not None:
        return 128 + caught.signum
    return 0 if outcome.ok else 1


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


class Interrupted(Exception):
    """SIGTERM or SIGINT ended the client before its job ended: a second signal, or the grace period ran out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Caught:
    """The first SIGTERM/SIGINT the attached client got, and the grace period it started."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.signum: int | None = None
        self.deadline = 0.0
        self.asked = False

    def on_signal(self, signum: int, frame: Any) -> None:
        """The first: note it (the follow loop asks for the stop at its next poll); the second: exit at once."""
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum, self.deadline = signum, time.monotonic() + self.grace_s

    def left(self) -> float:
        return self.deadline - time.monotonic()


def follow(started: Started, job: JobConfig, caught: Caught) -> Outcome:
    """A progress bar until the job ends. SIGTERM or SIGINT (Ctrl-C, a scheduler's kill) asks the controller for a
    STOP `interrupted` (the ranks checkpoint first) and waits for it up to the grace period; a second one, or the
    grace period over, raises `Interrupted` (the job then shows as `lost`, resumable from its last checkpoint)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestrator.submission import follow as follow_job
    from orchestrator.submission import request_stop

    total_steps = job.total_steps
    out = console()

    def on_progress(v: dict[str, Any]) -> None:
        bar.update(task, completed=v["step"], info=progress_info(v))
        if caught.signum is None:
            return
        name = signal.Signals(caught.signum).name
        if not caught.asked:
            caught.asked = True
            out.print(
                f"[yellow]{name}: the job checkpoints and stops (interrupted); exiting within "
                f"{caught.grace_s:.0f} s, a second signal exits at once[/yellow]"
            )
            request_stop(started, signal_name=name, timeout_s=max(0.1, caught.left()))
        if caught.left() <= 0:
            out.print(
                f"[red]{started.job_id} did not end within interrupt_grace_s={caught.grace_s:g} s: it will show as "
                f"lost; `cpr submit +resume={started.job_id}` continues it from its last checkpoint[/red]"
            )
            raise Interrupted(caught.signum)

    previous = {s: signal.signal(s, caught.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
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
            return follow_job(started, on_progress)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def progress_info(v: dict[str, Any]) -> str:
    state = lifecycle(v.get("state"))
    # Waiting, (re)starting or stopping: the scheduler's word says more than the step does.
    moving = state in (JobLifecycle.RUNNING, JobLifecycle.COOLING)
    if state is not None and state.live and not moving and v.get("schedule"):
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
    if v.get("cooldown_end") is not None:
        parts.append(f"cooling the LR down to step {v['cooldown_end']}")
    return "  ".join(parts)


def print_summary(outcome: Outcome, job: JobConfig) -> None:
    """The closing summary: why the job ended, Ψ, Γ used and projected, the stop rule's last numbers, the forecast."""
    from rich.table import Table

    out = console()
    s = outcome.summary
    if outcome.state == "failed":
        out.print(f"[red]job failed[/red]: {outcome.error}")
    if outcome.state == JobLifecycle.INTERRUPTED:
        out.print(
            f"[yellow]interrupted by {s.get('interrupted_by') or 'a signal'}[/yellow]: checkpointed; "
            f"`cpr submit +resume={s.get('job_id')}` continues it"
        )
    reason = s.get("reason") or MISSING
    out.print(
        f"\n[bold]{outcome.state.upper()}[/bold] — reason: {reason} at step {s.get('step')} "
        f"(check {s.get('checks')}), MLflow run {outcome.run_id}"
    )
    psi = job.psi.spec()
    out.print(
        f"Ψ = {fmt(s.get('psi'))} {psi.units} ({psi.name}, higher is better; "
        f"validation loss {fmt(s.get('val_loss'))} nats/token)"
    )
    print_cooldown(s.get("cooldown"))
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
        if str(r.get("reason", "")).startswith("resumed"):
            what = r["reason"]
        out.print(f"[dim]step {r['step']}: {what} by checkpoint-restart ({r.get('seconds', 0):.1f} s)[/dim]")
    train_s, probe_s = s.get("train_s"), s.get("probe_s")  # rank 0's, summed over its gangs
    if probe_s and train_s:
        out.print(f"[dim]gradient probe: {probe_s:.1f} s of {train_s:.1f} s training ({probe_s / train_s:.1%})[/dim]")
    print_blueprints(s.get("blueprints") or [], outcome.run_id)
    print_adapt(s.get("adapt"))


def print_cooldown(c: dict[str, Any] | None) -> None:
    """Where its STOP was decided and what the learning-rate cool-down after it bought."""
    if not c or c.get("start_step") is None:
        return
    d, end = c["decision"], c["end"]
    cut = f", cut short at step {end['step']} ({c['cut']})" if c.get("cut") else ""
    console().print(
        f"STOP decided at step {c['start_step']}: validation loss {fmt(d.get('val_loss'))}, Ψ {fmt(d.get('psi'))}; "
        f"cool-down {c['start_step']}→{c['end_step']} ({c['shape']}){cut}: validation loss {fmt(end.get('val_loss'))}"
        f" at the end, Ψ gained {fmt(c.get('psi_gained'))}"
    )


def print_adapt(adapt: dict[str, Any] | None) -> None:
    """An adapt job's selection: what it trained, why (ρ, drift), and the optimizer memory it measured."""
    if not adapt:
        return
    out = console()
    trained, total = adapt.get("trainable_params") or 0, adapt.get("total_params") or 0
    share = f" ({trained / total:.1%})" if total else ""
    if adapt.get("lora"):
        from orchestrator.adapt.record import layer_kinds

        targets = adapt["lora"]["targets"]
        what = f"LoRA rank {adapt['lora']['rank']} on {len(targets)} linear layers ({layer_kinds(targets)})"
    else:
        what = ", ".join(i if f >= 1 else f"{i}@{f:.2g}" for i, f in (adapt.get("chosen") or {}).items())
    out.print(f"adapt ({adapt.get('strategy')}): trained {trained:,} of {total:,} parameters{share}: {what}")
    drift = f"drift → fallback {adapt.get('fallback')}" if adapt.get("drift") else "no drift"
    out.print(f"Spearman ρ(blueprint, local sample) = {fmt(adapt.get('rho'))}: {drift}")
    m = adapt.get("measured") or {}
    if m.get("optimizer_state_bytes") is not None:
        out.print(
            f"optimizer state {m['optimizer_state_bytes'] / 1e6:.3g} MB and gradients "
            f"{(m.get('gradient_bytes') or 0) / 1e6:.3g} MB on rank 0 (measured); all parameters trained: "
            f"{m['optimizer_state_bytes_if_full'] / 1e6:.3g} MB of optimizer state"
        )


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
