"""The checks of a composed job that need more than one field's constraint, before any resource is taken.

Types, enums and unknown keys were checked by OmegaConf, each field's range by `schema.check_fields`; this checks
how fields fit together. Checks that need the outside world (data on disk, the Ray cluster, the tracking store)
live with the code that talks to it and run in `orchestrator.submission.preflight` before anything starts.
"""

from __future__ import annotations

from orchestrator.blueprints.store import check_model_id
from orchestrator.config.schema import JobConfig, check_fields
from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.errors import InputError

GPU_KINDS = (ResourceKind.GPU_HOURS, ResourceKind.VRAM_GB_HOURS)
ENERGY_KINDS = (ResourceKind.ENERGY_KWH, ResourceKind.CO2_KG)


def validate_model_shape(job: JobConfig) -> None:
    """The heads divide the width, checked here rather than when the model is first built."""
    m = job.model
    if m.hidden_size % m.num_heads:
        raise InputError(
            "model.num_heads",
            f"hidden_size {m.hidden_size} is not divisible by {m.num_heads} heads",
            "pick num_heads that divides hidden_size",
        )
    if m.num_kv_heads is not None and m.num_heads % m.num_kv_heads:
        raise InputError("model.num_kv_heads", f"{m.num_kv_heads} does not divide num_heads {m.num_heads}", None)


def validate_world_sizes(job: JobConfig) -> None:
    """min_workers ≤ num_workers ≤ max_workers, and the global batch splits evenly at every size in between."""
    c, t = job.cluster, job.train
    if c.min_workers is not None and c.min_workers > c.num_workers:
        raise InputError("cluster.min_workers", f"{c.min_workers} is above num_workers ({c.num_workers})", None)
    if c.max_workers is not None and c.max_workers < c.num_workers:
        raise InputError("cluster.max_workers", f"{c.max_workers} is below num_workers ({c.num_workers})", None)
    steps = t.grad_accum * c.num_workers  # micro-batches per optimizer step, over all ranks
    uneven = [w for w in job.world_sizes() if steps % w]
    if uneven:
        field = "cluster.max_workers" if uneven[-1] > c.num_workers else "cluster.min_workers"
        raise InputError(
            field,
            f"the global batch of {steps} micro-batches (train.grad_accum × cluster.num_workers) does not split "
            f"evenly over {', '.join(map(str, uneven))} ranks",
            "pick sizes that divide it, or raise train.grad_accum",
        )


def validate_train(job: JobConfig) -> None:
    """The loop's sizes fit the model and each other: sequences fit the positions, checkpoints follow evaluations,
    and the budget covers one evaluation interval."""
    t, m = job.train, job.model
    if t.seq_len > m.max_position_embeddings:
        raise InputError(
            "train.seq_len",
            f"must be ≤ model.max_position_embeddings ({m.max_position_embeddings}), got {t.seq_len}",
            "shorten train.seq_len or raise model.max_position_embeddings",
        )
    if t.checkpoint_steps() % t.eval_interval:
        raise InputError(
            "train.checkpoint_interval",
            f"{t.checkpoint_interval} is not a multiple of train.eval_interval ({t.eval_interval}): a checkpoint is "
            "taken after a finite evaluation check",
            f"e.g. train.checkpoint_interval={4 * t.eval_interval}",
        )
    validate_world_sizes(job)
    least = job.tokens_per_step * t.eval_interval
    if t.max_tokens < least:
        raise InputError(
            "train.max_tokens",
            f"must cover at least one evaluation interval ({least} tokens), got {t.max_tokens}",
            "raise train.max_tokens or lower train.eval_interval",
        )


def validate_stop(job: JobConfig) -> StopRuleConfig:
    """The stop rule's settings (checked by the core), and a resource this job's telemetry measures."""
    rule = job.stop.rule_config()
    tel, kind = job.telemetry, rule.resource
    gpus = job.cluster.gpus_per_worker > 0
    if kind in ENERGY_KINDS and not (tel.enabled and (tel.codecarbon or (tel.nvml and gpus))):
        raise InputError(
            "stop.resource",
            f"{kind.value} needs energy telemetry, which this config turns off",
            "enable telemetry (telemetry=default) or stop on tokens, flops or wall_hours",
        )
    if kind in GPU_KINDS and not (gpus and tel.enabled and tel.nvml):
        raise InputError(
            "stop.resource",
            f"{kind.value} is measured by NVML on GPUs; this job has none",
            "use energy_kwh, flops, tokens or wall_hours on CPU",
        )
    return rule


def validate_job(job: JobConfig) -> StopRuleConfig:
    """Check every value of a job; returns the stop rule's config (already validated)."""
    check_fields(job)
    validate_model_shape(job)
    validate_train(job)
    if job.cluster.backend == "nccl" and job.cluster.gpus_per_worker == 0:
        raise InputError("cluster.backend", "nccl needs GPUs", "set cluster.gpus_per_worker=1 or backend=gloo")
    job.data.domain_configs()
    if job.probe.enabled:  # a disabled probe's domains and bins are never used
        job.probe_domains()
        job.probe.histogram.spec()
        if job.probe.model_id is not None:
            check_model_id(job.probe.model_id)
    return validate_stop(job)
