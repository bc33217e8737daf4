"""The read side of published blueprints: which versions runs published to MLflow, and their exact bytes.

A job's run carries the tags `cpr.blueprint.model_id` and `cpr.blueprint.versions` ("1,2,3") and, per version, the
artifact `blueprints/v<N>/blueprint.json` (the controller writes them; `orchestrator.controller.actor._publish`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.blueprints import parse_blueprint
from orchestrator.core import names
from orchestrator.errors import InputError


def artifact_path(version: int) -> str:
    return f"blueprints/v{version}/blueprint.json"


def record_version(writer: Any, *, model_id: str, version: int, text: str, versions: list[int]) -> None:
    """The write side, for the controller: one version's file as the run's artifact, and the tags naming them all."""
    writer.log_text(text, artifact_path(version))
    writer.set_tags(
        {
            names.BLUEPRINT_MODEL_ID: model_id,
            names.BLUEPRINT_LATEST: str(max(versions)),
            names.BLUEPRINT_VERSIONS: ",".join(str(v) for v in sorted(versions)),
        }
    )


@dataclass(frozen=True, kw_only=True)
class PublishedBlueprint:
    """One published version, as `cpr blueprint list` shows it."""

    model_id: str
    version: int
    run_id: str
    job_id: str | None
    step: int | None
    tokens_seen: int | None
    training_checkpoint: float
    checkpoint: str | None
    """The checkpoint label it was published at ("0.5", "stop", ...)."""
    created_at: str | None


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _runs_with_blueprints(client: Any, experiment: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{names.BLUEPRINT_MODEL_ID}` != ''",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )


def _versions(run: Any) -> list[int]:
    text = run.data.tags.get(names.BLUEPRINT_VERSIONS, "")
    return sorted(int(v) for v in text.split(",") if v.strip().isdigit())


def _download(client: Any, run_id: str, version: int) -> bytes:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout/stderr carry only our output
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, artifact_path(version), tmp)
        except Exception as exc:  # MLflow raises several types for a missing artifact or an unreachable store
            raise InputError(
                f"run {run_id} v{version}",
                f"its artifact {artifact_path(version)} cannot be read ({type(exc).__name__})",
                "check the artifact store the tracking server points at",
            ) from None
        return Path(local).read_bytes()


def _row(client: Any, run: Any, version: int) -> tuple[PublishedBlueprint, bytes]:
    data = _download(client, run.info.run_id, version)
    bp = parse_blueprint(data, source=f"run {run.info.run_id} {artifact_path(version)}")  # validates it
    row = PublishedBlueprint(
        model_id=bp.model_id,
        version=version,
        run_id=run.info.run_id,
        job_id=run.data.tags.get(names.JOB_ID),
        step=bp.step,
        tokens_seen=bp.tokens_seen,
        training_checkpoint=bp.training_checkpoint,
        checkpoint=str((bp.provenance or {}).get("checkpoint")) if bp.provenance else None,
        created_at=bp.created_at,
    )
    return row, data


def _select(runs: list[Any], *, run: str | None, model_id: str | None, uri: str) -> list[Any]:
    if run is not None:
        hits = [r for r in runs if run in (r.info.run_id, r.data.tags.get(names.JOB_ID))]
        if not hits:
            raise InputError(
                "--run", f"no run or job {run!r} with blueprints in {uri}", "`cpr blueprint list` shows them"
            )
        return hits
    if model_id is not None:
        hits = [r for r in runs if r.data.tags.get(names.BLUEPRINT_MODEL_ID) == model_id]
        if not hits:
            raise InputError("--model", f"no blueprints of model {model_id!r} in {uri}", "`cpr blueprint list`")
        return hits
    return runs


def list_published(
    tracking_uri: str, *, run: str | None = None, model_id: str | None = None, experiment: str = "cpr"
) -> list[PublishedBlueprint]:
    """Every published version (of one run or job, or of one model), sorted by model id and version."""
    client = _client(tracking_uri)
    runs = _select(_runs_with_blueprints(client, experiment), run=run, model_id=model_id, uri=tracking_uri)
    rows = [_row(client, r, v)[0] for r in runs for v in _versions(r)]
    return sorted(rows, key=lambda b: (b.model_id, b.version))


def run_published(tracking_uri: str, run_id: str) -> list[tuple[PublishedBlueprint, bytes]]:
    """Every version one run published, oldest first, each with its exact bytes (validated as it is read); none
    when the run published none."""
    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # MLflow raises several types for a missing run or an unreachable store
        raise InputError(
            "tracking", f"run {run_id} cannot be read at {tracking_uri} ({type(exc).__name__})", "check the run store"
        ) from None
    return [_row(client, run, v) for v in _versions(run)]


def fetch_published(
    tracking_uri: str, ref: str, *, version: int | None = None, experiment: str = "cpr"
) -> tuple[PublishedBlueprint, bytes]:
    """One version's exact published bytes; `ref` is a run id, a job id or a model id; version None: the latest."""
    client = _client(tracking_uri)
    runs = _runs_with_blueprints(client, experiment)
    candidates = [r for r in runs if ref in (r.info.run_id, r.data.tags.get(names.JOB_ID))]
    if not candidates:
        candidates = [r for r in runs if r.data.tags.get(names.BLUEPRINT_MODEL_ID) == ref]
    if not candidates:
        raise InputError(
            "RUN|MODEL_ID", f"no run, job or model {ref!r} with blueprints in {tracking_uri}", "`cpr blueprint list`"
        )
    published = sorted({v for r in candidates for v in _versions(r)})
    want = published[-1] if version is None else version
    holders = [r for r in candidates if want in _versions(r)]
    if not holders:
        raise InputError("--version", f"{ref} has no v{want}", f"published: {', '.join(f'v{v}' for v in published)}")
    if len(holders) > 1:
        raise InputError(
            "RUN|MODEL_ID",
            f"model {ref!r} has a v{want} in {len(holders)} runs",
            "name the run instead: " + ", ".join(r.info.run_id for r in holders),
        )
    return _row(client, holders[0], want)
