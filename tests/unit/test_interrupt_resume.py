"""The pure parts of interrupted, lost and resumed jobs: the lifecycle's states, what a reader observes, the state
machine's interrupt and resume, the ledger's offline time, the controller's liveness check and the refusals of
`cpr submit +resume`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.controller.events import Ended, Finish, GangReturned, GangStarted, Resumed, StopRequest, Tick
from orchestrator.controller.liveness import observe, reachable
from orchestrator.controller.state import ControllerState
from orchestrator.core import names
from orchestrator.core.decisions import StopReason
from orchestrator.core.ledger import ResourceLedger
from orchestrator.core.lifecycle import ENDED, LOST, JobLifecycle, lost_label, observed_state
from orchestrator.core.resources import ResourceKind
from orchestrator.errors import InputError
from orchestrator.submission.resume import check_overrides, resume_point, resume_refusal, split_resume
from orchestrator.tracking.runs import JobRow
from tests.unit.test_controller_state import T0, check, result, submit, tags


def test_interrupted_is_an_ended_state_and_lost_is_only_observed() -> None:
    assert JobLifecycle.INTERRUPTED in ENDED and not JobLifecycle.INTERRUPTED.live
    assert LOST not in {s.value for s in JobLifecycle}  # never stored: a reader's observation
    for live in ("queued", "running", "restarting", "stopping", "paused"):
        assert observed_state(live, False) == LOST
        assert observed_state(live, True) == live
        assert observed_state(live, None) == live  # nothing to check against: shown as stored
    for ended in ("finished", "stopped", "failed", "interrupted"):
        assert observed_state(ended, False) == ended
    assert observed_state("something-newer", False) == "something-newer"


def test_lost_label_names_the_last_report_and_how_long_ago() -> None:
    import time

    t = 1_800_000_000.0
    clock = time.strftime("%H:%M:%S", time.localtime(t))
    assert lost_label(t, t + 42) == f"lost (last report {clock} / 42 s ago)"
    assert lost_label(t, t + 7 * 60) == f"lost (last report {clock} / 7 min ago)"
    assert lost_label(t, t + 3 * 3600) == f"lost (last report {clock} / 3.0 h ago)"
    assert lost_label(None, t) == "lost"


def test_an_interrupt_checkpoints_ends_interrupted_and_a_resume_continues_with_the_same_tracker() -> None:
    s = ControllerState()
    submit(s, "a")
    s.step(Tick({"CPU": 1.0}), T0)
    s.step(GangStarted("a", 1), T0)
    for i in range(1, 4):
        check(s, "a", i, 5.0 - i * 0.1)
    gamma_before = s.jobs["a"].tracker.ledger.gamma(ResourceKind.ENERGY_KWH)
    fx = s.step(StopRequest("a", StopReason.INTERRUPTED, "SIGTERM"), T0 + 31)
    assert fx.answer is not None and fx.answer["decision"]["reason"] == "interrupted"
    assert tags(fx)[names.INTERRUPTED_BY] == "SIGTERM" and s.jobs["a"].record.interrupted_by == "SIGTERM"
    assert s.answer("a") == {"halt": True, "restart": False}  # the ranks checkpoint and end
    assert s.step(GangReturned("a", [result(0, 35, "stop")]), T0 + 40).next == "finish"
    fx = s.step(Finish("a"), T0 + 41)
    e = s.jobs["a"]
    assert e.state is JobLifecycle.INTERRUPTED and tags(fx)[names.STATE] == "interrupted"
    assert tags(fx)[names.REASON] == "interrupted" and e.summary is not None
    assert e.summary["interrupted_by"] == "SIGTERM"
    assert e.record.checkpoint == {"step": 35, "path": "/ck/step35", "world_size": 1}
    s.step(Ended("a"), T0 + 42)
    decisions = len(e.tracker.decisions)

    # Its record as a resumed controller loads it (JSON round trip), resumed an hour later.
    s = ControllerState.from_dict(json.loads(json.dumps(s.to_dict())))
    point, step = resume_point(s.jobs["a"].record.to_dict()) or ({}, -1)
    assert (point, step) == ({"dir": "/ck", "tag": "step35", "universal": False}, 35)
    fx = s.step(Resumed("a", point, step, "interrupted (SIGTERM)"), T0 + 3600)
    e = s.jobs["a"]
    assert e.state is JobLifecycle.QUEUED and not e.done and not e.tracker.halted and e.summary is None
    assert e.record.resume == point and e.record.incarnation == 1 and e.record.checkpoint is None
    assert e.record.restarts[-1]["reason"] == "resumed (interrupted (SIGTERM))"
    assert tags(fx)[names.STATE] == "queued" and tags(fx)[names.RESUMED] == "from step 35 (interrupted (SIGTERM))"
    assert len(e.tracker.decisions) == decisions  # its decisions go on, the interrupt among them
    assert e.tracker.ledger.gamma(ResourceKind.ENERGY_KWH) == gamma_before  # Γ carries over
    # The rule's window goes on from its persisted checks: the next check is its 4th.
    s.step(Tick({"CPU": 1.0}), T0 + 3601)
    s.step(GangStarted("a", 1), T0 + 3602)
    fx = check(s, "a", 4, 4.5)
    assert fx.answer is not None and fx.answer["halt"] is False and fx.answer["decision"]["check"] == 4


def test_a_resume_does_not_count_the_time_the_job_was_gone_as_wall_hours() -> None:
    from orchestrator.core.ledger import Metric, TelemetrySample

    ledger = ResourceLedger()

    def tokens(t: float, n: float) -> None:
        ledger.add(TelemetrySample(sample_id=f"t/{t}", source="tokens", metric=Metric.TOKENS, t_s=t, value=n))

    tokens(0.0, 0.0)
    tokens(1800.0, 100.0)
    ledger.went_offline(1800.0 + 86_400)  # resumed a day later
    tokens(1800.0 + 86_400 + 1800, 200.0)
    assert ledger.gamma(ResourceKind.WALL_HOURS) == pytest.approx(1.0)
    assert ResourceLedger.from_dict(ledger.to_dict()).gamma(ResourceKind.WALL_HOURS) == pytest.approx(1.0)


def test_the_controllers_identity_tells_a_running_process_from_a_gone_one() -> None:
    me = psutil_create_time(os.getpid())
    host = socket.gethostname()
    assert reachable(json.dumps({"host": host, "pid": os.getpid(), "started": me, "ray": None})) is True
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    assert reachable(json.dumps({"host": host, "pid": dead_pid, "started": 1.0, "ray": None})) is False
    # The same pid with another start time: reused after a reboot, another process.
    assert reachable(json.dumps({"host": host, "pid": os.getpid(), "started": me - 3600, "ray": None})) is False
    # Another host: its Ray cluster's GCS must answer (nothing listens on port 1).
    assert reachable(json.dumps({"host": "elsewhere", "pid": 1, "started": 0, "ray": "127.0.0.1:1"})) is False
    assert reachable(None) is None and reachable("not json") is None


def test_a_reader_shows_a_live_job_of_a_gone_controller_as_lost_with_its_last_report(tmp_path: Path) -> None:
    (tmp_path / "telemetry.jsonl").write_text("{}\n")
    os.utime(tmp_path / "telemetry.jsonl", (1_800_000_100.0, 1_800_000_100.0))
    gone = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": 1.0, "ray": None})
    row = JobRow(
        job_id="j",
        run_id="r",
        run_name="j",
        state="running",
        decision=None,
        reason=None,
        step=10,
        psi=None,
        controller=gone,
        state_dir=str(tmp_path),
        last_report_t=1_800_000_000.0,
    )
    seen = observe(row)
    assert seen.state == LOST and seen.last_report_t == 1_800_000_100.0
    ended = JobRow(**{**row.__dict__, "state": "interrupted"})
    assert observe(ended) == ended


def test_resume_refusals_say_why_in_one_line() -> None:
    assert resume_refusal("j", "interrupted", None) is None
    assert resume_refusal("j", "running", False) is None  # lost
    still = resume_refusal("j", "running", True)
    assert isinstance(still, InputError) and "j is still running: its controller answers" in still.one_line()
    for state in ("finished", "stopped", "failed"):
        done = resume_refusal("j", state, False)
        assert isinstance(done, InputError) and f"already ended ({state})" in done.one_line()
    unknown = resume_refusal("j", "running", None)
    assert isinstance(unknown, InputError) and "cannot be checked" in unknown.one_line()


def test_resume_takes_its_job_id_and_only_overrides_that_keep_the_job_the_same() -> None:
    assert split_resume(["+resume=j-1", "detach=true"]) == ("j-1", ["detach=true"])
    assert split_resume(["train.lr=1e-3"]) == (None, ["train.lr=1e-3"])
    with pytest.raises(InputError, match="no job id"):
        split_resume(["+resume="])
    check_overrides(["detach=true", "cluster.address=10.0.0.1:6379", "runs_dir=/x", "interrupt_grace_s=10"])
    with pytest.raises(InputError, match=r"`train.lr=1` would change the job's saved config"):
        check_overrides(["train.lr=1"])


def test_resume_point_prefers_the_last_checkpoint_then_the_one_the_gang_started_from() -> None:
    assert resume_point({}) is None
    started_from = {"dir": "/ck/universal", "tag": "step40", "universal": True}
    record = {"resume": started_from, "restarts": [{"step": 40, "from_workers": 2, "to_workers": 1}]}
    assert resume_point(record) == (started_from, 40)
    record["checkpoint"] = {"step": 80, "path": "/ck/step80", "world_size": 1}
    assert resume_point(record) == ({"dir": "/ck", "tag": "step80", "universal": False}, 80)


def psutil_create_time(pid: int) -> float:
    import psutil

    return psutil.Process(pid).create_time()
