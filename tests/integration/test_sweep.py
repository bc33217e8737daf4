"""`cpr submit -m …` (Hydra multirun through cpr's launcher plugin) queues every job of a sweep on the cluster's
controller and returns; the jobs then run from the queue on the shared pool. Against a real `ray start --head`
(stopped afterwards). Bad sweeps are refused whole: one line, exit 2, nothing queued."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import assert_one_line_error

BIN = Path(sys.executable).parent
SMALL = ["+experiment=debug", "train.max_tokens=20480", "probe=off", "telemetry=off"]


def cpr(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cpr"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ray_head():
    yield
    subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120)


def test_a_sweep_is_queued_and_runs_from_the_queue(tmp_path: Path, ray_head) -> None:
    done = cpr("submit", "-m", *SMALL, "train.lr=1e-3,3e-3", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    queued = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("queued ")]
    assert len(queued) == 2 and queued[0].startswith("debug-0-") and queued[1].startswith("debug-1-")
    rows: dict[str, dict] = {}
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        listed = cpr("status", "--json", cwd=tmp_path)
        rows = {r["job_id"]: r for r in map(json.loads, listed.stdout.splitlines())}
        if all(rows.get(j, {}).get("state") == "finished" for j in queued):
            break
        time.sleep(3)
    assert [rows[j]["state"] for j in queued] == ["finished", "finished"], rows
    # every run tagged with the sweep; the last job to end logged the comparison next to its own report
    (sweep,) = [line.split()[1].rstrip(":") for line in done.stdout.splitlines() if line.startswith("sweep ")]
    client = MlflowClient(f"sqlite:///{tmp_path / 'cpr_runs' / 'mlflow.db'}")
    runs = {
        r.data.tags["cpr.job_id"]: r
        for r in client.search_runs(
            [client.get_experiment_by_name("cpr").experiment_id], f"tags.`cpr.sweep` = '{sweep}'"
        )
    }
    assert set(runs) == set(queued)
    while time.monotonic() < deadline and any(
        client.get_run(r.info.run_id).info.status != "FINISHED" for r in runs.values()
    ):
        time.sleep(1)  # the state turns `finished` before the run's last writes (its reports) are in
    listed = {j: {a.path for a in client.list_artifacts(r.info.run_id, "report")} for j, r in runs.items()}
    assert all("report/report.html" in paths for paths in listed.values()), listed
    last = {a.path for a in client.list_artifacts(runs[queued[1]].info.run_id, "sweep_report")}
    assert last == {"sweep_report/report.html", "sweep_report/sweep_psi_gamma.png"}
    assert not client.list_artifacts(runs[queued[0]].info.run_id, "sweep_report")
    log = [json.loads(x) for x in (tmp_path / "cpr_runs" / "scheduler" / "decisions.jsonl").read_text().splitlines()]
    moves = [(d["action"], d["job_id"]) for d in log if d["action"] != "idle"]
    # one pool of 2 CPUs, 2 slots per job: the second starts on the slots the first gives back
    assert moves == [("start", queued[0]), ("stop", queued[0]), ("start", queued[1]), ("stop", queued[1])]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.lr=range(0,65)"], "--multirun: the sweep expands to 65 jobs"),
        (["train.lr=1e-3,2e-3", "priority=12"], "priority: input should be less than or equal to 9, got 12"),
        (["train.lr=1e-3,2e-3", "name=same"], "name: the sweep gives several jobs the name 'same'"),
        (["train.lr=1e-3,2e-3", "cluster.num_workers=64", "train.max_tokens=4194304"], "cluster.num_workers: 64"),
    ],
)
def test_bad_sweeps_queue_nothing(cli, tmp_path: Path, monkeypatch, overrides: list[str], needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("submit", "-m", *SMALL, *overrides)
    assert_one_line_error(result, needle)
    assert not (tmp_path / "cpr_runs" / "jobs").exists()
    head = subprocess.run([str(BIN / "ray"), "status"], capture_output=True, timeout=60)
    assert head.returncode != 0  # and no Ray head was left behind
