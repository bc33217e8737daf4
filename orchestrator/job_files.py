"""A job's folder as its files left it (`<runs_dir>/jobs/<job_id>/job.json`: its saved config, run and checkpoint
folder), found by job id or MLflow run id without the controller: what `cpr export` and `cpr submit +resume` read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError


@dataclass(frozen=True)
class JobFiles:
    """What a job's folder says about it: its saved config and where its checkpoints, tokens and run are."""

    job_id: str
    folder: Path
    meta: dict[str, Any]
    job: Any
    """Its JobConfig, rebuilt from job.json (model.vocab_size filled in at submission)."""
    checkpoint_dir: Path

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def tracking_uri(self) -> str:
        return str(self.meta["tracking_uri"])

    def prepared(self) -> Any:
        """The job's PreparedData: token memmaps and tokenizer path as its ranks used them."""
        from orchestrator.data.prepare import PreparedData

        return PreparedData.from_dict(self.meta["prepared"])


def find_job(
    runs_dir: Path, ref: str, *, field: str = "JOB", hint: str = "see `cpr status`, or pass --runs-dir"
) -> JobFiles:
    """The job folder of a job id (or its MLflow run id) under `runs_dir`; one line naming `field` if there is none
    or its job.json cannot be read."""
    from orchestrator.config.compose import job_from_dict

    jobs = runs_dir / "jobs"
    folder = jobs / ref
    if not ref or "/" in ref or ref in (".", "..") or not (folder / "job.json").is_file():
        by_run = [p for p in sorted(jobs.glob("*/job.json")) if _run_id(p) == ref] if ref and jobs.is_dir() else []
        if not by_run:
            raise InputError(field, f"no job {ref!r} under {jobs}", hint)
        folder = by_run[0].parent
    try:
        meta = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        job = job_from_dict(meta["job"])
        ckpt = Path(meta["checkpoint_dir"])
    except Exception as exc:
        raise InputError(
            field, f"{folder / 'job.json'} cannot be read ({type(exc).__name__}: {exc})", "it was not written by cpr"
        ) from None
    if not ckpt.is_absolute():
        ckpt = (runs_dir.parent / ckpt).resolve()
    return JobFiles(job_id=folder.name, folder=folder, meta=meta, job=job, checkpoint_dir=ckpt)


def _run_id(job_json: Path) -> str | None:
    try:
        return str(json.loads(job_json.read_text(encoding="utf-8")).get("run_id"))
    except (OSError, ValueError):
        return None
