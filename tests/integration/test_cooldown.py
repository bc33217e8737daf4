"""A STOP into a learning-rate cool-down, for real (Ray, two DeepSpeed ZeRO-2 ranks, MLflow in a temp dir), with the
controller actor SIGKILLed while the job cools: the rule's STOP starts the decay, Ray restarts the controller, which
restores the job in its `cooling` state and adopts its ranks; they decay on where they were and end at the cool-down's
last step. The learning rate each optimizer step used (`train/lr`, reported every step) is checked against the WSD
schedule's, before, through and after the restart; the blueprint at the decision and the one after the cool-down are
both published. Γ is tokens and telemetry is off, so the STOP's step does not move with the machine's speed."""

from __future__ import annotations

import time

import pytest
import ray
from mlflow.tracking import MlflowClient

from orchestrator.config.compose import compose_job
from orchestrator.core.lr_schedule import decay_factor
from orchestrator.submission import plan_of, prepare
from tests.integration.cluster import local_pool, wait_all
from tests.integration.faults import duplicated_points, kill_process, read_jsonl

pytestmark = pytest.mark.slow

COOLDOWN = 120  # steps: 12 checks, long enough to kill the controller in the middle of it
LR, FLOOR = 3e-3, 0.1
JOB = [
    "+experiment=debug",
    "telemetry=off",
    "stop.resource=tokens",
    "deepspeed=zero2",
    "train.report_interval=1",  # the LR of every step reaches MLflow
    f"train.lr={LR}",
    f"train.min_lr_fraction={FLOOR}",
    "train.cooldown_shape=linear",
    f"train.cooldown_steps={COOLDOWN}",
    "probe.checkpoints=[1.0]",  # no blueprint before the STOP: the decision's and the end's are the only ones
    "probe.interval=1000",
]


@pytest.fixture(scope="module")
def cooled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("cooldown") / "cpr_runs"
    with local_pool("cpr-cooldown") as controller:
        sub = prepare(plan_of(compose_job([*JOB, f"runs_dir={runs}", "name=cooled"]))).submission
        sub.send(controller)
        deadline = time.monotonic() + 600
        view = ray.get(controller.view.remote(sub.job_id))
        while view["state"] != "cooling" and time.monotonic() < deadline:
            assert view["state"] not in ("stopped", "finished", "failed"), view
            time.sleep(0.2)
            view = ray.get(controller.view.remote(sub.job_id))
        end = view["cooldown_end"]
        time.sleep(1.0)  # a few steps into the decay
        at = ray.get(controller.view.remote(sub.job_id))["step"]
        kill_process("ray::Controller")
        after = ray.get(controller.view.remote(sub.job_id))  # answered by the restarted actor
        result, _ = wait_all(controller, [sub.job_id])
    done = result[sub.job_id]
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    return {"runs": runs, "job_id": sub.job_id, "done": done, "end": end, "at": at, "after": after, "client": client}


def test_the_rules_stop_cooled_down_to_its_last_step_across_the_restart(cooled: dict) -> None:
    done = cooled["done"]
    s = done["summary"]
    assert done["state"] == "stopped", done["error"]
    assert s["reason"] == "marginal_return" and s["restarts"] == []  # its ranks were adopted, not restarted
    c = s["cooldown"]
    start = c["start_step"]
    assert c["steps"] == COOLDOWN and c["end_step"] == start + COOLDOWN == cooled["end"] == s["step"]
    assert c["done"] and c["cut"] is None and c["decision"]["step"] == start == s["decision"]["step"]
    assert start < cooled["at"] < c["end_step"]  # the controller died while the job cooled
    assert cooled["after"]["state"] == "cooling"  # and came back knowing it
    assert c["psi_gained"] == pytest.approx(c["end"]["psi"] - c["decision"]["psi"])
    assert s["checkpoint"].endswith(f"step{c['end_step']}")
    print(
        f"\nSTOP at step {start} (val loss {c['decision']['val_loss']:.4f}); cooled to step {c['end_step']} "
        f"(val loss {c['end']['val_loss']:.4f}, Ψ {c['psi_gained']:+.4f}); controller killed at step {cooled['at']}"
    )


def test_the_ranks_used_the_wsd_learning_rate_through_the_decay(cooled: dict) -> None:
    client, run_id = cooled["client"], cooled["done"]["run_id"]
    c = cooled["done"]["summary"]["cooldown"]
    start, end = c["start_step"], c["end_step"]
    lr = {m.step: m.value for m in client.get_metric_history(run_id, "train/lr")}
    assert sorted(lr) == list(range(1, end + 1))  # every step once, across the restart
    warmup = compose_job(JOB).train.warmup_steps
    for step in range(1, end + 1):
        k = step - 1  # the optimizer step's 0-based index
        if k < warmup:
            want = LR * (k + 1) / warmup
        elif step <= start:
            want = LR
        else:
            want = LR * decay_factor("linear", (k - start + 1) / COOLDOWN, FLOOR)
        assert lr[step] == pytest.approx(want, rel=1e-6), step
    assert lr[end] == pytest.approx(LR * FLOOR)


def test_its_checks_were_logged_once_and_kept_from_the_rule(cooled: dict) -> None:
    client, run_id, job = cooled["client"], cooled["done"]["run_id"], cooled["job_id"]
    c = cooled["done"]["summary"]["cooldown"]
    assert duplicated_points(client, run_id) == {}
    cooling = {m.step: m.value for m in client.get_metric_history(run_id, "progress/cooling")}
    assert sorted(cooling) == list(range(c["start_step"], c["end_step"] + 1, 10))
    assert cooling[c["end_step"]] == 0.0 and all(v == 1.0 for s, v in cooling.items() if s < c["end_step"])
    ratios = [m.step for m in client.get_metric_history(run_id, "cpr/ratio")]
    assert max(ratios) <= c["start_step"]  # the rule never saw a cool-down check
    gained = client.get_metric_history(run_id, "cpr/cooldown/psi_gained")
    assert [(m.step, m.value) for m in gained] == [(c["end_step"], pytest.approx(c["psi_gained"]))]
    decisions = read_jsonl(cooled["runs"] / "jobs" / job / "decisions.jsonl")
    stops = [d for d in decisions if d["action"] == "stop"]
    assert len(stops) == 1 and stops[0]["cooldown"]["end_step"] == c["end_step"]
    tags = client.get_run(run_id).data.tags
    assert tags["cpr.state"] == "stopped" and tags["cpr.cooldown"].startswith(f"steps {c['start_step']}→")


def test_blueprints_at_the_decision_and_after_the_cool_down(cooled: dict) -> None:
    c = cooled["done"]["summary"]["cooldown"]
    published = read_jsonl(cooled["runs"] / "jobs" / cooled["job_id"] / "blueprints.jsonl")
    assert [(b["version"], b["checkpoint"], b["step"]) for b in published] == [
        (1, "decision", c["start_step"]),
        (2, "stop", c["end_step"]),
    ]
