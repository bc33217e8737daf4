"""`cpr submit +resume=JOB`: continue an `interrupted` or `lost` job from its last checkpoint, with the config it was
submitted with, in the same MLflow run, its tracker (ledger, stop rule window, decisions, Γ so far) as its store
folder persisted it. Only overrides that change where and how it runs, not what it trains, may come along."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.lifecycle import LOST, RESUMABLE, lifecycle, observed_state
from orchestrator.errors import InputError
from orchestrator.submission.plan import JobPlan

RESUME_KEYS = ("+resume", "resume")
SAFE_KEYS = ("runs_dir", "detach", "interrupt_grace_s", "cluster.address", "cluster.num_cpus", "cluster.dashboard")
"""What may come with `+resume`: where the job's folder is and how the client and Ray run; the rest is its saved
config (a different model, data or stop rule would not continue the same run)."""


@dataclass(frozen=True)
class ResumePlan:
    """A job to continue: its checked config and the checkpoint it continues from."""

    job_id: str
    state_dir: Path
    plan: JobPlan
    resume: dict[str, Any]
    """{"dir", "tag", "universal"}: what its ranks load."""
    step: int
    was: str
    """What it was: `interrupted (SIGTERM)` or `lost`."""
    run_id: str
    tracking_uri: str


def split_resume(overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """The job id of a `+resume=JOB` among the overrides (None without one), and the other overrides."""
    job_id, rest = None, []
    for o in overrides:
        key, _, value = o.partition("=")
        if key in RESUME_KEYS:
            if not value.strip():
                raise InputError("resume", "no job id given", "write +resume=JOB with a job id from `cpr status`")
            job_id = value.strip()
        else:
            rest.append(o)
    return job_id, rest


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse, in one line, any override that would change what the resumed job trains."""
    for o in overrides:
        key = o.partition("=")[0].lstrip("+~")
        if key not in SAFE_KEYS:
            raise InputError(
                "resume",
                f"`{o}` would change the job's saved config",
                f"a resumed job keeps its config; only {', '.join(SAFE_KEYS)} may be given with +resume",
            )


def resume_refusal(job_id: str, state: str | None, controller_reachable: bool | None) -> InputError | None:
    """Why the job cannot be resumed (None: it can), from its stored state and whether its controller answers."""
    seen = observed_state(state or "unknown", controller_reachable)
    if seen in RESUMABLE:
        return None
    known = lifecycle(state)
    if known is not None and known.live:
        if controller_reachable is None:
            return InputError(
                "resume",
                f"{job_id} is recorded {state} and its controller cannot be checked (recorded by an older cpr)",
                "stop it with `cpr stop`, or `ray stop` its cluster, then resume",
            )
        return InputError("resume", f"{job_id} is still {state}: its controller answers", "follow it with `cpr status`")
    if known is not None and known.ended:
        return InputError(
            "resume", f"{job_id} already ended ({state})", "only an interrupted or lost job resumes; submit a new one"
        )
    return InputError("resume", f"{job_id} has no state this cpr knows ({state})", "submit it again")


def resume_point(record: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """The newest checkpoint in a job's `handle.json`: its last complete one (periodic, or the final one of an
    interrupted job), else the one its current gang started from; None without either."""
    ckpt = record.get("checkpoint")
    if ckpt:
        path = Path(ckpt["path"])
        return {"dir": str(path.parent), "tag": path.name, "universal": False}, int(ckpt["step"])
    if record.get("resume"):
        step = next((int(r["step"]) for r in reversed(record.get("restarts") or []) if "step" in r), 0)
        return dict(record["resume"]), step
    return None


def plan_resume(job_id: str, overrides: Sequence[str]) -> ResumePlan:
    """Find the job's folder, check it may be resumed (one line and exit 2 if not) and rebuild its config."""
    from omegaconf import OmegaConf

    from orchestrator.config.compose import to_input_error
    from orchestrator.config.schema import JobConfig
    from orchestrator.controller.liveness import reachable
    from orchestrator.controller.store import JobStore
    from orchestrator.core import names
    from orchestrator.job_files import find_job
    from orchestrator.submission.plan import plan_of

    check_overrides(overrides)
    given = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    runs_dir = Path.cwd() / given.get("runs_dir", JobConfig.runs_dir)
    files = find_job(runs_dir, job_id, field="resume", hint="see `cpr status`, or give runs_dir=")
    job_id, folder, meta = files.job_id, files.folder, files.meta
    store = JobStore(folder)
    record = store.load("handle.json") if store.path("handle.json").exists() else {}
    tags = _run_tags(meta["tracking_uri"], meta["run_id"])
    state = record.get("state") or tags.get(names.STATE)  # the store's record is written first, the tags after
    refusal = resume_refusal(job_id, state, reachable(tags.get(names.CONTROLLER)))
    if refusal is not None:
        raise refusal
    point = resume_point(record)
    if point is None or not (Path(point[0]["dir"]) / point[0]["tag"]).is_dir():
        where = "" if point is None else f" ({Path(point[0]['dir']) / point[0]['tag']} is gone)"
        raise InputError("resume", f"{job_id} has no checkpoint to continue from{where}", "submit it again")
    job = files.job
    try:
        if overrides:
            merged = OmegaConf.merge(
                OmegaConf.structured(job), OmegaConf.from_dotlist([o.lstrip("+~") for o in overrides])
            )
            job = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except Exception as exc:
        raise to_input_error(exc, list(overrides)) from None
    was = LOST if state != "interrupted" else f"interrupted ({record.get('interrupted_by') or 'a signal'})"
    return ResumePlan(
        job_id=job_id,
        state_dir=folder.resolve(),
        plan=plan_of(job, overrides),
        resume=point[0],
        step=point[1],
        was=was,
        run_id=meta["run_id"],
        tracking_uri=meta["tracking_uri"],
    )


def _run_tags(tracking_uri: str, run_id: str) -> dict[str, str]:
    """The run's tags: its state as last written and its controller's identity."""
    from mlflow.tracking import MlflowClient

    try:
        return dict(MlflowClient(tracking_uri).get_run(run_id).data.tags)
    except Exception as exc:
        raise InputError(
            "resume", f"the job's run {run_id} cannot be read at {tracking_uri}: {exc}", "check the tracking store"
        ) from None
