"""A job grows by checkpoint-restart (real Ray, DeepSpeed ZeRO-2, MLflow) on a pool of 2 CPU slots.

A reference job holds both slots; the job that may grow (1 rank, max 2) waits, starts on one slot when the
reference ends, and, with nothing left waiting and its window ratio above its η, is grown to 2 ranks: its ranks
checkpoint, the checkpoint is converted with DeepSpeed's `ds_to_universal` and loaded at the new world size. The
global batch stays 16 sequences per optimizer step (1 rank × 2 micro-steps, then 2 ranks × 1), so the grown job
follows the reference's validation losses: the same data, weights, optimizer and LR schedule state, up to the
order of float sums.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import ray

from launch.submit import plan
from orchestrator.config.compose import compose_job
from orchestrator.controller.actor import controller_handle

COMMON = [
    "+experiment=debug",
    "probe=off",
    "telemetry=off",
    "stop=shadow",  # both run to their budget: the rule decides nothing here, the scheduler does
    "deepspeed=zero2",
    "train.max_tokens=81920",  # 80 optimizer steps of 1,024 tokens
]


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("resize") / "cpr_runs"
    ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        controller = controller_handle("cpr-resize-test", detached=False)
        reference, _ = plan(compose_job([*COMMON, "name=reference", "cluster.num_workers=2", f"runs_dir={runs}"]))
        grower, _ = plan(
            compose_job(
                [
                    *COMMON,
                    "name=grower",
                    "cluster.num_workers=1",
                    "cluster.max_workers=2",
                    "train.grad_accum=2",
                    "cluster.resize_cooldown_s=600",
                    f"runs_dir={runs}",
                ]
            )
        )
        reference.send(controller)
        time.sleep(1.0)
        grower.send(controller)
        states, result = set(), {}
        deadline = time.monotonic() + 600
        while len(result) < 2 and time.monotonic() < deadline:
            states.add(ray.get(controller.view.remote(grower.job_id))["state"])
            for sub in (reference, grower):
                if sub.job_id not in result:
                    done = ray.get(controller.wait.remote(sub.job_id, 0.5))
                    if done is not None:
                        result[sub.job_id] = done
        yield {"runs": runs, "reference": reference, "grower": grower, "result": result, "states": states}
    finally:
        ray.shutdown()


def test_the_job_grows_once_nothing_waits_and_its_ratio_pays(grown: dict) -> None:
    grower = grown["grower"].job_id
    done = grown["result"][grower]
    assert done["state"] == "finished", done["error"]
    s = done["summary"]
    assert s["reason"] == "budget" and s["step"] == 80
    log = [json.loads(x) for x in (grown["runs"] / "scheduler" / "decisions.jsonl").read_text().splitlines()]
    mine = [(d["action"], d["from_slots"], d["to_slots"]) for d in log if d["job_id"] == grower]
    assert mine == [("start", 0, 1), ("resize", 1, 2), ("stop", 2, 0)]
    resize = next(d for d in log if d["job_id"] == grower and d["action"] == "resize")
    assert resize["ratio"] > resize["eta"] and resize["reason"].startswith("grows")
    # it waited while the reference held the pool, and went through a restart
    assert {"queued", "restarting", "running"} <= grown["states"]
    (restart,) = s["restarts"]
    assert (restart["from_workers"], restart["to_workers"]) == (1, 2) and 0 < restart["step"] < 80
    assert restart["seconds"] > 0
    assert sorted((w["rank"], w["world_size"]) for w in s["workers"]) == [(0, 2), (1, 2)]
    # ZeRO-2 shards by world size: the restart went through a universal checkpoint
    ckpt_dir = Path(s["checkpoint"]).parent
    assert (ckpt_dir / "universal" / f"step{restart['step']}").is_dir()


def test_the_grown_job_follows_the_reference_losses(grown: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{grown['runs'] / 'mlflow.db'}")

    def val_losses(sub) -> dict[int, float]:
        run_id = grown["result"][sub.job_id]["run_id"]
        return {m.step: m.value for m in client.get_metric_history(run_id, "val/loss")}

    ref, mine = val_losses(grown["reference"]), val_losses(grown["grower"])
    assert sorted(ref) == sorted(mine) == list(range(10, 81, 10))
    worst = max(abs(mine[k] - ref[k]) / ref[k] for k in ref)
    print(f"grown vs reference: largest relative val-loss difference {worst:.2e} over {len(ref)} checks")
    assert worst < 1e-3, f"largest relative difference {worst:.2e}"
    assert ref[80] < ref[10]  # it learned


def test_the_slots_are_on_the_run_and_in_the_job_log(grown: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{grown['runs'] / 'mlflow.db'}")
    run_id = grown["result"][grown["grower"].job_id]["run_id"]
    history = sorted(client.get_metric_history(run_id, "scheduler/slots"), key=lambda m: (m.step, m.timestamp))
    assert [m.value for m in history] == [1.0, 2.0, 0.0]
    schedule = grown["runs"] / "jobs" / grown["grower"].job_id / "schedule.jsonl"
    assert [json.loads(x)["action"] for x in schedule.read_text().splitlines()] == ["start", "resize", "stop"]


@pytest.fixture(scope="module")
def preempted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A low-priority job holds the pool; a high-priority one arrives, pauses it, runs, and hands the slots back."""
    runs = tmp_path_factory.mktemp("preempt") / "cpr_runs"
    ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        controller = controller_handle("cpr-preempt-test", detached=False)
        both = [*COMMON, "cluster.num_workers=2", f"runs_dir={runs}"]
        low, _ = plan(compose_job([*both, "name=low", "priority=1"]))
        high, _ = plan(compose_job([*both, "name=high", "priority=9", "train.max_tokens=40960"]))
        low.send(controller)
        deadline = time.monotonic() + 300
        while ray.get(controller.view.remote(low.job_id))["step"] < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        high.send(controller)
        states, result = set(), {}
        while len(result) < 2 and time.monotonic() < deadline + 300:
            states.add(ray.get(controller.view.remote(low.job_id))["state"])
            for sub in (low, high):
                if sub.job_id not in result:
                    done = ray.get(controller.wait.remote(sub.job_id, 0.5))
                    if done is not None:
                        result[sub.job_id] = done
        yield {"runs": runs, "low": low, "high": high, "result": result, "states": states}
    finally:
        ray.shutdown()


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
