"""A Hydra launcher that queues a sweep's jobs on the cluster's controller instead of running them in-process.

`cpr submit -m model=llama-tiny,llama-2m train.lr=1e-3,3e-3` selects it (`hydra/launcher=cpr`). Hydra's sweeper
expands the sweep; this launcher composes and checks every job first, so a bad one queues nothing, then plans
each (data, memory), joins or starts the shared Ray cluster, and submits them all to the controller, which runs
them from its queue as the pool's slots allow. Each job is detached: `cpr status` follows them.
"""

import copy
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, open_dict, read_write


@dataclass
class CprLauncherConf:
    _target_: str = "hydra_plugins.cpr_launcher.cpr_launcher.CprLauncher"
    max_jobs: int = 64
    """A sweep that expands to more jobs than this is refused whole (nothing is queued)."""


ConfigStore.instance().store(group="hydra/launcher", name="cpr", node=CprLauncherConf, provider="cpr")


class CprLauncher(Launcher):
    def __init__(self, max_jobs: int = 64) -> None:
        super().__init__()
        self.max_jobs = max_jobs
        self.config: DictConfig | None = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        # Tagged on every job's run (`cpr.sweep`): `cpr report --sweep <id>` compares them, and the controller logs
        # that comparison with the sweep's last job to end.
        self.sweep_id = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # Hydra's plugin scan may load this module twice, so the outcome lives in launch.submit, loaded once.
        from launch.submit import SWEEP_OUTCOME as OUTCOME
        from orchestrator.errors import InputError

        OUTCOME.clear()
        try:
            OUTCOME["jobs"] = self._queue(job_overrides, initial_job_idx)
            OUTCOME["sweep"] = self.sweep_id
        except InputError as err:
            OUTCOME["error"] = err
            return []
        return [
            JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=job_id)
            for (job_id, _run, o) in OUTCOME["jobs"]
        ]

    def _queue(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[tuple[str, str, list[str]]]:
        from launch.submit import check_capacity, init_ray, plan
        from orchestrator.config.compose import to_job_config
        from orchestrator.config.validate import validate_job
        from orchestrator.controller.actor import controller_handle
        from orchestrator.errors import InputError

        assert self.config is not None and self.hydra_context is not None
        n = len(job_overrides)
        if initial_job_idx + n > self.max_jobs:
            raise InputError(
                "--multirun",
                f"the sweep expands to {initial_job_idx + n} jobs, more than hydra.launcher.max_jobs={self.max_jobs}",
                "sweep fewer values, or raise hydra.launcher.max_jobs",
            )
        jobs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                if not any(o.split("=", 1)[0].lstrip("+~") == "name" for o in overrides):
                    cfg.name = f"{cfg.name}-{idx}"  # every queued job needs its own name
                cfg.detach = True
            task_cfg = copy.deepcopy(cfg)
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]  # as Hydra's run_job does before it calls a task
            job = to_job_config(task_cfg)
            try:
                validate_job(job)
            except InputError as err:
                raise InputError(f"job #{idx} ({' '.join(overrides)}): {err.field}", err.problem, err.fix) from None
            jobs.append((job, list(overrides)))
        names = [j.name for j, _ in jobs]
        dupes = sorted({x for x in names if names.count(x) > 1})
        if dupes:
            raise InputError("name", f"the sweep gives several jobs the name {dupes[0]!r}", "sweep over name too")
        # data, memory, tracking: every check before queueing
        planned = [(replace(plan(job)[0], sweep=self.sweep_id), job, o) for job, o in jobs]
        first = jobs[0][0]
        init_ray(first, start_head=True)
        for job, _o in jobs:
            check_capacity(job)  # a job that could never fit the pool
        controller = controller_handle(first.cluster.namespace, detached=True)
        return [(sub.job_id, sub.send(controller)["run_id"], o) for sub, _job, o in planned]
