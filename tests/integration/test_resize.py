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

from orchestrator.config.compose import compose_job
from orchestrator.submission import plan_of, prepare
from tests.integration.cluster import SHORT_JOB, local_pool, wait_all


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("resize") / "cpr_runs"
    with local_pool("cpr-resize-test") as controller:
        reference = prepare(
            plan_of(compose_job([*SHORT_JOB, "name=reference", "cluster.num_workers=2", f"runs_dir={runs}"]))
        ).submission
        grower = prepare(
            plan_of(
                compose_job(
                    [
                        *SHORT_JOB,
                        "name=grower",
                        "cluster.num_workers=1",
                        "cluster.max_workers=2",
                        "train.grad_accum=2",
                        "cluster.resize_cooldown_s=600",
                        f"runs_dir={runs}",
                    ]
                )
            )
        ).submission
        reference.send(controller)
        time.sleep(1.0)
        grower.send(controller)
        result, states = wait_all(controller, [reference.job_id, grower.job_id], states_of=grower.job_id)
        yield {"runs": runs, "reference": reference, "grower": grower, "result": result, "states": states}


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
    # and the same log, its STOP included, is an artifact of the run
    logged = Path(client.download_artifacts(run_id, "schedule.jsonl", str(grown["runs"].parent)))
    assert logged.read_text() == schedule.read_text()
