"""The DeepSpeed side of a worker: its config dict, the engine, the LR schedule, the loss and evaluation."""

from __future__ import annotations

import math
from typing import Any

from orchestrator.config.schema import JobConfig


def deepspeed_config(job: JobConfig, *, load_universal: bool = False) -> dict[str, Any]:
    """DeepSpeed's JSON config for this job (ZeRO stage, precision, batch sizes, clipping); `load_universal`: the
    checkpoint to load was converted by `ds_to_universal` (a restart at another world size)."""
    t, d = job.train, job.deepspeed
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.micro_batch,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": job.sequences_per_step,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": d.zero_stage},
        "bf16": {"enabled": d.precision == "bf16"},
        # Our optimizer is torch's AdamW, which DeepSpeed has not tested under ZeRO, but wraps correctly.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
        "checkpoint": {"load_universal": load_universal},
    }
    return cfg


def lr_lambda(job: JobConfig, total_steps: int):
    """Multiplier on train.lr at each optimizer step: linear warm-up, then constant or cosine to min_lr_fraction."""
    t = job.train
    warmup = t.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if t.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return t.min_lr_fraction + (1.0 - t.min_lr_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_engine(job: JobConfig, model: Any, total_steps: int, *, load_universal: bool = False) -> Any:
    """deepspeed.initialize with torch's AdamW (decay on matrices only) and the LR schedule as a LambdaLR."""
    import deepspeed
    import torch

    t = job.train
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt_cls = torch.optim.AdamW if job.deepspeed.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(groups, lr=t.lr, betas=(t.beta1, t.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(job, total_steps))
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(job, load_universal=load_universal),
    )
    return engine


def token_loss(engine: Any, x: Any, y: Any) -> Any:
    """Mean next-token cross-entropy in nats per target token (targets are already shifted)."""
    import torch.nn.functional as F

    logits = engine(input_ids=x).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))


def evaluate(engine: Any, batches: list[tuple[Any, Any]]) -> tuple[float, int]:
    """Summed loss and batch count over this rank's share of the held-out batches (ranks all-reduce them)."""
    import torch

    engine.eval()
    total = 0.0
    with torch.no_grad():
        for x, y in batches:
            total += float(token_loss(engine, x, y))
    engine.train()
    return total, len(batches)


def current_lr(engine: Any) -> float:
    return float(engine.get_lr()[0])
