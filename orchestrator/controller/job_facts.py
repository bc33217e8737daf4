"""A job's config as the pure controller state needs it: plain facts drawn from the typed config's derived values
(`JobConfig.slot_unit`, `world_sizes`, `tokens_per_step`)."""

from __future__ import annotations

from orchestrator.config.schema import JobConfig
from orchestrator.controller.records import JobFacts


def job_facts(job: JobConfig) -> JobFacts:
    """What the pure controller state decides on."""
    kind, step = job.slot_unit()
    sizes = job.world_sizes()
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
        tokens_per_step=job.tokens_per_step,
        zero_stage=job.deepspeed.zero_stage,
        notify_on=job.notify.events(),
    )
