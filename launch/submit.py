"""`cpr submit [overrides…]`: a Hydra app over `conf/` that runs one pretraining job on Ray + DeepSpeed.

Order of work, so that bad input never takes a resource: compose and type-check the config (Hydra/OmegaConf),
check every value, reach the tracking store, prepare the data (tokenizer + memmaps, cached), check the model
fits the stated memory, join or start Ray and check the cluster has the slots; only then start the controller
and the workers. Attached, it follows the job with a progress bar and prints the closing summary; with
`detach=true` it prints the job id and returns, and the job runs on in the Ray cluster.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from launch.output import MISSING, console, fmt
from orchestrator.config.compose import CONFIG_NAME, GROUPS, compose_job, config_dir, job_to_dict, job_to_yaml, options
from orchestrator.config.schema import JobConfig
from orchestrator.config.validate import domain_configs, probe_domains, validate_job
from orchestrator.core.lifecycle import JobLifecycle, lifecycle
from orchestrator.errors import InputError

POLL_S = 0.5
DRAIN_S = 300.0
MAX_SWEEP_JOBS = 1000
SWEEP_OUTCOME: dict[str, Any] = {}
"""What cpr's Hydra launcher did with the last sweep: {"jobs": [(job id, run id, overrides)]} or {"error": ...}."""


