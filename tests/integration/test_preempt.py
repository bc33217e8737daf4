"""Preemption by checkpoint-restart (real Ray, DeepSpeed ZeRO-2, MLflow) on a pool of 2 CPU slots: a running
low-priority job is paused for a high-priority one (its ranks checkpoint and leave), then resumes from its
checkpoint at the same world size and finishes its budget with every check made."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import ray

from orchestrator.config.compose import compose_job
from orchestrator.submission import plan_of, prepare
from tests.integration.cluster import SHORT_JOB, local_pool, wait_all


@pytest.fixture(scope="module")
def preempted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A low-priority job holds the pool; a high-priority one arrives, pauses it, runs, and hands the slots back."""
    runs = tmp_path_factory.mktemp("preempt") / "cpr_runs"
    with local_pool("cpr-preempt-test") as controller:
        both = [*SHORT_JOB, "cluster.num_workers=2", f"runs_dir={runs}"]
        low = prepare(plan_of(compose_job([*both, "name=low", "priority=1"]))).submission
        high = prepare(plan_of(compose_job([*both, "name=high", "priority=9", "train.max_tokens=40960"]))).submission
        low.send(controller)
        deadline = time.monotonic() + 300
        while ray.get(controller.view.remote(low.job_id))["step"] < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        high.send(controller)
        result, states = wait_all(controller, [low.job_id, high.job_id], states_of=low.job_id)
        yield {"runs": runs, "low": low, "high": high, "result": result, "states": states}


def test_a_higher_priority_job_pauses_a_running_one_which_resumes_from_its_checkpoint(preempted: dict) -> None:
    low, high = preempted["low"].job_id, preempted["high"].job_id
    log = [json.loads(x) for x in (preempted["runs"] / "scheduler" / "decisions.jsonl").read_text().splitlines()]
    moves = [(d["action"], d["job_id"], d["to_slots"]) for d in log if d["action"] != "idle"]
    assert moves == [
        ("start", low, 2),
        ("pause", low, 0),
        ("start", high, 2),
        ("stop", high, 0),
        ("start", low, 2),
        ("stop", low, 0),
    ]
    pause = next(d for d in log if d["action"] == "pause")
    assert "priority 9 > 1" in pause["reason"]
    assert "paused" in preempted["states"]
    s = preempted["result"][low]["summary"]
    assert preempted["result"][low]["state"] == "finished" and s["reason"] == "budget" and s["step"] == 80
    (pause_restart,) = s["restarts"]
    assert pause_restart["to_workers"] == 0 and 20 <= pause_restart["step"] < 80
    # the same world size on both sides: the plain ZeRO-2 checkpoint, no universal conversion
    assert not (Path(s["checkpoint"]).parent / "universal").exists()
    assert preempted["result"][high]["summary"]["reason"] == "budget"
    # every check of the paused job was made, before and after its pause
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{preempted['runs'] / 'mlflow.db'}")
    steps = sorted(m.step for m in client.get_metric_history(s["run_id"], "val/loss"))
    assert steps == list(range(10, 81, 10))
