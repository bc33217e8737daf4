"""Compose the config groups (`orchestrator/conf/`) with Hydra into a typed `JobConfig`, one-line errors.

Hydra reports a bad override as a multi-line traceback; users get one line naming the key and the fix instead.
The groups ship inside the package (`pkg://orchestrator.conf`), so an installed wheel composes them too.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import typing
from pathlib import Path
from typing import Any

from orchestrator.config.schema import JobConfig
from orchestrator.errors import InputError

SCHEMA_NAME = "job_schema"
CONFIG_NAME = "config"
CONFIG_MODULE = "orchestrator.conf"
JOB_NAME = "submit"
"""Hydra's `hydra.job.name`: names the run's log file (`submit.log`) in its output folder."""
GROUPS = (
    "model", "data", "deepspeed", "stop", "telemetry", "probe", "psi", "adapt", "tracking", "cluster", "experiment"
)  # fmt: skip


def config_dir() -> Path:
    """$CPR_CONFIG_DIR, else the package's own config groups (`orchestrator/conf/`, found through importlib)."""
    env = os.environ.get("CPR_CONFIG_DIR")
    path = Path(env) if env else Path(str(importlib.resources.files(CONFIG_MODULE)))
    if not (path / f"{CONFIG_NAME}.yaml").is_file():
        raise InputError(
            "CPR_CONFIG_DIR", f"no {CONFIG_NAME}.yaml in {path}", "point it at a folder like the package's conf/"
        )
    return path


def register_schema() -> None:
    """Make `job_schema` (the JobConfig dataclass) known to Hydra's ConfigStore; config.yaml extends it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=JobConfig)


def options(group: str) -> list[str]:
    """The configs a group offers (file names without .yaml)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _key_of(message: str) -> str | None:
    for pattern in (r"full_key: ([\w.\-\[\]]+)", r"Key '([\w.\-]+)'", r"key '([\w.\-]+)'", r"argument '([\w.\-]+)="):
        if m := re.search(pattern, message):
            return m.group(1)
    return None


def _unparsable(overrides: list[str]) -> str | None:
    """The key of the first override Hydra's grammar refuses on its own (its error does not say which)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception:
            key = override.partition("=")[0].lstrip("+~")
            return key if len(key) <= 64 else key[:61] + "..."
    return None


def to_input_error(exc: BaseException, overrides: list[str] | None = None) -> InputError:
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
        culprit = _unparsable(overrides or [])
        where = f"overrides: {culprit}" if culprit else "overrides"
        return InputError(where, first, "write overrides as key=value, e.g. stop.eta_rel=0.05")
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
        return InputError(
            key or "config", first, "give a value of the field's type (see orchestrator/conf/ and the schema)"
        )
    return InputError(key or "config", first, "fix the override or the config file")


def compose_dict(overrides: list[str], *, hydra_node: bool = False, multirun: bool = False) -> Any:
    """The composed DictConfig, type-checked against JobConfig; with its `hydra` node if `hydra_node` (the run's
    output folder and logging are set there). `multirun`: composed as Hydra composes a sweep's own config (sweep
    overrides recorded, not applied; the `hydra` node always kept)."""
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    for override in overrides:  # Python refuses to parse such an integer, and Hydra's error would not name the key
        key, _, value = override.partition("=")
        if re.search(r"\d{4000}", value):
            raise InputError(key.lstrip("+~"), "has a number thousands of digits long", "give a value of sensible size")
    register_schema()
    conf = config_dir()
    GlobalHydra.instance().clear()
    try:
        if os.environ.get("CPR_CONFIG_DIR"):
            initialize: Any = initialize_config_dir(str(conf.absolute()), version_base="1.3", job_name=JOB_NAME)
        else:
            initialize = initialize_config_module(CONFIG_MODULE, version_base="1.3", job_name=JOB_NAME)
        with initialize:
            if multirun:
                loader = GlobalHydra.instance().config_loader()
                return loader.load_configuration(CONFIG_NAME, list(overrides), run_mode=RunMode.MULTIRUN)
            return compose(config_name=CONFIG_NAME, overrides=list(overrides), return_hydra_config=hydra_node)
    except InputError:
        raise
    except Exception as exc:  # Hydra/OmegaConf raise many types; each becomes one line
        raise to_input_error(exc, overrides) from None
    finally:
        GlobalHydra.instance().clear()


def to_job_config(cfg: Any) -> JobConfig:
    """A composed DictConfig as the JobConfig dataclass (interpolations resolved, `???` values refused)."""
    import copy

    from omegaconf import OmegaConf, open_dict, read_write

    try:
        if "hydra" in cfg:  # as Hydra does before it calls a task: a copy without the node keeps the schema's type
            cfg = copy.deepcopy(cfg)
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:
        raise to_input_error(exc) from None
    if not isinstance(obj, JobConfig):  # config.yaml must start from job_schema
        raise InputError(
            "config", f"{CONFIG_NAME}.yaml does not extend job_schema", "keep `job_schema` in its defaults"
        )
    check_keys(cfg, JobConfig)
    return obj


def check_keys(cfg: Any, schema: type, prefix: str = "") -> None:
    """Every key of the schema and no other: `+key=…`/`++key=…` can add keys a structured config would refuse, and
    `~key` can drop one; to_object ignores the first and fills defaults for the second, so both are refused here."""
    from omegaconf import DictConfig

    fields = [f.name for f in dataclasses.fields(schema)]  # type: ignore[arg-type]
    hints = typing.get_type_hints(schema)
    keys = [str(k) for k in cfg]
    for key in keys:
        if key not in fields:
            raise InputError(
                prefix + key, "unknown config key", "check the spelling; `cpr submit --cfg` prints every key"
            )
    for name in fields:
        if name not in keys:
            raise InputError(prefix + name, "was removed by an override", f"set a value instead of ~{prefix}{name}")
        node = cfg._get_node(name)
        if dataclasses.is_dataclass(hints[name]) and isinstance(node, DictConfig) and not node._is_none():
            check_keys(node, hints[name], f"{prefix}{name}.")


def compose_job(overrides: list[str]) -> JobConfig:
    """Compose and type-check a job from the config groups and command-line overrides."""
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
