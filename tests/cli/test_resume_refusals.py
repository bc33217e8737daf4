"""`cpr submit +resume=JOB` refuses in one line (exit 2, nothing started) a job it cannot continue: unknown, ended,
still live, without a checkpoint, or with an override that would change what it trains. The jobs' folders and
runs are made here as the controller leaves them (one SQLite MLflow store for the module: no Ray, no training)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator.controller.store import JobStore
from orchestrator.core import names
from tests.conftest import assert_one_line_error


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # its tables made (and logged about) here, not in a test's output
    return uri


def recorded_job(
    work: Path, uri: str, job_id: str, state: str, *, controller: dict[str, Any] | None = None, ckpt: bool
) -> None:
    """A job's store folder and MLflow run as its controller left them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("cpr") or client.get_experiment(client.create_experiment("cpr"))
    tags = {names.JOB_ID: job_id, names.STATE: state}
    if controller is not None:
        tags[names.CONTROLLER] = json.dumps(controller)
    run = client.create_run(exp.experiment_id, run_name=job_id, tags=tags)
    folder = work / "cpr_runs" / "jobs" / job_id
    store = JobStore(folder)
    store.save(
        "job.json",
        {
            "job_id": job_id,
            "job": {},
            "run_id": run.info.run_id,
            "experiment_id": exp.experiment_id,
            "tracking_uri": uri,
            "checkpoint_dir": str(folder.parent.parent / "checkpoints" / job_id),  # as the controller writes it
        },
    )
    path = folder.parent.parent / "checkpoints" / job_id / "step40"
    if ckpt:
        path.mkdir(parents=True)
    store.save("handle.json", {"state": state, "checkpoint": {"step": 40, "path": str(path), "world_size": 2}})


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_unknown_job_is_refused(cli, work: Path) -> None:
    assert_one_line_error(cli("submit", "+resume=nope"), "resume: no job 'nope' under")


def test_a_job_that_ended_normally_is_refused(cli, work: Path, uri: str) -> None:
    recorded_job(work, uri, "done-1", "finished", ckpt=True)
    assert_one_line_error(cli("submit", "+resume=done-1"), "resume: done-1 already ended (finished)")


def test_a_job_whose_controller_still_runs_is_refused(cli, work: Path, uri: str) -> None:
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time(), "ray": None}
    recorded_job(work, uri, "live-1", "running", controller=me, ckpt=True)
    assert_one_line_error(cli("submit", "+resume=live-1"), "resume: live-1 is still running: its controller answers")


def test_an_interrupted_job_without_its_checkpoint_is_refused(cli, work: Path, uri: str) -> None:
    recorded_job(work, uri, "gone-1", "interrupted", ckpt=False)
    assert_one_line_error(cli("submit", "+resume=gone-1"), "resume: gone-1 has no checkpoint to continue from")


def test_an_override_that_would_change_the_job_is_refused(cli, work: Path, uri: str) -> None:
    recorded_job(work, uri, "int-1", "interrupted", ckpt=True)
    assert_one_line_error(cli("submit", "+resume=int-1", "model=llama-2m"), "`model=llama-2m` would change the job")
