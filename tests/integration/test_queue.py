"""Two real jobs on one pool of 2 CPU slots (real Ray, DeepSpeed, MLflow): the second waits in the queue, and
the first's STOP by the rule hands it the slots. Every scheduling decision is in the cluster's log, the jobs' own
logs and their MLflow runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import ray

from orchestrator.config.compose import compose_job
from orchestrator.errors import InputError
from orchestrator.submission import plan_of, prepare
from tests.integration.cluster import local_pool, wait_all

COMMON = ["+experiment=debug", "probe=off", "telemetry=off", "cluster.num_workers=2"]


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("queue") / "cpr_runs"
    with local_pool("cpr-queue-test") as controller:
        first = prepare(plan_of(compose_job([*COMMON, "name=first", f"runs_dir={runs}"]))).submission
        second = prepare(
            plan_of(compose_job([*COMMON, "name=second", "train.max_tokens=20480", f"runs_dir={runs}"]))
        ).submission
        first.send(controller)
        time.sleep(1.0)
        second.send(controller)
        third = prepare(plan_of(compose_job([*COMMON, "name=third", f"runs_dir={runs}"]))).submission
        third.send(controller)
        assert ray.get(controller.request_stop.remote(third.job_id))["ok"]  # a user stop while it waits
        duplicate = prepare(plan_of(compose_job([*COMMON, "name=second", f"runs_dir={runs}"]))).submission
        with pytest.raises(InputError) as refused:
            duplicate.send(controller)
        seen_queued: list[str] = []

        def watch() -> None:
            view = ray.get(controller.view.remote(second.job_id))
            if view["state"] == "queued":
                seen_queued.append(view["schedule"])

        result, _ = wait_all(controller, [first.job_id, second.job_id, third.job_id], watch=watch)
        yield {
            "runs": runs,
            "first": first,
            "second": second,
            "third": third,
            "result": result,
            "seen_queued": seen_queued,
            "refused": refused.value,
        }


def test_the_second_job_waits_then_gets_the_slots_the_first_stop_frees(two_jobs: dict) -> None:
    first, second, result = two_jobs["first"], two_jobs["second"], two_jobs["result"]
    assert result[first.job_id]["summary"]["reason"] == "marginal_return"
    assert result[second.job_id]["summary"]["reason"] == "budget"
    assert any(s.startswith("queued: needs 2 CPU slots, 0 of 2 free") for s in two_jobs["seen_queued"])
    log = [json.loads(line) for line in (two_jobs["runs"] / "scheduler" / "decisions.jsonl").read_text().splitlines()]
    third = two_jobs["third"].job_id
    moves = [(d["action"], d["job_id"]) for d in log if d["action"] != "idle" and d["job_id"] != third]
    assert moves == [
        ("start", first.job_id),
        ("stop", first.job_id),
        ("start", second.job_id),
        ("stop", second.job_id),
    ]
    stop_first = next(d for d in log if d["action"] == "stop" and d["job_id"] == first.job_id)
    assert (stop_first["from_slots"], stop_first["to_slots"], stop_first["pool"]) == (2, 0, 2)
    # the figures it ended on: its last window ratio was below its η
    assert stop_first["ratio"] < stop_first["eta"] and "marginal_return" in stop_first["reason"]


def test_each_run_records_its_scheduling(two_jobs: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{two_jobs['runs'] / 'mlflow.db'}")
    second = two_jobs["result"][two_jobs["second"].job_id]
    tags = client.get_run(second["run_id"]).data.tags
    # the scheduler saw its budget STOP first ("stop: halted: budget") or the job's end did ("stop: ended (…)")
    assert tags["cpr.schedule"] in ("stop: halted: budget", "stop: ended (finished: budget)"), tags["cpr.schedule"]
    assert tags["cpr.slots"] == "0"
    own = (Path(two_jobs["second"].state_dir) / "schedule.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in own] == ["start", "stop"]


def test_a_duplicate_name_is_refused_while_the_first_is_live(two_jobs: dict) -> None:
    err = two_jobs["refused"]
    assert err.field == "name" and "second" in err.problem


def test_a_job_stopped_while_queued_ends_without_starting(two_jobs: dict) -> None:
    third = two_jobs["result"][two_jobs["third"].job_id]
    assert third["state"] == "stopped" and third["summary"]["reason"] == "user"
    own = (Path(two_jobs["third"].state_dir) / "schedule.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in own] == ["stop"]
    assert not (two_jobs["runs"] / "checkpoints" / two_jobs["third"].job_id).exists()
