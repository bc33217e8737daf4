"""`cpr submit data.selection=MANIFEST` end to end (real Ray, 2 DeepSpeed ranks, SQLite MLflow): a short debug job
trains on the kept windows of a manifest made here for its corpus, and its run records which selection it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cpr, made_manifest

pytestmark = pytest.mark.integration

JOB = ("+experiment=debug", "stop=shadow", "probe=off", "train.max_tokens=20480", "telemetry=off")  # 10 steps


def test_a_job_trains_on_a_selection_and_its_run_says_which(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from orchestrator.config.compose import compose_job
    from orchestrator.data.prepare import prepare_data
    from orchestrator.select.windows import cut_windows

    job = compose_job(list(JOB))
    prepared = prepare_data(job.data)  # the stdlib corpus the job will use (cached: the job reuses it)
    windows = cut_windows(prepared.tokens("train"), prepared.eos_id, job.train.seq_len)
    rng = np.random.default_rng(0)
    scores = rng.random(len(windows))
    manifest = made_manifest(
        windows,
        {
            "fingerprint": prepared.fingerprint,
            "source": prepared.source,
            "n_train_tokens": prepared.n_train_tokens,
            "tokenizer_sha256": None,
        },
        scores < 0.3,
        seq_len=job.train.seq_len,
        scores=scores,
        fraction=0.3,
        base={"folder": "none", "job_id": None, "step": None},
    )
    path = manifest.write(tmp_path / "selection.json")

    done = cpr("submit", *JOB, f"data.selection={path}", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"selection {manifest.id}" in done.stdout
    job_id = next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("job id:"))
    run_id = next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("MLflow run"))
    run = MlflowClient(f"sqlite:///{tmp_path / 'cpr_runs' / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["cpr.state"] == "finished"
    params = run.data.params
    assert params["data.selection"] == str(path) and params["data.selection_id"] == manifest.id
    kept = int(params["data.selection_tokens"])
    assert manifest.kept_windows.tokens <= kept < prepared.n_train_tokens
    saved = json.loads((tmp_path / "cpr_runs" / "jobs" / job_id / "job.json").read_text())["prepared"]
    assert saved["selection"] == manifest.id and saved["n_train_tokens"] == kept
    assert Path(saved["train_bin"]) == prepared.cache_dir / "selections" / f"{manifest.id}.bin"
    assert saved["val_bin"] == str(prepared.val_bin)  # Ψ on the whole held-out split
