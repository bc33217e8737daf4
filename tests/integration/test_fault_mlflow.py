"""MLflow unreachable for 60 s mid-run: a real `mlflow server` on loopback, stopped and started again (real Ray,
DeepSpeed ZeRO-2). Training does not wait for it; the controller's run writer keeps every write in its journal on
local disk and sends them in order once the server is back; the run ends with every metric point present once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from orchestrator.config.compose import compose_job
from orchestrator.submission import plan_of, prepare
from orchestrator.worker.trainer import free_port
from tests.integration.cluster import SHORT_JOB, local_pool, wait_all
from tests.integration.faults import duplicated_points, metric_steps, wait_for_step

pytestmark = pytest.mark.slow

OUTAGE_S = 60.0
STEPS = 300


def start_server(root: Path, port: int) -> subprocess.Popen:
    cmd = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
        *("--artifacts-destination", str(root / "artifacts")),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    # In the test's folder: a server started in the checkout once left runs in its ./mlruns, which broke the next one.
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "ab"))  # noqa: SIM115
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("fault-mlflow")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(root, port)
    try:
        with local_pool("cpr-fault-mlflow") as controller:
            job = compose_job(
                [
                    *SHORT_JOB,
                    "name=outage",
                    "cluster.num_workers=2",
                    f"train.max_tokens={STEPS * 1024}",
                    f"tracking.uri={uri}",
                    f"runs_dir={root / 'cpr_runs'}",
                ]
            )
            sub = prepare(plan_of(job)).submission
            run_id = sub.send(controller)["run_id"]
            wait_for_step(controller, sub.job_id, 20)
            server.terminate()
            server.wait(30)
            t_down = time.monotonic()
            down_step = wait_for_step(controller, sub.job_id, 0)
            journal = Path(sub.state_dir) / "mlflow_journal.jsonl"
            while time.monotonic() - t_down < OUTAGE_S:
                time.sleep(1.0)
            up_step = wait_for_step(controller, sub.job_id, 0)
            owed = [json.loads(line) for line in journal.read_text().splitlines()]
            server = start_server(root, port)
            t_up = time.monotonic()
            client = MlflowClient(uri)
            # recovery: until the points of the last report made during the outage are in the store
            last_owed = max((p[3] for r in owed if r["op"] == "metrics" for p in r["payload"]), default=0)
            # (the outage may have begun before the writer's first batch: then no point is in the store yet)
            while max(metric_steps(client, run_id, "train/loss"), default=0) < min(last_owed, up_step):
                time.sleep(0.5)
            flushed_s = time.monotonic() - t_up
            result, _ = wait_all(controller, [sub.job_id])
            # the controller's writer finishes the run (the job may have ended during the outage); as `cpr submit`
            # does before local Ray goes down with the controller in it
            owed_at_end = ray.get(controller.drain.remote(sub.job_id, 120.0))
        yield {
            "client": client,
            "sub": sub,
            "run_id": run_id,
            "result": result[sub.job_id],
            "down_step": down_step,
            "up_step": up_step,
            "owed": owed,
            "flushed_s": flushed_s,
            "owed_at_end": owed_at_end,
        }
    finally:
        server.terminate()
        server.wait(30)


def test_training_goes_on_while_mlflow_is_down(outage: dict) -> None:
    done = outage["result"]
    assert done["state"] == "finished", done["error"]
    assert done["summary"]["step"] == STEPS
    assert outage["up_step"] - outage["down_step"] >= 20  # steps made during the outage
    # what it could not send was on disk, in order, metric points and tags alike
    seqs = [r["seq"] for r in outage["owed"]]
    assert seqs == sorted(seqs) and len(seqs) > 10
    assert any(r["op"] == "metrics" for r in outage["owed"]) and any(r["op"] == "tags" for r in outage["owed"])
    print(
        f"\nMLflow down {OUTAGE_S:.0f} s over steps {outage['down_step']}–{outage['up_step']}; {len(seqs)} writes "
        f"journaled; flushed {outage['flushed_s']:.1f} s after it came back"
    )


def test_every_metric_point_is_in_the_store_once(outage: dict) -> None:
    client, run_id = outage["client"], outage["run_id"]
    assert outage["owed_at_end"] == 0 and client.get_run(run_id).info.status == "FINISHED"
    assert metric_steps(client, run_id, "train/loss") == list(range(5, STEPS + 1, 5))
    assert metric_steps(client, run_id, "val/loss") == list(range(10, STEPS + 1, 10))
    assert metric_steps(client, run_id, "cpr/psi") == list(range(10, STEPS + 1, 10))
    assert duplicated_points(client, run_id) == {}
    # every metric point the journal held while the server was down is in the store
    for record in outage["owed"]:
        if record["op"] == "metrics":
            for key, value, _, step in record["payload"]:
                points = [m for m in client.get_metric_history(run_id, key) if m.step == step]
                assert len(points) == 1 and (points[0].value == value or value != value), (key, step)
    ack = json.loads((Path(outage["sub"].state_dir) / "mlflow_ack.json").read_text())
    assert ack["seq"] >= max(r["seq"] for r in outage["owed"])
    assert (Path(outage["sub"].state_dir) / "mlflow_journal.jsonl").read_text() == ""  # drained
