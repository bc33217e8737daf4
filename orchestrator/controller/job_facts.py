"""A job's config as the controller needs it: the one module of the controller that reads `orchestrator.config`'s
derived values (slot unit, world sizes, tokens per step, a resized copy, the stop rule's and resource model's
configs), so a change to how they are computed touches only this file."""

from __future__ import annotations

from orchestrator.config.schema import JobConfig
from orchestrator.config.validate import (
    job_resource_model,
    resized,
    slot_unit,
    stop_rule_config,
    tokens_per_step,
    world_sizes,
)
from orchestrator.controller.records import JobFacts
from orchestrator.core.resource_model import ResourceModel
from orchestrator.core.stop_rule import StopRuleConfig


def job_facts(job: JobConfig) -> JobFacts:
    """What the pure controller state decides on."""
    kind, step = slot_unit(job)
    sizes = world_sizes(job)
    c = job.cluster
    return JobFacts(
        name=job.name,
        priority=job.priority,
        group=job.group,
        num_workers=c.num_workers,
        min_world=sizes[0],
        max_world=sizes[-1],
        slot_kind=kind,
        slot_step=step,
        resize_cooldown_s=c.resize_cooldown_s,
        max_restarts=c.max_restarts,
        max_tokens=job.train.max_tokens,
        tokens_per_step=tokens_per_step(job),
        zero_stage=job.deepspeed.zero_stage,
    )


def at_size(job: JobConfig, world: int) -> JobConfig:
    """The job run with `world` ranks."""
    return resized(job, world)


def rule_config(job: JobConfig) -> StopRuleConfig:
    return stop_rule_config(job.stop)


def resource_at_size(job: JobConfig, world: int, n_params: int) -> ResourceModel:
    """Its resource model (what a blueprint records) at `world` ranks."""
    return job_resource_model(resized(job, world), n_params)
