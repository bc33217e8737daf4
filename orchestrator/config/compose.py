"""Compose `conf/` with Hydra into a typed `JobConfig`, turning Hydra's and OmegaConf's errors into InputErrors.

Hydra reports a bad override as a multi-line traceback; users get one line naming the key and the fix instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from orchestrator.config.schema import JobConfig
from orchestrator.errors import InputError

SCHEMA_NAME = "job_schema"
CONFIG_NAME = "config"
GROUPS = ("model", "data", "deepspeed", "stop", "telemetry", "probe", "tracking", "cluster", "experiment")


def config_dir() -> Path:
    """`conf/` of this checkout, or $CPR_CONFIG_DIR."""
    env = os.environ.get("CPR_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / f"{CONFIG_NAME}.yaml").is_file():
        raise InputError("CPR_CONFIG_DIR", f"no {CONFIG_NAME}.yaml in {path}", "point it at the project's conf/ folder")
    return path


def register_schema() -> None:
    """Make `job_schema` (the JobConfig dataclass) known to Hydra's ConfigStore; config.yaml extends it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=JobConfig)


def options(group: str) -> list[str]:
    """The configs a group offers (file names without .yaml)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _key_of(message: str) -> str | None:
    for pattern in (r"full_key: ([\w.\-\[\]]+)", r"Key '([\w.\-]+)'", r"key '([\w.\-]+)'"):
        if m := re.search(pattern, message):
            return m.group(1)
    return None


def to_input_error(exc: BaseException) -> InputError:
    """One line for any composition failure: which key, what is wrong, what to do."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

    cause: BaseException = exc
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    text = " ".join(str(cause).split())
    first = text.split(" full_key:")[0]
    key = getattr(cause, "full_key", None) or _key_of(text)
    if isinstance(exc, OverrideParseException):
        return InputError("overrides", first, "write overrides as key=value, e.g. stop.eta_rel=0.05")
    if isinstance(exc, MissingConfigException):
        m = re.search(r"Could not find '([\w\-]+)/([\w.\-]+)'", text)
        if m:
            group, name = m.groups()
            return InputError(group, f"no config named {name!r}", f"use one of: {', '.join(options(group))}")
        return InputError("config", first, "see `cpr submit --help` for the config groups")
    if isinstance(cause, MissingMandatoryValue):
        return InputError(key or "config", "is required and not set", f"set it, e.g. `cpr submit {key}=...`")
    if isinstance(cause, ConfigKeyError) or re.search(r"not in struct|Could not override|Key '[^']+' not in '", text):
        name = key or _key_of(text) or "config"
        return InputError(name, "unknown config key", "check the spelling; `cpr submit --cfg job` prints every key")
    if isinstance(cause, ValidationError):
        return InputError(key or "config", first, "give a value of the field's type (see conf/ and the schema)")
    return InputError(key or "config", first, "fix the override or the config file")


def compose_dict(overrides: list[str]) -> Any:
    """The composed DictConfig (without the `hydra` node), type-checked against JobConfig."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schema()
    conf = config_dir()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3", job_name="cpr"):
            return compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except InputError:
        raise
    except Exception as exc:  # Hydra/OmegaConf raise many types; each becomes one line
        raise to_input_error(exc) from None
    finally:
        GlobalHydra.instance().clear()


def to_job_config(cfg: Any) -> JobConfig:
    """A composed DictConfig as the JobConfig dataclass (interpolations resolved, `???` values refused)."""
    from omegaconf import OmegaConf

    try:
        if "hydra" in cfg:
            cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:
        raise to_input_error(exc) from None
    if not isinstance(obj, JobConfig):  # config.yaml must start from job_schema
        raise InputError("config", "conf/config.yaml does not extend job_schema", "keep `job_schema` in its defaults")
    return obj


def compose_job(overrides: list[str]) -> JobConfig:
    """Compose and type-check a job from `conf/` and command-line overrides."""
    return to_job_config(compose_dict(overrides))


def job_to_dict(job: JobConfig) -> dict[str, Any]:
    """Plain nested dict of a job config (for params, artifacts and crossing to Ray actors)."""
    from dataclasses import asdict

    return asdict(job)


def job_from_dict(data: dict[str, Any]) -> JobConfig:
    """Rebuild a JobConfig from `job_to_dict` output (type-checked through OmegaConf)."""
    from omegaconf import OmegaConf

    base = OmegaConf.structured(JobConfig)
    return OmegaConf.to_object(OmegaConf.merge(base, data))  # type: ignore[return-value]


def job_to_yaml(job: JobConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(job))
