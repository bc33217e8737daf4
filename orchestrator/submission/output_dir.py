"""Hydra's output folders, made as Hydra's own apps make them (public Hydra and OmegaConf calls only): a run's
folder with its resolved config, the Hydra config and the overrides under `.hydra/`, and Hydra's job logging into
`<job name>.log` there; a sweep's folder with `multirun.yaml`."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.submission.plan import JobPlan


def _save(cfg: Any, path: Path) -> None:
    from omegaconf import OmegaConf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")


def open_run_dir(plan: JobPlan) -> Path | None:
    """Make the run's folder (`hydra.run.dir`), save its configs and start Hydra's job logging there; sets
    HydraConfig for `${hydra:…}` interpolations. None for a plan composed without its `hydra` node."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import configure_log
    from omegaconf import OmegaConf, open_dict, read_write

    cfg = plan.config
    if cfg is None:
        return None
    HydraConfig.instance().set_config(cfg)  # `hydra.run.dir` may read ${hydra:…}
    out = Path(str(OmegaConf.select(cfg, "hydra.run.dir"))).absolute()
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    configure_log(cfg.hydra.job_logging, cfg.hydra.verbose)
    if cfg.hydra.output_subdir is not None:
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        hydra_dir = out / str(cfg.hydra.output_subdir)
        _save(task_cfg, hydra_dir / "config.yaml")
        _save(HydraConfig.instance().cfg, hydra_dir / "hydra.yaml")
        _save(cfg.hydra.overrides.task, hydra_dir / "overrides.yaml")
    return out


@contextlib.contextmanager
def job_env(plan: JobPlan) -> Iterator[None]:
    """The environment variables the config sets for the job (`hydra.job.env_set`), as Hydra sets them for a task."""
    from hydra.core.utils import env_override

    if plan.config is None:
        yield
        return
    with env_override(plan.config.hydra.job.env_set):
        yield


def open_sweep_dir(config: Any) -> Path:
    """Make the sweep's folder (`hydra.sweep.dir`) and save its config there as `multirun.yaml`, as Hydra's sweeper
    does; `config` is the sweep's own config (composed with `multirun=True`)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    HydraConfig.instance().set_config(config)
    out = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, out / "multirun.yaml")
    return out
