"""benchmarks/overhead: what each of cpr's instruments costs the ranks' throughput, alone and all together.

The same DeepSpeed job (the default one unless overrides say otherwise) is run in several ways, one after the other
in one Ray session, each repeat in the opposite order of the one before so that drift on a shared machine cancels:

- `bare`: the same worker gang and training loop with no controller, no reports, no telemetry, no checkpoints, no
  probe, no MLflow (the evaluation itself stays: every pretraining job computes its validation loss);
- `core`: the real `cpr` path with only the control plane's core: training reports, the evaluation checks' round
  trip, the stop rule and its ledger (shadow mode, so every run trains the same steps), the MLflow run the
  controller writes (a job always has one); everything below turned off;
- one row per instrument, the core plus that instrument alone: `telemetry` (the per-rank samplers, codecarbon),
  `metrics` (the controller's live Prometheus metrics), `checkpoints` (the periodic DeepSpeed checkpoints a lost
  rank restarts from), `probe` (the periodic and blueprint-checkpoint probes);
- `all-but-probe` and `all`: every instrument, without the probe and with it (the defaults).

Throughput is measured inside rank 0's loop (start-up excluded). A row's ratio is the median over repeats of its
tokens/s ÷ the bare run's of the same repeat. On a shared machine that ratio moves by several % between identical
runs, so the table also gives CPU seconds per step: the ranks' (every thread of theirs, over their training loops)
and the others' (the controller, this driver, Ray's own processes, over the whole run), and their sum against
bare's: what a machine whose cores the ranks fill loses, measured without the neighbours' noise.
Rank 0 also times the parts of its loop besides the training steps
(evaluation, the check's round trip, reports, checkpoints, probes): the table gives them as shares of its training
time. The two goals: `all-but-probe` ÷ `bare` ≥ 0.98, and the probe ≤ 2 % of training time in the `all` run (its
probe seconds ÷ its training seconds).

    .venv/bin/python -m benchmarks.overhead [--repeats 3] [--steps 150 | --steps full] [--rows core,all] [overrides]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.compose import compose_job
from orchestrator.submission import plan_of, prepare

CORE = ["telemetry.enabled=false", "probe.enabled=false", "train.checkpoint_interval=0"]
"""The instruments the `core` row turns off (and its controller runs without live metrics)."""


@dataclass(frozen=True)
class Row:
    name: str
    what: str
    overrides: tuple[str, ...]
    metrics: bool
    """Whether its controller exports live metrics."""


def _core_plus(*keep: str) -> tuple[str, ...]:
    out = tuple(o for o in CORE if not any(o.startswith(k) for k in keep))
    # Without telemetry there is no energy to stop on: the rule counts Γ in tokens instead (the same work per check).
    return (*out, "stop.resource=tokens") if "telemetry.enabled=false" in out else out


ROWS: tuple[Row, ...] = (
    Row("bare", "training and evaluation only", (), False),
    Row("core", "reports, checks, stop rule, ledger, MLflow", _core_plus(), False),
    Row("telemetry", "core + samplers (codecarbon)", _core_plus("telemetry."), False),
    Row("metrics", "core + live metrics export", _core_plus(), True),
    Row("checkpoints", "core + periodic checkpoints", _core_plus("train.checkpoint_interval"), False),
    Row("probe", "core + periodic and blueprint probes", _core_plus("probe."), False),
    Row("all-but-probe", "everything but the probe", ("probe.enabled=false",), True),
    Row("all", "everything (the defaults)", (), True),
)
BY_NAME = {r.name: r for r in ROWS}
PARTS = ("eval", "check", "report", "checkpoint", "probe", "probe_blueprint")
"""Rank 0's loop parts besides the training steps (the worker's `spent`)."""


GROUPS = ("ranks", "controller", "driver", "ray")
"""Where CPU time goes during a run: the ranks' processes, the controller actor, this process, Ray's own."""


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's (group, user + system CPU seconds) now."""
    import psutil

    me = os.getpid()
    out = {}
    for p in psutil.process_iter(["cmdline", "cpu_times"]):
        times, cmd = p.info["cpu_times"], " ".join(p.info["cmdline"] or [])
        if times is None:
            continue
        if p.pid == me:
            group = "driver"
        elif "TrainWorker" in cmd:
            group = "ranks"
        elif "Controller" in cmd:
            group = "controller"
        elif "ray" in cmd:
            group = "ray"
        else:
            continue
        out[p.pid] = (group, times.user + times.system)
    return out


