"""benchmarks/probe: what the gradient probe costs next to training, and what it sends between ranks.

For each model, 2 CPU ranks on Ray run the job's real DeepSpeed engine (its ZeRO stage and precision) on the job's
own data: a few timed training steps, then the probe exactly as the workers run it (`probe.batches` validation
batches per rank, the general set). Printed per model:
- one probe's seconds against one training step's, and the probe's share of training time over a whole run at
  the config's `probe.interval`, counting the blueprint checkpoints (general set + every domain each);
- bytes each rank sent through the probe's collectives against one fp32 copy of the full gradient (what
  `safe_get_full_grad` or an all-gather of gradients moves per rank).

    .venv/bin/python -m benchmarks.probe [--models llama-2m llama-125m] [--steps 5] [overrides...]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import ray

from orchestrator.config.compose import compose_job, job_from_dict
from orchestrator.worker.trainer import free_port, set_rank_env


class _Rank:
    def __init__(self, rank: int, world: int, job: dict[str, Any], prepared: dict[str, Any]) -> None:
        self.rank, self.world, self.job, self.prepared = rank, world, job_from_dict(job), prepared

    def address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), free_port()

    def run(self, addr: str, port: int, steps: int) -> dict[str, Any]:
        set_rank_env(addr, port, self.rank, self.world, self.rank, gpus=False)
        import torch
        import torch.distributed as dist

        from orchestrator.data.batches import TrainBatches, val_batches
        from orchestrator.data.prepare import PreparedData
        from orchestrator.models import build_model
        from orchestrator.worker.distributed import init_distributed
        from orchestrator.worker.engine import build_engine, token_loss
        from orchestrator.worker.probe import GradientProbe

        job, t = self.job, self.job.train
        torch.set_num_threads(job.cluster.cpus_per_worker)
        init_distributed("gloo")
        prepared = PreparedData.from_dict(self.prepared)
        vocab = job.model.vocab_size or prepared.vocab_size
        engine = build_engine(job, build_model(job.model, vocab, t.seq_len, job.seed))
        batches = TrainBatches(prepared, t.seq_len, t.micro_batch, t.grad_accum, self.rank, self.world, job.seed)
        n_seq = job.probe.batches * t.micro_batch * self.world
        mine = val_batches(prepared, t.seq_len, t.micro_batch, n_seq)[self.rank :: self.world]

        def train_step() -> None:
            x, y = next(batches)
            engine.backward(token_loss(engine, x, y))
            engine.step()

        train_step()  # warm-up: first-step allocations
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step()
        dist.barrier()
        step_s = (time.perf_counter() - t0) / steps
        probe = GradientProbe(engine, job.probe.histogram.spec())
        dist.barrier()
        t0 = time.perf_counter()
        report = probe.measure(mine, step=steps + 1, tokens=0, domain="general", label=None)
        dist.barrier()
        probe_s = time.perf_counter() - t0
        n_params = sum(g.n_params for g in probe.groups.values())
        return {
            "step_s": step_s,
            "probe_s": probe_s,
            "bytes": probe.last_cost.bytes_communicated,
            "n_params": n_params,
            "groups": len(probe.groups),
            "bins": probe.spec.n_bins,
            "ok": report is None or report.nonfinite == 0,
        }


def measure(model: str, overrides: list[str], steps: int) -> dict[str, Any]:
    from orchestrator.submission import plan_of, prepare

    job = compose_job([f"model={model}", *overrides])
    sub = prepare(plan_of(job)).submission
    actor = ray.remote(num_cpus=job.cluster.cpus_per_worker)(_Rank)
    ranks = [actor.remote(r, job.cluster.num_workers, sub.job, sub.prepared) for r in range(job.cluster.num_workers)]
    try:
        addr, port = ray.get(ranks[0].address.remote())
        out = ray.get([r.run.remote(addr, port, steps) for r in ranks])
    finally:
        for r in ranks:
            ray.kill(r)
    rank0 = out[0]
    total_steps = job.total_steps
    p = job.probe
    periodic = total_steps // p.interval
    checkpoint_probes = len(p.checkpoints) * (1 + len(job.probe_domains()))
    return {
        "model": model,
        **rank0,
        "step_s": max(r["step_s"] for r in out),
        "probe_s": max(r["probe_s"] for r in out),
        "interval": p.interval,
        "total_steps": total_steps,
        "probes_per_run": periodic + checkpoint_probes,
        "full_grad_bytes": 4 * rank0["n_params"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["llama-2m", "llama-125m"])
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per model (after one warm-up)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every model, e.g. deepspeed=zero3")
    args = ap.parse_args(argv)
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    rows = []
    try:
        for model in args.models:
            steps = args.steps if model == args.models[0] else 1  # one step is enough for the large model on CPU
            rows.append(measure(model, args.overrides, steps))
            r = rows[-1]
            print(f"{model}: step {r['step_s']:.3f} s, probe {r['probe_s']:.3f} s", flush=True)
    finally:
        ray.shutdown()
    print()
    print(
        f"{'model':<12}{'params':>14}{'step s':>9}{'probe s':>9}{'probe/step':>11}{'at interval':>12}"
        f"{'per run':>9}{'probe bytes':>13}{'full-grad bytes':>17}{'ratio':>10}"
    )
    for r in rows:
        at_interval = r["probe_s"] / (r["interval"] * r["step_s"])
        per_run = r["probes_per_run"] * r["probe_s"] / (r["total_steps"] * r["step_s"])
        print(
            f"{r['model']:<12}{r['n_params']:>14,}{r['step_s']:>9.3f}{r['probe_s']:>9.3f}"
            f"{r['probe_s'] / r['step_s']:>11.2f}{at_interval:>12.2%}{per_run:>9.2%}"
            f"{r['bytes']:>13,}{r['full_grad_bytes']:>17,}{r['bytes'] / r['full_grad_bytes']:>10.2e}"
        )
    print(
        "\nat interval: one probe over probe.interval training steps; per run: every periodic probe plus each "
        "blueprint checkpoint's probes (general set + domains) over the whole token budget.\nprobe bytes: "
        "[batches × groups] sums of squares + 2 × [groups × bins] histogram arrays + 1, 8 bytes each, sent by each "
        "rank; they depend on the groups and bins, not on the parameters."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
