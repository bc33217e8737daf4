"""Plan a job: compose its config once and check every value once; every later step reads the plan."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.compose import compose_dict, to_job_config
from orchestrator.config.schema import JobConfig
from orchestrator.config.validate import validate_job

RUN_MODE = "hydra.mode=RUN"
"""The override Hydra's own app adds to a single run; recorded in the run's `.hydra/hydra.yaml`."""


@dataclass(frozen=True)
class JobPlan:
    """A composed, validated job and how it was asked for."""

    job: JobConfig
    overrides: tuple[str, ...]
    """The command-line overrides it was composed from."""
    config: Any = None
    """The composed DictConfig with its `hydra` node (output folder, logging); None when another app composed it."""

    @property
    def runs_dir(self) -> Path:
        """Where the job's state, checkpoints and local MLflow store go (relative to the current folder)."""
        return (Path.cwd() / self.job.runs_dir).resolve()


def plan_of(job: JobConfig, overrides: list[str] | tuple[str, ...] = (), config: Any = None) -> JobPlan:
    """A plan for a typed job (composed, or built in code): every value checked, once. A `data.selection` without
    `data.tokenizer` takes the manifest's tokenizer (the corpus must be tokenized as the selection was)."""
    from orchestrator.data.selection import selection_tokenizer

    tokenizer = selection_tokenizer(job.data)
    if tokenizer is not None:
        job = dataclasses.replace(job, data=dataclasses.replace(job.data, tokenizer=tokenizer))
    validate_job(job, overrides)
    return JobPlan(job=job, overrides=tuple(overrides), config=config)


def plan_config(config: Any, overrides: list[str] | tuple[str, ...] = ()) -> JobPlan:
    """A plan from a composed DictConfig (with or without its `hydra` node)."""
    return plan_of(to_job_config(config), overrides, config if "hydra" in config else None)


def plan_job(overrides: list[str] | tuple[str, ...] = ()) -> JobPlan:
    """Compose the package's config groups with Hydra overrides and check every value: one line on bad input."""
    return plan_config(compose_dict([*overrides, RUN_MODE], hydra_node=True), overrides)