def cpu_spent(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by group since `before` (a process started since counts in full)."""
    spent = dict.fromkeys(GROUPS, 0.0)
    for pid, (group, cpu) in cpu_by_process().items():
        spent[group] += cpu - before.get(pid, (group, 0.0))[1]
    return spent


def bare_run(job: Any, sub: Any) -> dict[str, Any]:
    import ray

    from orchestrator.worker.group import WorkerGroup

    group = WorkerGroup(
        job_id=sub.job_id,
        job=job,
        job_dict=sub.job,
        prepared=sub.prepared,
        checkpoint_dir=sub.checkpoint_dir,
        controller=None,
    )
    try:
        results = ray.get(group.start())
    finally:
        group.shutdown()
    return next(r for r in results if r["rank"] == 0)


def instrumented_run(controller: Any, sub: Any) -> dict[str, Any]:
    import ray

    sub.send(controller)
    result = None
    while result is None:
        result = ray.get(controller.wait.remote(sub.job_id, 5.0))
    if result["state"] == "failed":
        raise RuntimeError(result["error"])
    return next(w for w in result["summary"]["workers"] if w["rank"] == 0)


def controllers(namespace: str) -> dict[bool, Any]:
    """Two controllers of the same code, with and without live metrics (CPR_LIVE_METRICS=0), each with its own
    registry so neither restores the other's jobs."""
    import ray

    from orchestrator.controller.actor import Controller

    out = {}
    for metrics in (True, False):
        registry = Path(tempfile.mkdtemp(prefix="cpr-overhead-registry-")) / "jobs.json"
        out[metrics] = (
            ray.remote(Controller)
            .options(
                name=f"cpr-overhead-{'metrics' if metrics else 'quiet'}",
                namespace=namespace,
                num_cpus=0,
                max_concurrency=64,
                runtime_env={"env_vars": {"CPR_LIVE_METRICS": "1" if metrics else "0"}},
            )
            .remote(str(registry))
        )
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", default="150", help="optimizer steps per run, or `full`: the job's whole budget")
    parser.add_argument("--rows", default=",".join(r.name for r in ROWS), help="which rows (bare is always run)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    unknown = [r for r in args.rows.split(",") if r not in BY_NAME]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(BY_NAME)}")
    if args.steps != "full" and not args.steps.isdigit():
        parser.error("--steps is a number of steps or `full`")
    return args


def cpu_per_step(run: dict[str, Any], world: int) -> tuple[float, float]:
    """(the ranks' CPU seconds per step in their training loops, every thread of theirs: rank 0's × the world size;
    the controller's, this driver's and Ray's own CPU seconds per step over the whole run)."""
    plane = sum(v for g, v in run["cpu"].items() if g != "ranks")
    return run["train_cpu_s"] * world / run["step"], plane / run["step"]


def table(rows: list[Row], results: dict[str, list[dict[str, Any]]], world: int) -> list[str]:
    """The per-instrument table (markdown): throughput against bare's, CPU per step against bare's (what a machine
    whose cores the ranks fill loses), and rank 0's loop time by part."""
    bare = results["bare"]
    head = (
        "| row | on | tokens/s | ÷ bare | ranks CPU s/step | others CPU s/step | CPU vs bare | "
        + " | ".join(f"{p} %" for p in PARTS)
        + " |"
    )
    lines = [head, "|" + "---|" * (7 + len(PARTS))]
    for row in rows:
        runs = results[row.name]
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        ratio = statistics.median(r["tokens_per_s"] / b["tokens_per_s"] for r, b in zip(runs, bare, strict=True))
        ranks, others = (statistics.median(cpu_per_step(r, world)[i] for r in runs) for i in (0, 1))
        cpu = statistics.median(
            sum(cpu_per_step(r, world)) / sum(cpu_per_step(b, world)) for r, b in zip(runs, bare, strict=True)
        )
        shares = [statistics.median(r["spent"][p] / r["train_s"] for r in runs) for p in PARTS]
        lines.append(
            f"| {row.name} | {row.what} | {tps:,.0f} | {ratio:.3f} | {ranks:.3f} | {others:.3f} | {cpu - 1:+.1%} | "
            + " | ".join(f"{s:.2%}" for s in shares)
            + " |"
        )
    return lines


def goals(results: dict[str, list[dict[str, Any]]], world: int) -> list[str]:
    out = []
    bare = results["bare"]
    if "all-but-probe" in results:
        runs = results["all-but-probe"]
        pairs = [r["tokens_per_s"] / b["tokens_per_s"] for r, b in zip(runs, bare, strict=True)]
        ratio = statistics.median(pairs)
        cpu = statistics.median(
            sum(cpu_per_step(b, world)) / sum(cpu_per_step(r, world)) for r, b in zip(runs, bare, strict=True)
        )
        out.append(
            f"goal 1, all-but-probe ÷ bare = {ratio:.3f} tokens/s (per repeat {', '.join(f'{p:.3f}' for p in pairs)}), "
            f"{cpu:.3f} in CPU per step; goal ≥ 0.98: {'met' if ratio >= 0.98 else 'MISSED'} (tokens/s)"
        )
    if "all" in results:
        shares = [r["probe_s"] / r["train_s"] for r in results["all"]]
        share = statistics.median(shares)
        out.append(
            f"goal 2, probe ÷ training time in the `all` run = {share:.2%} (per repeat "
            f"{', '.join(f'{s:.2%}' for s in shares)}); goal ≤ 2 %: {'met' if share <= 0.02 else 'MISSED'}"
        )
    return out


def main() -> int:
    args = parse_args()
    os.chdir(tempfile.mkdtemp(prefix="cpr-overhead-"))
    base = compose_job(args.overrides)
    steps = base.total_steps if args.steps == "full" else int(args.steps)
    length = [f"train.max_tokens={steps * base.tokens_per_step}", "stop.enforce=false"]
    rows = [BY_NAME["bare"], *(BY_NAME[n] for n in args.rows.split(",") if n != "bare")]
    jobs = {r.name: compose_job([*args.overrides, *length, *r.overrides]) for r in rows}
    import ray

    from orchestrator.submission import check_capacity, init_ray

    job = jobs["bare"]
    init_ray(job, start_head=False)
    check_capacity(job)
    ctl = controllers(job.cluster.namespace)
    print(
        f"{steps} steps × {job.tokens_per_step} tokens, {job.model.name}, {job.cluster.num_workers} ranks, "
        f"ZeRO-{job.deepspeed.zero_stage}; rows {', '.join(r.name for r in rows)}; in {Path.cwd()}",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {r.name: [] for r in rows}
    t0 = time.perf_counter()
    # Not counted: the session's first gang pays for cold caches (imports, the compiled op, the data's pages).
    warm = compose_job([*args.overrides, f"train.max_tokens={8 * base.tokens_per_step}", "train.warmup_steps=1"])
    bare_run(warm, prepare(plan_of(warm)).submission)
    print(f"  warm-up run done ({time.perf_counter() - t0:.0f} s in)", flush=True)
    for rep in range(args.repeats):
        for row in rows if rep % 2 == 0 else rows[::-1]:
            sub = prepare(plan_of(jobs[row.name])).submission
            before = cpu_by_process()
            if row.name == "bare":
                rank0 = bare_run(jobs[row.name], sub)
            else:
                rank0 = instrumented_run(ctl[row.metrics], sub)
            results[row.name].append({**rank0, "cpu": cpu_spent(before)})
            print(
                f"  repeat {rep + 1} {row.name:14s} {rank0['tokens_per_s']:8.0f} tokens/s "
                f"({time.perf_counter() - t0:.0f} s in)",
                flush=True,
            )
    ray.shutdown()
    print()
    print("\n".join(table(rows, results, job.cluster.num_workers)))
    print()
    print("\n".join(goals(results, job.cluster.num_workers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
