"""A Hydra launcher that queues a sweep's jobs on the cluster's controller instead of running them in-process.

For a Hydra app of your own whose config is a cpr job: `python app.py -m hydra/launcher=cpr train.lr=1e-3,3e-3`.
Hydra's sweeper expands the sweep; this launcher hands the jobs to cpr's submission API, which composes and checks
every one first (a bad one queues nothing), then prepares each (data, memory), joins or starts the shared Ray
cluster and queues them all on the controller, detached: `cpr status` follows them. Each JobReturn's value is the
job's `Queued` (job id, MLflow run id); a refused sweep fails every JobReturn with the one-line InputError.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig


@dataclass
class CprLauncherConf:
    _target_: str = "hydra_plugins.cpr_launcher.cpr_launcher.CprLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="cpr", node=CprLauncherConf, provider="cpr")


class CprLauncher(Launcher):
    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.hydra_context: Any = None
        self.sweep_id = ""

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from orchestrator.submission import new_sweep_id

        self.config = config
        self.hydra_context = hydra_context
        # Tagged on every job's run (`cpr.sweep`): `cpr report --sweep <id>` compares them, and the controller logs
        # that comparison with the sweep's last job to end.
        self.sweep_id = new_sweep_id()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from orchestrator.errors import InputError
        from orchestrator.submission import plan_sweep_jobs, queue_sweep

        assert self.config is not None and self.hydra_context is not None
        config, loader = self.config, self.hydra_context.config_loader
        try:
            sweep = plan_sweep_jobs(
                job_overrides,
                lambda overrides: loader.load_sweep_config(config, overrides),
                first_index=initial_job_idx,
                sweep_id=self.sweep_id,
            )
            queued = queue_sweep(sweep)
        except InputError as err:
            return [JobReturn(overrides=list(o), status=JobStatus.FAILED, _return_value=err) for o in job_overrides]
        return [JobReturn(overrides=list(q.overrides), status=JobStatus.COMPLETED, _return_value=q) for q in queued]
