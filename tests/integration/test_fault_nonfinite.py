"""Non-finite training (real Ray, DeepSpeed ZeRO-2, MLflow). The fault is injected through the trainer's switch
`CPR_INJECT_NONFINITE_AT_STEP`: from step 25 each rank's loss is multiplied by NaN before its backward pass, so NaN
gradients really go through DeepSpeed's reduction to its optimizer. (A real divergence could not be provoked
reliably: AdamW at the largest allowed lr, 10, without clipping, took the loss to 1,400 but not past float32.)
ZeRO-2's optimizer finds the gradients non-finite and skips every step, so the weights and Ψ stay finite while
all the compute is lost: the job is stopped with reason `diverged` after `stop.max_nonfinite` non-finite
training-loss reports, and keeps its last checkpoint of a finite state; nothing after it is saved."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from orchestrator.config.compose import compose_job
from orchestrator.submission import plan_of, prepare
from orchestrator.worker.trainer import INJECT_NONFINITE
from tests.integration.cluster import SHORT_JOB, local_pool, wait_all

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def diverged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("fault-nonfinite") / "cpr_runs"
    with local_pool("cpr-fault-nonfinite", env={INJECT_NONFINITE: "25"}) as controller:
        job = compose_job(
            [
                *SHORT_JOB,
                "name=diverges",
                "stop=default",
                "stop.max_nonfinite=2",
                "cluster.num_workers=2",
                "train.checkpoint_interval=10",
                f"runs_dir={runs}",
            ]
        )
        sub = prepare(plan_of(job)).submission
        sub.send(controller)
        result, _ = wait_all(controller, [sub.job_id])
        yield {"runs": runs, "sub": sub, "result": result[sub.job_id]}


def test_nonfinite_training_stops_as_diverged(diverged: dict) -> None:
    done = diverged["result"]
    assert done["state"] == "stopped", done["error"]
    s = done["summary"]
    assert s["reason"] == "diverged"
    assert s["decision"]["step"] == 30  # the reports at 25 and 30 were NaN (stop.max_nonfinite=2)
    assert s["diverged_state_not_saved"] is True
    print(f"\ndiverged: stopped at step {s['step']}, kept {s['checkpoint']}")


def test_the_last_finite_checkpoint_is_kept_and_nothing_diverged_is_saved(diverged: dict) -> None:
    s = diverged["result"]["summary"]
    ckpt = Path(s["checkpoint"])
    kept_step = int(ckpt.name.removeprefix("step"))
    assert kept_step == 20  # the last periodic checkpoint before the NaN (step 25)
    saved = sorted(int(p.name.removeprefix("step")) for p in ckpt.parent.glob("step*"))
    assert saved[-1] == kept_step  # no checkpoint past it: the diverged weights were not written
    # its weights are finite, and the losses went NaN after it
    state = torch.load(ckpt / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    assert all(torch.isfinite(t).all() for t in state.values())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{diverged['runs'] / 'mlflow.db'}")
    train = {m.step: m.value for m in client.get_metric_history(s["run_id"], "train/loss")}
    assert all(math.isfinite(train[step]) for step in (5, 10, 15, 20))
    assert not math.isfinite(train[25]) and not math.isfinite(train[30]) and max(train) == 30
