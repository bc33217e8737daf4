"""A killed client never leaves a job `running`: an attached `cpr submit` (real Ray, 2 DeepSpeed ranks, SQLite
MLflow in a temp dir) that gets SIGTERM checkpoints, records `interrupted` and exits 143 within its grace period,
and `cpr submit +resume=JOB` continues it from that checkpoint to its budget in the same run; one that is SIGKILLed
shows as `lost` in `cpr status`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import CPR, cpr

# No probe, no stop by the rule (shadow mode): 1,024 steps of 1,024 tokens, checked every 10 steps. Long enough
# that the signal, sent a `cpr status` after the first check, lands mid-run (CI's 2 cores train 96 steps in 3 s).
STEPS = 1024
TINY = ("+experiment=debug", "probe.enabled=false", "stop.enforce=false", f"train.max_tokens={STEPS * 1024}")
GRACE_S = 25.0


def status(work: Path) -> list[dict]:
    done = cpr("status", "--json", cwd=work, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """The tests' folder; afterwards every process still working in it is ended: a client a failed test left
    running, and the dashboard and runtime-env agents of a SIGKILLed client's local Ray (Ray's own, orphaned; they
    ignore SIGTERM)."""
    yield tmp_path
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and p.cwd() == str(tmp_path):
                p.kill()


def start_after_first_check(work: Path, *overrides: str) -> tuple[subprocess.Popen[str], dict]:
    """An attached `cpr submit` as a subprocess, returned once its job has had its first evaluation check."""
    with (work / "client.log").open("w") as log:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen([CPR, "submit", *overrides], cwd=work, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, (work / "client.log").read_text()[-3000:]
        # Its job folder is made after its run: the store's tables are there (two processes must not make them).
        rows = status(work) if list((work / "cpr_runs").glob("jobs/*/job.json")) else []
        if rows and rows[0]["step"] is not None:
            return proc, rows[0]
        time.sleep(2)
    proc.kill()
    raise AssertionError("no evaluation check within 300 s")


def test_sigterm_interrupts_with_a_checkpoint_and_resume_continues_it_to_its_budget(work: Path) -> None:
    from mlflow.tracking import MlflowClient

    tmp_path = work
    proc, row = start_after_first_check(tmp_path, *TINY)
    job_id = row["job_id"]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=GRACE_S + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the client did not exit after SIGTERM: " + (tmp_path / "client.log").read_text()[-2000:])
    out = (tmp_path / "client.log").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert time.monotonic() - t0 < GRACE_S + 5, out[-3000:]  # its grace period, plus Python's and Ray's exit
    assert "INTERRUPTED" in out and f"+resume={job_id}" in out

    folder = tmp_path / "cpr_runs" / "jobs" / job_id
    handle = json.loads((folder / "handle.json").read_text())
    assert handle["state"] == "interrupted" and handle["interrupted_by"] == "SIGTERM"
    ckpt_step = handle["checkpoint"]["step"]
    assert Path(handle["checkpoint"]["path"]).is_dir() and 10 <= ckpt_step < STEPS
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["reason"] == "interrupted" and summary["interrupted_by"] == "SIGTERM"
    client = MlflowClient(f"sqlite:///{tmp_path / 'cpr_runs' / 'mlflow.db'}")
    run = client.get_run(row["run_id"])
    tags = run.data.tags
    assert (tags["cpr.state"], tags["cpr.reason"], tags["cpr.interrupted_by"]) == (
        "interrupted",
        "interrupted",
        "SIGTERM",
    )
    assert run.info.status == "KILLED"
    assert next(r for r in status(tmp_path) if r["job_id"] == job_id)["state"] == "interrupted"
    tokens_at_interrupt = run.data.metrics["cpr/gamma/tokens"]

    done = cpr("submit", f"+resume={job_id}", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"from step {ckpt_step}" in done.stdout and "FINISHED" in done.stdout
    run = client.get_run(row["run_id"])  # the same run, continued
    assert run.data.tags["cpr.state"] == "finished" and run.info.status == "FINISHED"
    assert run.data.tags["cpr.resumed"].startswith(f"from step {ckpt_step}")
    steps = [m.step for m in client.get_metric_history(row["run_id"], "train/loss")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # steps continue: none from 0 again
    assert max(steps) == STEPS and min(s for s in steps if s > ckpt_step) <= ckpt_step + 5
    # Γ went on from what was used before the interrupt (tokens of the steps redone after the checkpoint aside).
    assert run.data.metrics["cpr/gamma/tokens"] == STEPS * 1024 > tokens_at_interrupt
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["reason"] == "budget" and summary["restarts"][-1]["reason"] == "resumed (interrupted (SIGTERM))"
    decisions = [json.loads(line) for line in (folder / "decisions.jsonl").read_text().splitlines()]
    checks = [d["check"] for d in decisions if d["reason"] is None]
    assert checks == list(range(1, len(checks) + 1)) and len(checks) >= 8  # the rule's checks go on, not from 1

    again = cpr("submit", f"+resume={job_id}", cwd=tmp_path, timeout=120)
    assert again.returncode == 2 and "already ended (finished)" in again.stderr


def test_a_sigkilled_client_leaves_its_job_lost_never_running(work: Path) -> None:
    tmp_path = work
    proc, row = start_after_first_check(tmp_path, *TINY)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60  # its local Ray and the controller in it go with the client
    while time.monotonic() < deadline:
        seen = next(r for r in status(tmp_path) if r["job_id"] == row["job_id"])
        if seen["state"] == "lost":
            break
        time.sleep(2)
    assert seen["state"] == "lost", seen
    assert seen["last_report_t"] is not None and time.time() - seen["last_report_t"] < 300
    table = cpr("status", cwd=tmp_path, timeout=120)
    assert "lost (last report" in table.stdout and "running" not in table.stdout, table.stdout
    refused = cpr("stop", row["job_id"], cwd=tmp_path, timeout=120)
    assert refused.returncode == 2 and "is lost" in refused.stderr
