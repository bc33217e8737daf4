"""A training rank SIGKILLed mid-run (real Ray, DeepSpeed ZeRO-2, MLflow, codecarbon): the gang restarts from its
last periodic checkpoint and the job finishes its budget, with every report step and check logged exactly once
and Γ energy equal to what the telemetry log holds, the redone steps' energy counted once, under the new ranks."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.config.compose import compose_job
from orchestrator.submission import plan_of, prepare
from tests.integration.cluster import SHORT_JOB, local_pool, wait_all
from tests.integration.faults import (
    duplicated_points,
    energy_kwh_from_log,
    kill_process,
    metric_steps,
    read_jsonl,
    wait_for_step,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("fault-worker") / "cpr_runs"
    with local_pool("cpr-fault-worker") as controller:
        job = compose_job(
            [
                *SHORT_JOB,
                "telemetry=default",  # codecarbon, for real: the energy of the lost interval is the point
                "name=victim",
                "cluster.num_workers=2",
                "train.checkpoint_interval=20",
                f"runs_dir={runs}",
            ]
        )
        sub = prepare(plan_of(job)).submission
        sub.send(controller)
        at = wait_for_step(controller, sub.job_id, 45)  # past the checkpoint at step 40
        pid = kill_process("ray::TrainWorker")
        t_kill = time.time()
        result, states = wait_all(controller, [sub.job_id], states_of=sub.job_id)
        yield {
            "runs": runs,
            "sub": sub,
            "result": result[sub.job_id],
            "states": states,
            "at": at,
            "pid": pid,
            "t_kill": t_kill,
        }


def test_a_killed_rank_restarts_its_gang_from_the_last_checkpoint(killed: dict) -> None:
    done = killed["result"]
    assert done["state"] == "finished", done["error"]
    s = done["summary"]
    assert s["reason"] == "budget" and s["step"] == 80
    (restart,) = s["restarts"]
    assert restart["reason"].startswith("a rank died")
    # from the last periodic checkpoint (every 20 steps) before the loss: 40, or 60 on a slow poll
    assert restart["resumed_from"] % 20 == 0 and 40 <= restart["resumed_from"] <= restart["step"]
    assert restart["from_workers"] == restart["to_workers"] == 2
    assert 0 < restart["seconds"] < 120
    assert "restarting" in killed["states"]
    print(f"\nrank SIGKILLed at step ≥ {killed['at']}; new gang started {restart['seconds']:.1f} s after the loss")


def test_steps_and_checks_are_logged_once_without_gaps(killed: dict) -> None:
    run_id = killed["result"]["run_id"]
    client = MlflowClient(f"sqlite:///{killed['runs'] / 'mlflow.db'}")
    assert metric_steps(client, run_id, "train/loss") == list(range(5, 81, 5))
    assert metric_steps(client, run_id, "val/loss") == list(range(10, 81, 10))
    assert duplicated_points(client, run_id) == {}
    tags = client.get_run(run_id).data.tags
    assert tags["cpr.restarts"] == "1" and tags["cpr.last_restart"].startswith("a rank died")
    decisions = read_jsonl(killed["runs"] / "jobs" / killed["sub"].job_id / "decisions.jsonl")
    checks = [d["check"] for d in decisions if d["action"] == "continue"]
    assert checks == list(range(1, len(checks) + 1))  # no check repeated or skipped by the restart
    assert len(checks) >= 5


def test_energy_is_what_the_telemetry_log_holds_with_the_redone_steps_counted_once(killed: dict) -> None:
    s = killed["result"]["summary"]
    samples = read_jsonl(killed["runs"] / "jobs" / killed["sub"].job_id / "telemetry.jsonl")
    kwh, sources = energy_kwh_from_log(samples)
    assert s["gamma"]["energy_kwh"] == pytest.approx(kwh, rel=1e-9)
    # both gangs' ranks metered: the steps redone after the checkpoint cost energy again, counted once
    assert any("/rank0-1/" in src for src in sources) and any("/rank0/" in src for src in sources)
    # tokens count progress, not work: the redone steps' token reports carry the same ids and are not counted twice
    assert s["gamma"]["tokens"] == 80 * 1024
