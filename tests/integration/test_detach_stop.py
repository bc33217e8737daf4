"""`detach=true` returns at once with the job id; `cpr status` shows the job; `cpr stop` ends it with reason
`user` after a checkpoint. Runs against a real `ray start --head` on this machine (stopped afterwards)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def cpr(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cpr"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ray_head():
    yield
    subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120)


def status(cwd: Path, job_id: str) -> dict:
    done = cpr("status", "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return next(r for r in map(json.loads, done.stdout.splitlines()) if r["job_id"] == job_id)


def test_detach_then_status_then_user_stop(tmp_path: Path, ray_head) -> None:
    t0 = time.monotonic()
    # A long budget and no stop by the rule (shadow mode): only the user's stop can end it early.
    done = cpr(
        "submit", "+experiment=debug", "detach=true", "stop.enforce=false", "train.max_tokens=50000000", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job_id = next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("job id:"))
    assert "MLflow run id:" in done.stdout
    deadline = time.monotonic() + 240
    while status(tmp_path, job_id)["step"] is None and time.monotonic() < deadline:
        time.sleep(2)  # wait for the first evaluation check
    assert status(tmp_path, job_id)["state"] == "running"
    stopped = cpr("stop", job_id, "--wait", "180", cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    row = status(tmp_path, job_id)
    assert (row["state"], row["decision"], row["reason"]) == ("stopped", "stop", "user"), row
    summary = json.loads((tmp_path / "cpr_runs" / "jobs" / job_id / "summary.json").read_text())
    assert summary["reason"] == "user" and Path(summary["checkpoint"]).is_dir()
    assert summary["budget_fraction_used"] < 0.5
    assert time.monotonic() - t0 < 600
