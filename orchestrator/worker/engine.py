"""The DeepSpeed side of a worker: its config dict, the engine, the LR schedule, the loss and evaluation."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from orchestrator.config.schema import JobConfig
from orchestrator.errors import InputError


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


def build_engine(
    job: JobConfig,
    model: Any,
    *,
    load_universal: bool = False,
    trainable: Collection[str] | Callable[[str], bool] | None = None,
) -> Any:
    """deepspeed.initialize with torch's AdamW (decay on matrices only) and the LR schedule as a LambdaLR.

    `trainable` (parameter names, or a predicate on them) trains only those: the rest get requires_grad=False and
    stay out of the optimizer, so they carry neither gradient nor optimizer state (Algorithm 1 step (4),
    docs/adapt.md). None (the default) trains every parameter.
    """
    import deepspeed
    import torch

    t = job.train
    if trainable is None:
        params = list(model.parameters())
    else:
        params = _freeze_all_but(model, trainable)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if trainable is not None:
        groups = [g for g in groups if g["params"]]  # ZeRO cannot flatten an empty group
    opt_cls = torch.optim.AdamW if job.deepspeed.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(groups, lr=t.lr, betas=(t.beta1, t.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, job.lr_schedule())
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(job, load_universal=load_universal),
    )
    return engine


def _freeze_all_but(model: Any, trainable: Collection[str] | Callable[[str], bool]) -> list[Any]:
    """Set requires_grad=False on every parameter `trainable` does not name; the trainable ones, in model order."""
    named = list(model.named_parameters())
    if callable(trainable):
        keep = trainable
    else:
        wanted = set(trainable)
        unknown = sorted(wanted - {n for n, _ in named})
        if unknown:
            raise InputError("trainable", f"names no parameter of the model: {', '.join(unknown[:5])}")
        keep = wanted.__contains__
    params = []
    for name, p in named:
        if keep(name):
            params.append(p)
        else:
            p.requires_grad_(False)
    if not params:
        raise InputError("trainable", "selects no parameter", "train at least one submodule")
    return params


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


def lr_schedule(engine: Any) -> Any:
    """The job's `LrSchedule` inside the engine's LambdaLR (a checkpoint's load updates this same object)."""
    return engine.lr_scheduler.lr_lambdas[0]


def cool(engine: Any, start: int, steps: int) -> None:
    """Start the cool-down: the schedule decays over the `steps` steps after `start`, from the next step on (the LR of
    the step about to be taken is set again, as LambdaLR would have set it had the cool-down been known)."""
    sched = engine.lr_scheduler
    lr_schedule(engine).cool(start, steps)
    for group, base, fn in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True):
        group["lr"] = base * fn(sched.last_epoch)