def register(verbs: argparse._SubParsersAction) -> None:
    try:
        groups = "; ".join(f"{g}: {', '.join(options(g))}" for g in GROUPS if (config_dir() / g).is_dir())
    except InputError as err:  # an installed wheel without conf/: say so at `cpr submit`, not at every verb
        groups = err.one_line()
    p = verbs.add_parser(
        "submit",
        help="run a pretraining job from conf/ with Hydra overrides",
        description="Run a pretraining job on Ray + DeepSpeed with live marginal-return stopping. Arguments are "
        "Hydra overrides of conf/config.yaml, e.g. `cpr submit +experiment=debug stop.max_loss=0.02`. "
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
    overrides = list(args.overrides)
    if args.multirun or {"-m", "--multirun"} & set(overrides):
        return run_sweep([o for o in overrides if o not in ("-m", "--multirun")])
    job = compose_job(overrides)  # one-line InputError on any composition problem
    validate_job(job)
    if args.cfg:
        sys.stdout.write(job_to_yaml(job))
        return 0
    preflight(job)  # before Hydra makes its output folder: a refused job leaves nothing behind
    return run_hydra_app(overrides)


def run_hydra_app(overrides: list[str]) -> int:
    """Run the job as a real Hydra app (output dir with the resolved config, Hydra's logging), errors kept one-line."""
    import hydra

    from orchestrator.config.compose import register_schema, to_job_config

    register_schema()
    outcome: dict[str, Any] = {}

    @hydra.main(config_path=str(config_dir()), config_name=CONFIG_NAME, version_base="1.3")
    def task(cfg: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        try:
            outcome["code"] = launch(to_job_config(cfg), output_dir=Path(HydraConfig.get().runtime.output_dir))
        except InputError as err:
            outcome["error"] = err
        except KeyboardInterrupt:
            outcome["code"] = 130

    argv = sys.argv
    sys.argv = ["cpr-submit", *overrides]
    try:
        task()
    finally:
        sys.argv = argv
    if "error" in outcome:
        raise outcome["error"]
    return int(outcome.get("code", 1))


def run_sweep(overrides: list[str]) -> int:
    """`cpr submit -m …`: Hydra expands the sweep, cpr's launcher queues every job on the cluster (detached)."""
    check_sweep(overrides)  # before Hydra writes its sweep folder or prints a multi-line error
    import hydra
    import ray

    from orchestrator.config.compose import register_schema

    register_schema()
    SWEEP_OUTCOME.clear()

    @hydra.main(config_path=str(config_dir()), config_name=CONFIG_NAME, version_base="1.3")
    def task(cfg: Any) -> None:  # never called: the cpr launcher queues jobs instead of running them here
        raise RuntimeError("the cpr launcher runs no task in-process")

    argv = sys.argv
    sys.argv = ["cpr-submit", "--multirun", "hydra/launcher=cpr", *overrides]
    try:
        task()
    except SystemExit as exc:  # Hydra reports its own errors (a bad override) and exits
        if exc.code:
            raise InputError(
                "overrides", "Hydra could not expand the sweep (see above)", "check the overrides"
            ) from None
    finally:
        sys.argv = argv
        if ray.is_initialized():
            ray.shutdown()
    if "error" in SWEEP_OUTCOME:
        raise SWEEP_OUTCOME["error"]
    if "jobs" not in SWEEP_OUTCOME:
        raise InputError("--multirun", "the sweep queued nothing", "check hydra/launcher=cpr is available")
    jobs = SWEEP_OUTCOME["jobs"]
    out = console()
    for job_id, run_id, job_overrides in jobs:
        out.print(f"queued {job_id} (MLflow run {run_id}): {' '.join(job_overrides)}")
    out.print(
        f"{len(jobs)} jobs queued on the cluster's controller; `cpr status` follows them, `ray stop` ends the head"
    )
    out.print(
        f"sweep {SWEEP_OUTCOME['sweep']}: its last job to end logs the comparison report under sweep_report/; "
        f"`cpr report --sweep {SWEEP_OUTCOME['sweep']}` draws it at any time"
    )
    return 0


def check_sweep(overrides: list[str]) -> None:
    """Expand the sweep as Hydra's basic sweeper will and check every job (composition, values, pre-flight), so a
    bad one is refused in one line before Hydra writes anything. The launcher checks them again, with their names."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from orchestrator.config.compose import to_input_error

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception as exc:  # Hydra's parse errors: one line naming the override
        raise to_input_error(exc, overrides) from None
    if len(jobs) > MAX_SWEEP_JOBS:
        raise InputError("--multirun", f"the sweep expands to {len(jobs)} jobs", f"sweep at most {MAX_SWEEP_JOBS}")
    for idx, job_overrides in enumerate(jobs):
        try:
            job = compose_job([o for o in job_overrides if not o.lstrip("+~").startswith("hydra")])
            validate_job(job)
            preflight(job)
        except InputError as err:
            shown = " ".join(job_overrides)
            shown = shown if len(shown) <= 120 else shown[:117] + "..."
            raise InputError(f"job #{idx} ({shown}): {err.field}", err.problem, err.fix) from None


# -- checks that need the outside world ---------------------------------------------------------------------
def _tcp_reachable(address: str, timeout_s: float = 3.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def init_ray(job: JobConfig, *, start_head: bool) -> str:
    """Join the configured Ray cluster or start one; returns a description. InputError when unreachable."""
    import ray

    c = job.cluster
    env_vars = {"PYTHONWARNINGS": "ignore::FutureWarning"}
    kwargs: dict[str, Any] = {
        "namespace": c.namespace,
        "log_to_driver": False,  # the workers' output is in Ray's session logs; the terminal shows the progress bar
        "logging_level": logging.ERROR,  # Ray's start-up chatter would break the one-line error promise
        "runtime_env": {"env_vars": env_vars},
    }
    address = c.address
    if address is None and start_head:
        # The head would outlive this command: check the job fits this machine before starting one.
        check_capacity(job, {"CPU": float(c.num_cpus or os.cpu_count() or 1)})
        address = start_local_head(job)
    if address is None:
        # address="local": a fresh instance even when a `ray start` head runs on this machine. Its dashboard (off
        # unless cluster.dashboard) binds to cluster.dashboard_host, 127.0.0.1 by default: it has no authentication.
        ray.init(
            address="local",
            num_cpus=c.num_cpus or os.cpu_count(),
            include_dashboard=c.dashboard,
            dashboard_host=c.dashboard_host,
            _metrics_export_port=c.metrics_export_port,
            **kwargs,
        )
        return "local Ray (in this process)"
    if address not in ("auto", "local") and not address.startswith("ray://") and not _tcp_reachable(address):
        raise InputError(
            "cluster.address",
            f"no Ray cluster answers at {address}",
            "start one with `ray start --head`, or leave cluster.address=null for local Ray",
        )
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(
            "cluster.address",
            f"cannot join Ray at {address}: {exc}",
            "start one with `ray start --head`, or leave cluster.address=null",
        ) from None
    return f"Ray cluster at {address}"


def start_local_head(job: JobConfig) -> str:
    """For detach=true without a cluster: a local Ray head that outlives this command (stop it with `ray stop`).
    Its dashboard, if cluster.dashboard, binds to cluster.dashboard_host (127.0.0.1 by default)."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    probe = subprocess.run([ray_bin, "status"], capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        return "auto"
    cmd = [
        ray_bin,
        "start",
        "--head",
        f"--num-cpus={job.cluster.num_cpus or os.cpu_count()}",
        f"--include-dashboard={str(job.cluster.dashboard).lower()}",
        f"--dashboard-host={job.cluster.dashboard_host}",
        "--disable-usage-stats",
    ]
    if job.cluster.metrics_export_port is not None:
        cmd.append(f"--metrics-export-port={job.cluster.metrics_export_port}")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise InputError(
            "cluster.address",
            f"could not start a local Ray head: {done.stderr.strip()[-300:]}",
            "start one with `ray start --head`",
        )
    return "auto"


def check_capacity(job: JobConfig, have: dict[str, float] | None = None) -> None:
    """More workers than the cluster has CPUs/GPUs (`have`, default: Ray's view): refuse before anything is placed."""
    import ray

    c = job.cluster
    have = ray.cluster_resources() if have is None else have
    need_cpu = c.num_workers * c.cpus_per_worker
    if have.get("CPU", 0) < need_cpu:
        raise InputError(
            "cluster.num_workers",
            f"{c.num_workers} workers × {c.cpus_per_worker} CPU need {need_cpu} CPUs, "
            f"the cluster has {have.get('CPU', 0):g}",
            "lower cluster.num_workers or cluster.cpus_per_worker, or add nodes",
        )
    need_gpu = c.num_workers * c.gpus_per_worker
    if need_gpu and have.get("GPU", 0) < need_gpu:
        raise InputError(
            "cluster.gpus_per_worker",
            f"{c.num_workers} workers need {need_gpu} GPUs, the cluster has {have.get('GPU', 0):g}",
            "lower cluster.num_workers, or gpus_per_worker=0 to train on CPU",
        )


def check_writable_dir(field: str, path: Path) -> None:
    """`path` is a writable folder, or one that can be made: its nearest existing ancestor is a writable folder."""
    probe = path.expanduser().absolute()
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        ok = probe.is_dir() and os.access(probe, os.W_OK)
    except (OSError, ValueError):  # e.g. a NUL byte in the path
        ok = False
    if not ok:
        raise InputError(
            field, f"{path} cannot be created or written ({probe} is no writable folder)", "check the path"
        )


def preflight(job: JobConfig) -> None:
    """The outside-world checks that take nothing and write nothing, run before Hydra makes its output folder: the
    folders the job writes, the tracking store, the data (listed, not read), the cluster's address and, for local
    Ray, its CPUs. `plan` and `init_ray` repeat what they need once the job goes ahead."""
    from orchestrator.data.prepare import check_data
    from orchestrator.data.sources import open_domain
    from orchestrator.tracking.uri import check_tracking_uri, default_tracking_uri

    runs_dir = Path.cwd() / job.runs_dir
    check_writable_dir("runs_dir", runs_dir)
    for field, value in (("train.checkpoint_dir", job.train.checkpoint_dir), ("data.cache_dir", job.data.cache_dir)):
        if value:
            check_writable_dir(field, Path(value))
    uri = job.tracking.uri or default_tracking_uri(runs_dir)
    if uri.lower().startswith("sqlite:"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.exists() and folder.parent.is_dir() and os.access(folder.parent, os.W_OK):
            uri = ""  # check_tracking_uri would create the folder: `plan` checks it when the job goes ahead
    if uri:
        check_tracking_uri(uri)
    check_data(job.data)
    if job.probe.enabled:
        configs = domain_configs(job)
        for name in probe_domains(job):
            open_domain(name, configs[name])
    c = job.cluster
    if c.address is None:  # local Ray: its CPUs are known before it starts (its GPUs only once it runs)
        check_capacity(
            replace(job, cluster=replace(c, gpus_per_worker=0)), {"CPU": float(c.num_cpus or os.cpu_count() or 1)}
        )
    elif c.address not in ("auto", "local") and not c.address.startswith("ray://") and not _tcp_reachable(c.address):
        raise InputError(
            "cluster.address",
            f"no Ray cluster answers at {c.address}",
            "start one with `ray start --head`, or leave cluster.address=null for local Ray",
        )


def check_memory(job: JobConfig, n_params: int) -> float:
    """Per-rank bytes of weights, grads, optimizer states and activations vs the memory a rank may use, at every
    size the scheduler may resize the job to (fewer ranks hold bigger ZeRO shards; more ranks share the node)."""
    import psutil

    from orchestrator.config.validate import job_resource_model, resized, world_sizes

    c = job.cluster
    at_start = 0.0
    for world in world_sizes(job):
        rm = job_resource_model(resized(job, world), n_params)
        need_gb = (rm.cost_fixed + rm.cost_per_param) * n_params / 1e9
        if c.memory_gb_per_worker is not None:
            limit, where = c.memory_gb_per_worker, "cluster.memory_gb_per_worker"
        else:
            limit, where = psutil.virtual_memory().total / 1e9 / world, "this machine's memory per rank"
        if need_gb > limit:
            at = f" at {world} ranks" if world != c.num_workers else ""
            raise InputError(
                "model",
                f"{job.model.name} ({n_params / 1e6:.1f}M params) needs ≈{need_gb:.1f} GB per rank with ZeRO-"
                f"{job.deepspeed.zero_stage}, {job.deepspeed.precision}{at}; {where} is {limit:.1f} GB",
                "use a smaller model, deepspeed=zero3, more workers, or a larger cluster.memory_gb_per_worker",
            )
        if world == c.num_workers:
            at_start = need_gb
    return at_start


# -- the job ------------------------------------------------------------------------------------------------
def new_job_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


@dataclass(frozen=True, kw_only=True)
class Submission:
    """Everything the controller needs to run a checked job (plain data: it crosses to a Ray actor)."""

    job_id: str
    job: dict[str, Any]
    prepared: dict[str, Any]
    flops_model: dict[str, Any]
    tracking_uri: str
    artifact_location: str | None
    state_dir: str
    checkpoint_dir: str
    blueprint_dir: str
    carbon_intensity_kg_per_kwh: float | None
    params: dict[str, str]
    sweep: str | None = None
    """The `cpr submit -m` it belongs to (tag `cpr.sweep`), None for a single job."""

    def send(self, controller: Any) -> dict[str, Any]:
        import ray

        try:
            return ray.get(controller.submit.remote(**asdict(self)))
        except ray.exceptions.RayTaskError as exc:  # the controller refused it (e.g. a duplicate name): one line
            if isinstance(exc.cause, InputError):
                raise exc.cause from None
            raise


def plan(job: JobConfig, *, output_dir: Path | None = None, log: Any = None) -> tuple[Submission, int]:
    """Every check that needs the outside world but no Ray: tracking store, carbon data, data, model memory."""
    from orchestrator.data.prepare import prepare_data, prepare_domains
    from orchestrator.models import count_parameters, flops_model
    from orchestrator.tracking.secrets import mask_secrets
    from orchestrator.tracking.uri import check_tracking_uri, default_tracking_uri
    from orchestrator.tracking.writer import flatten_config

    validate_job(job)
    runs_dir = (Path.cwd() / job.runs_dir).resolve()
    tracking_uri = job.tracking.uri or default_tracking_uri(runs_dir)
    check_tracking_uri(tracking_uri)
    carbon = None
    if job.telemetry.enabled:
        from orchestrator.telemetry.carbon import carbon_intensity_kg_per_kwh

        carbon = carbon_intensity_kg_per_kwh(job.telemetry.country_iso_code)
    prepared = prepare_data(job.data, log=log)
    if job.probe.enabled:
        domains = probe_domains(job)
        configs = domain_configs(job)
        prepared = prepare_domains({d: configs[d] for d in domains}, prepared, log=log)
        need = job.probe.batches * job.train.micro_batch * job.cluster.num_workers + job.train.seq_len + 1
        for name in domains:
            have = len(prepared.tokens(name))
            if have < need:
                raise InputError(
                    f"data.domains.{name}",
                    f"has {have:,} tokens; probe.batches={job.probe.batches} on {job.cluster.num_workers} ranks "
                    f"needs {need:,}",
                    "add documents to the domain or lower probe.batches",
                )
    vocab = job.model.vocab_size or prepared.vocab_size
    if vocab < prepared.vocab_size:
        raise InputError(
            "model.vocab_size",
            f"{vocab} is smaller than the tokenizer's {prepared.vocab_size}",
            "leave model.vocab_size=null",
        )
    counts = count_parameters(job.model, vocab)
    check_memory(job, counts.total)
    job_id = new_job_id(job.name)
    job_dict = job_to_dict(job)
    job_dict["model"]["vocab_size"] = vocab
    params = mask_secrets(flatten_config(job_dict))  # MLflow params are readable by anyone with the UI
    params.update({"cpr.n_params": str(counts.total), "cpr.hydra_output_dir": str(output_dir or "")})
    checkpoint_dir = Path(job.train.checkpoint_dir).resolve() if job.train.checkpoint_dir else runs_dir / "checkpoints"
    sub = Submission(
        job_id=job_id,
        job=job_dict,
        prepared={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(prepared).items()},
        flops_model=asdict(flops_model(job.model, vocab, job.train.seq_len)),
        tracking_uri=tracking_uri,
        artifact_location=str(runs_dir / "artifacts") if job.tracking.uri is None else None,
        state_dir=str(runs_dir / "jobs" / job_id),
        checkpoint_dir=str(checkpoint_dir / job_id),
        blueprint_dir=str(runs_dir / "blueprints"),
        carbon_intensity_kg_per_kwh=carbon,
        params=params,
    )
    return sub, counts.total


def launch(job: JobConfig, *, output_dir: Path | None = None) -> int:
    """Everything after composition: checks, data, Ray, controller, then follow or detach."""
    out = console()
    sub, n_params = plan(job, output_dir=output_dir, log=lambda line: out.print(f"[dim]data:[/dim] {line}"))
    where = init_ray(job, start_head=job.detach)
    import ray

    try:
        check_capacity(job)
        from orchestrator.controller.actor import controller_handle

        controller = controller_handle(job.cluster.namespace, detached=job.detach or job.cluster.address is not None)
        answer = sub.send(controller)
        out.print(f"job id: {sub.job_id}")
        out.print(f"MLflow run id: {answer['run_id']}")
        out.print(
            f"[dim]{n_params / 1e6:.2f}M-parameter {job.model.arch} on {where}, {job.cluster.num_workers} "
            f"ranks, ZeRO-{job.deepspeed.zero_stage} {job.deepspeed.precision}; tracking {sub.tracking_uri}[/dim]"
        )
        if job.detach:
            out.print(
                f"detached: `cpr status --tracking-uri {sub.tracking_uri}` follows it, `cpr stop {sub.job_id}` stops it"
            )
            return 0
        result = follow(controller, sub.job_id, job)
        drain(controller, sub.job_id, sub.state_dir)
        if result.get("input_error"):  # bad input only the run could meet: one line, exit 2, like any other
            raise InputError(**result["input_error"])
        print_summary(result, job)
        return 0 if result["state"] in ("finished", "stopped") else 1
    finally:
        if not job.detach:
            ray.shutdown()


def drain(controller: Any, job_id: str, state_dir: str, timeout_s: float = DRAIN_S) -> None:
    """Before local Ray shuts down with the controller in it: let the run's MLflow writes reach the store (an
    outage at the job's end), else say where they wait."""
    import ray

    owed = ray.get(controller.drain.remote(job_id, 1.0))
    if owed:
        out = console()
        out.print(f"[yellow]MLflow has not taken {owed} writes yet: waiting up to {timeout_s:.0f} s…[/yellow]")
        owed = ray.get(controller.drain.remote(job_id, timeout_s))
        if owed:
            out.print(
                f"[yellow]{owed} MLflow writes stay in {state_dir}/mlflow_journal.jsonl: `cpr sync` sends them once "
                "the store answers[/yellow]"
            )


def follow(controller: Any, job_id: str, job: JobConfig) -> dict[str, Any]:
    """A progress bar until the job ends; Ctrl-C asks for a user stop (checkpoint first), twice aborts."""
    import ray
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total_steps = job.train.max_tokens // (
        job.train.seq_len * job.train.micro_batch * job.train.grad_accum * job.cluster.num_workers
    )
    interrupted = {"n": 0}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted["n"] += 1
        if interrupted["n"] > 1:
            raise KeyboardInterrupt
        ray.get(controller.request_stop.remote(job_id))

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
            while True:
                result = ray.get(controller.wait.remote(job_id, POLL_S))
                v = ray.get(controller.view.remote(job_id))
                bar.update(task, completed=v["step"], info=progress_info(v))
                if result is not None:
                    return result
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


def print_summary(result: dict[str, Any], job: JobConfig) -> None:
    from rich.table import Table

    out = console()
    s = result.get("summary") or {}
    if result["state"] == "failed":
        out.print(f"[red]job failed[/red]: {result.get('error')}")
    reason = s.get("reason") or MISSING
    out.print(
        f"\n[bold]{result['state'].upper()}[/bold] — reason: {reason} at step {s.get('step')} "
        f"(check {s.get('checks')}), MLflow run {result.get('run_id')}"
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
    print_blueprints(s.get("blueprints") or [], result.get("run_id"))


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
