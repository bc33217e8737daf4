"""The controller actor's process SIGKILLed mid-run (real Ray, DeepSpeed ZeRO-2, MLflow): Ray restarts it, it
restores the job from its store (tracker, rule state, ledger, published blueprints, the queue), adopts the running
gang, and takes the reports the ranks retried meanwhile. The job finishes as if nothing happened: every step and
check logged once, each blueprint version and each scheduler decision issued once."""

from __future__ import annotations

import time

import pytest
import ray
from mlflow.tracking import MlflowClient

from orchestrator.config.compose import compose_job
from orchestrator.submission import plan_of, prepare
from tests.integration.cluster import SHORT_JOB, local_pool, wait_all
from tests.integration.faults import duplicated_points, kill_process, metric_steps, read_jsonl, wait_for_step

pytestmark = pytest.mark.slow

TOKENS = 81920  # SHORT_JOB's budget: 80 optimizer steps of 1,024 tokens


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("fault-controller") / "cpr_runs"
    # The first job's notifications go to a command that appends each event to a file: the outbox must keep the
    # restarted controller from sending one twice.
    hook = runs.parent / "hook.sh"
    hook.write_text(f'#!/bin/sh\ncat >> "{runs.parent / "events.jsonl"}"\necho >> "{runs.parent / "events.jsonl"}"\n')
    hook.chmod(0o755)
    notify = [f"notify.command={hook}", "notify.on=[blueprint,stop]"]
    with local_pool("cpr-fault-controller") as controller:
        both = [*SHORT_JOB, "cluster.num_workers=1", "train.grad_accum=2", f"runs_dir={runs}"]
        # a running job with blueprints at 25 %, 50 % and the end, and a queued one behind it (1 slot each, 2 slots:
        # the second runs too; a third waits in the queue while the controller is down). The second trains twice as
        # long, so it is still running at the kill however far it got ahead while the first waited on its
        # blueprints' fits: the third cannot have started (a gang the controller dies starting is restarted, not
        # adopted, and that is not this test's case).
        probe = ["probe.enabled=true", "probe.checkpoints=[0.25,0.5,1.0]", "probe.interval=1000", "probe.batches=2"]
        first = prepare(plan_of(compose_job([*both, *probe, *notify, "name=first"]))).submission
        second = prepare(plan_of(compose_job([*both, f"train.max_tokens={2 * TOKENS}", "name=second"]))).submission
        third = prepare(plan_of(compose_job([*both, "name=third"]))).submission
        for sub in (first, second, third):
            sub.send(controller)
        wait_for_step(controller, second.job_id, 1)  # its gang started, not starting
        at = wait_for_step(controller, first.job_id, 30)  # v1 (step 20) is out, v2 (step 40) is not
        pid = kill_process("ray::Controller")
        t_kill = time.monotonic()
        ray.get(controller.view.remote(first.job_id))  # answered by the restarted actor
        back_s = time.monotonic() - t_kill
        ids = [first.job_id, second.job_id, third.job_id]
        result, _ = wait_all(controller, ids)
        steps = {first.job_id: 80, second.job_id: 160, third.job_id: 80}
        yield {"runs": runs, "ids": ids, "result": result, "at": at, "pid": pid, "back_s": back_s, "steps": steps}


def test_the_jobs_finish_after_a_controller_restart(restarted: dict) -> None:
    for job_id in restarted["ids"]:
        done = restarted["result"][job_id]
        assert done["state"] == "finished", done["error"]
        assert done["summary"]["reason"] == "budget" and done["summary"]["step"] == restarted["steps"][job_id]
        assert done["summary"]["restarts"] == []  # the gangs were adopted, not restarted
    print(f"\ncontroller SIGKILLed at step ≥ {restarted['at']}; answering again after {restarted['back_s']:.1f} s")


def test_every_step_and_check_is_logged_once(restarted: dict) -> None:
    client = MlflowClient(f"sqlite:///{restarted['runs'] / 'mlflow.db'}")
    for job_id in restarted["ids"]:
        run_id = restarted["result"][job_id]["run_id"]
        last = restarted["steps"][job_id]
        assert metric_steps(client, run_id, "train/loss") == list(range(5, last + 1, 5)), job_id
        assert metric_steps(client, run_id, "val/loss") == list(range(10, last + 1, 10)), job_id
        assert duplicated_points(client, run_id) == {}, job_id
        assert client.get_run(run_id).info.status == "FINISHED"
        decisions = read_jsonl(restarted["runs"] / "jobs" / job_id / "decisions.jsonl")
        checks = [d["check"] for d in decisions if d["action"] == "continue"]
        assert checks == list(range(1, len(checks) + 1)), job_id
        assert [d["action"] for d in decisions].count("stop") == 1, job_id


def test_each_blueprint_version_and_scheduler_decision_is_issued_once(restarted: dict) -> None:
    first = restarted["ids"][0]
    published = read_jsonl(restarted["runs"] / "jobs" / first / "blueprints.jsonl")
    assert [(b["version"], b["checkpoint"]) for b in published] == [(1, "0.25"), (2, "0.5"), (3, "1")]
    assert [b["version"] for b in restarted["result"][first]["summary"]["blueprints"]] == [1, 2, 3]
    log = read_jsonl(restarted["runs"] / "scheduler" / "decisions.jsonl")
    moves = [(d["action"], d["job_id"]) for d in log if d["action"] != "idle"]
    for job_id in restarted["ids"]:
        assert [a for a, j in moves if j == job_id] == ["start", "stop"], job_id


def test_each_notification_is_sent_once_across_the_restart(restarted: dict) -> None:
    first = restarted["ids"][0]
    sent = [e["id"] for e in read_jsonl(restarted["runs"].parent / "events.jsonl")]
    assert sorted(sent) == sorted({*sent}), sent  # none twice
    assert sent == [f"{first}:blueprint:v1", f"{first}:blueprint:v2", f"{first}:blueprint:v3", f"{first}:stop:0"]
