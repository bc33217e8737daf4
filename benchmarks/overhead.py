"""benchmarks/overhead: tokens/s of the same DeepSpeed job with full instrumentation vs bare, runs alternated.

Instrumented: the real `cpr` path — controller actor, telemetry samplers (codecarbon), reports every
`train.report_interval` steps, the stop rule at every check (shadow mode, so both run the same steps), MLflow.
Bare: the same worker gang and training loop with no controller, no telemetry, no reports, no MLflow (the
evaluation itself stays: every pretraining job computes its validation loss). Throughput is measured inside rank
0's loop (start-up excluded), medians over repeats, order alternated so drift on a shared machine cancels.

    .venv/bin/python -m benchmarks.overhead [--repeats 3] [--steps 200] [overrides...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.config.compose import compose_job
from orchestrator.submission import plan_of, prepare


def bare_run(job: Any, sub: Any) -> float:
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
    return next(r for r in results if r["rank"] == 0)["tokens_per_s"]


def instrumented_run(controller: Any, sub: Any) -> float:
    import ray

    sub.send(controller)
    result = None
    while result is None:
        result = ray.get(controller.wait.remote(sub.job_id, 5.0))
    if result["state"] == "failed":
        raise RuntimeError(result["error"])
    return next(w for w in result["summary"]["workers"] if w["rank"] == 0)["tokens_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    import os

    os.chdir(tempfile.mkdtemp(prefix="cpr-overhead-"))
    base = compose_job(args.overrides)
    per_step = base.tokens_per_step
    overrides = [*args.overrides, f"train.max_tokens={args.steps * per_step}", "stop.enforce=false"]
    job = compose_job(overrides)
    import ray

    from orchestrator.controller.actor import controller_handle
    from orchestrator.submission import check_capacity, init_ray

    init_ray(job, start_head=False)
    check_capacity(job)
    controller = controller_handle(job.cluster.namespace, detached=False)
    speeds: dict[str, list[float]] = {"bare": [], "instrumented": []}
    print(
        f"{args.steps} steps × {per_step} tokens, {job.model.name}, {job.cluster.num_workers} ranks, "
        f"ZeRO-{job.deepspeed.zero_stage}; in {Path.cwd()}",
        flush=True,
    )
    for r in range(args.repeats):
        order = ("bare", "instrumented") if r % 2 == 0 else ("instrumented", "bare")
        for mode in order:
            sub = prepare(plan_of(job)).submission
            tps = bare_run(job, sub) if mode == "bare" else instrumented_run(controller, sub)
            speeds[mode].append(tps)
            print(f"  repeat {r + 1} {mode:12s} {tps:8.0f} tokens/s", flush=True)
    ray.shutdown()
    med = {m: statistics.median(v) for m, v in speeds.items()}
    pairs = [i / b for i, b in zip(speeds["instrumented"], speeds["bare"], strict=True)]
    print()
    print(f"median tokens/s: bare {med['bare']:.0f}, instrumented {med['instrumented']:.0f}")
    print(
        f"ratio instrumented/bare: {med['instrumented'] / med['bare']:.3f} (medians); per repeat "
        f"{', '.join(f'{p:.3f}' for p in pairs)}; goal ≥ 0.98"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
