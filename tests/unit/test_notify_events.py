"""Which notifications the pure controller state asks for (a STOP with its figures, a shadow-mode proposal, a
reallocation, a failure), how deliveries are counted, and the outbox that keeps a restarted controller from sending
an event twice. The channels here are in-process recorders: the real HTTP, Apprise and command channels are tested
in test_notify_channels.py and, with a real job, in tests/integration/test_notify.py."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.controller.events import (
    Ended,
    Fail,
    Finish,
    GangReturned,
    GangStarted,
    Notified,
    Notify,
    Release,
    RestartReady,
    SaveHandle,
    StopRequest,
    Tick,
)
from orchestrator.controller.records import HandleRecord
from orchestrator.controller.state import ControllerState
from orchestrator.core import names
from orchestrator.notify import events
from orchestrator.notify.channels import DeliveryError
from orchestrator.notify.dispatch import FAILED, QUEUED, SENT, JobNotifier, Outbox
from tests.unit.test_controller_state import T0, check, of, result, submit, tags
from tests.unit.test_job_tracker import saturating_loss

ALL = tuple(e.value for e in events.JOB_EVENTS)


def run_to_rule_stop(s: ControllerState, job_id: str) -> tuple[int, list[Notify]]:
    """Checks until the rule decides; the Notify effects the checks asked for."""
    s.step(Tick({"CPU": 2.0}), T0 + 1)
    s.step(GangStarted(job_id, 1), T0 + 2)
    sent: list[Notify] = []
    for i in range(1, 40):
        fx = check(s, job_id, i, saturating_loss(i))
        sent += of(fx, Notify)
        if s.jobs[job_id].tracker.rule.stopped is not None:
            return i, sent
    raise AssertionError("the rule never decided")


def test_a_rule_stop_sends_one_stop_event_with_its_figures_and_checkpoint() -> None:
    s = ControllerState()
    submit(s, "a", notify_on=ALL)
    i, during = run_to_rule_stop(s, "a")
    assert during == []  # an enforced STOP is told once, when the job has ended (with its checkpoint)
    s.step(GangReturned("a", [result(0, 10 * i, "stop")]), T0 + 500)
    fx = s.step(Finish("a"), T0 + 501)
    [sent] = of(fx, Notify)
    e = sent.event
    assert e["id"] == "a:stop:0" and e["event"] == "stop" and e["job_id"] == "a" and e["run_id"] == "r"
    assert e["reason"] == "marginal_return" and e["step"] == 10 * i and e["checkpoint"] == f"/ck/step{10 * i}"
    assert e["gamma"]["energy_kwh"] > 0 and e["psi"] == pytest.approx(s.jobs["a"].summary["psi"])  # type: ignore[index]
    assert e["ratio"] is not None and e["eta"] is not None and 0 < e["gamma_saved_fraction"] < 1
    assert "stopped (marginal_return)" in e["title"] and "cpr report a" in e["message"]


def test_no_event_is_asked_for_without_a_channel_or_outside_notify_on() -> None:
    s = ControllerState()
    submit(s, "a")  # notify_on=(): no channel
    submit(s, "b", notify_on=("failed",))
    for job_id in ("a", "b"):
        i, during = run_to_rule_stop(s, job_id)
        s.step(GangReturned(job_id, [result(0, 10 * i, "stop")]), T0 + 500)
        assert during == [] and of(s.step(Finish(job_id), T0 + 501), Notify) == []


def test_shadow_mode_proposes_the_stop_once_and_says_how_to_stop_it() -> None:
    s = ControllerState()
    submit(s, "a", notify_on=("shadow",))
    s.jobs["a"].tracker.enforce = False
    i, during = run_to_rule_stop(s, "a")
    [proposal] = during
    e = proposal.event
    assert e["event"] == "shadow" and e["id"].startswith("a:shadow:") and e["step"] == 10 * i
    assert e["stop_command"] == "cpr stop a" and "cpr stop a" in e["message"] and "stop.enforce=false" in e["message"]
    assert e["ratio"] < e["eta"] and e["gamma"]["energy_kwh"] > 0
    assert not s.jobs["a"].tracker.halted  # it runs on
    for j in range(i + 1, i + 4):  # the rule has had its say: no second proposal
        assert of(check(s, "a", j, saturating_loss(j)), Notify) == []


def test_a_pause_and_its_resume_are_reallocations_a_first_start_is_not() -> None:
    s = ControllerState()
    submit(s, "low", num_workers=2, min_world=2, max_world=2, notify_on=("reallocation",))
    fx = s.step(Tick({"CPU": 2.0}), T0)
    assert of(fx, Notify) == []  # its first start
    s.step(GangStarted("low", 2), T0)
    check(s, "low", 1, 5.0)
    submit(s, "high", priority=5, num_workers=2, min_world=2, max_world=2)
    [paused] = of(s.step(Tick({"CPU": 2.0}), T0 + 20), Notify)
    assert paused.event["change"] == "paused" and paused.event["to_slots"] == 0 and paused.job_id == "low"
    check(s, "low", 2, 4.9)
    s.step(GangReturned("low", [result(0, 20, "restart"), result(1, 20, "restart")]), T0 + 30)
    s.step(RestartReady("low", {"dir": "/ck", "tag": "step20", "universal": False}, 20), T0 + 31)
    s.step(GangStarted("high", 2), T0 + 32)
    s.step(StopRequest("high"), T0 + 40)
    s.step(GangReturned("high", [result(0, 10, "stop"), result(1, 10, "stop")]), T0 + 41)
    s.step(Finish("high"), T0 + 42)
    s.step(Release("high"), T0 + 43)
    s.step(Ended("high"), T0 + 44)
    [resumed] = of(s.step(Tick({"CPU": 2.0}), T0 + 50), Notify)
    assert resumed.event["change"] == "resumed" and resumed.event["to_slots"] == 2
    assert resumed.event["id"] != paused.event["id"]


@pytest.mark.parametrize(
    ("action", "frm", "to", "reason", "was_paused", "kind"),
    [
        ("resize", 1, 2, "pays", False, "grown"),
        ("resize", 2, 1, "others wait", False, "shrunk"),
        ("pause", 2, 0, "priority", False, "paused"),
        ("start", 0, 2, "resumes", True, "resumed"),
        ("start", 0, 2, "queued", False, None),
        ("stop", 2, 0, "dominated: its forecast Ψ …", False, "dominated"),
        ("stop", 2, 0, "its rule stopped it", False, None),
    ],
)
def test_reallocation_kinds(action: str, frm: int, to: int, reason: str, was_paused: bool, kind: str | None) -> None:
    assert events.reallocation_kind(action, frm, to, reason, was_paused) == kind


def test_a_failure_is_sent_even_when_its_other_effects_fail_and_deliveries_are_counted() -> None:
    s = ControllerState()
    submit(s, "a", notify_on=("failed",))
    fx = s.step(Fail("a", "Traceback …\nRuntimeError: a rank ran out of memory"), T0 + 5)
    [sent] = [e for e in fx.final if isinstance(e, Notify)]  # with the FAILED state, applied whatever happens
    assert sent.event["error"].endswith("out of memory") and "RuntimeError: a rank ran out" in sent.event["message"]
    fx = s.step(Notified("a", "webhook", "a:failed:0@webhook", True), T0 + 6)
    assert tags(fx)[names.NOTIFY] == "1 sent, 0 failed" and of(fx, SaveHandle)
    fx = s.step(Notified("a", "apprise", "a:failed:0@apprise", False, "HTTP 500 from json://127.0.0.1/***"), T0 + 7)
    assert tags(fx)[names.NOTIFY] == "1 sent, 1 failed (last: apprise: HTTP 500 from json://127.0.0.1/***)"
    rec = HandleRecord.from_dict(s.jobs["a"].record.to_dict())  # persisted in handle.json
    assert (rec.notify_sent, rec.notify_failed) == (1, 1) and rec.notify_error is not None
    assert s.step(Notified("gone", "webhook", "x", True), T0).items == []  # a job the controller no longer has


# -- the outbox and the sender threads ------------------------------------------------------------------------
class Recorder:
    """An in-process channel: records what it was sent; `fail` makes each attempt raise; `gate` holds attempts."""

    def __init__(self, name: str, *, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.name, self.fail, self.gate = name, fail, gate
        self.sent: list[str] = []

    def send(self, event: Mapping[str, Any]) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise DeliveryError("HTTP 500")
        self.sent.append(event["id"])


def notifier(path: Path, *channels: Recorder, told: list[tuple[str, str, bool]]) -> JobNotifier:
    return JobNotifier(
        "a",
        channels,
        path,
        retries=1,
        backoff_s=0.0,
        on_result=lambda ch, did, r: told.append((ch, did, r.ok)),
    )


def event(key: str) -> dict[str, Any]:
    return events.failed_event(events.job_ref("a", "a", "r"), "boom", incarnation=int(key), t_s=T0)


def test_each_channel_delivers_on_its_own_thread_and_the_outbox_records_each_outcome(tmp_path: Path) -> None:
    told: list[tuple[str, str, bool]] = []
    good, bad = Recorder("webhook"), Recorder("apprise", fail=True)
    n = notifier(tmp_path / "outbox.jsonl", good, bad, told=told)
    assert n.send(event("0")) == 2
    assert n.send(event("0")) == 0  # the same event again (a retried report): not queued twice
    assert n.flush(5.0) == []
    assert good.sent == ["a:failed:0"] and bad.sent == []
    assert sorted(told) == [("apprise", "a:failed:0@apprise", False), ("webhook", "a:failed:0@webhook", True)]
    status = {k: v["status"] for k, v in Outbox(tmp_path / "outbox.jsonl").status.items()}
    assert status == {"a:failed:0@webhook": SENT, "a:failed:0@apprise": FAILED}
    n.close()


def test_a_hanging_channel_does_not_hold_up_another_and_a_flush_gives_up_on_it(tmp_path: Path) -> None:
    told: list[tuple[str, str, bool]] = []
    gate = threading.Event()
    hanging, good = Recorder("apprise", gate=gate), Recorder("webhook")
    n = notifier(tmp_path / "outbox.jsonl", hanging, good, told=told)
    n.send(event("0"))
    n.send(event("1"))
    left = n.flush(0.5)
    assert good.sent == ["a:failed:0", "a:failed:1"]  # delivered while the other channel hangs
    assert sorted(left) == [("apprise", "a:failed:0@apprise"), ("apprise", "a:failed:1@apprise")]
    n.abandon(left, "not delivered by the job's end")
    assert sorted(t for t in told if not t[2]) == [
        ("apprise", "a:failed:0@apprise", False),
        ("apprise", "a:failed:1@apprise", False),
    ]
    gate.set()  # the hung attempt ends after all: it is not counted a second time
    n.close()
    assert len([t for t in told if t[0] == "apprise"]) == 2


def test_a_restarted_controller_sends_what_was_queued_and_never_what_was_sent(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)  # what a controller that died mid-delivery left: one sent, one queued, one failed
    for key, status in (("0", SENT), ("1", QUEUED), ("2", FAILED)):
        box.add({"id": f"a:failed:{key}@webhook", "channel": "webhook", "status": QUEUED, "event": event(key)})
        if status != QUEUED:
            box.add({"id": f"a:failed:{key}@webhook", "channel": "webhook", "status": status})
    with path.open("a") as f:
        f.write('{"id": "a:failed:3@webhook", "chan')  # a line cut short by the crash
    told: list[tuple[str, str, bool]] = []
    channel = Recorder("webhook")
    n = notifier(path, channel, told=told)
    assert n.resume() == 1
    assert n.send(event("0")) == 0 and n.send(event("2")) == 0  # the state machine asking again after the restart
    n.flush(5.0)
    assert channel.sent == ["a:failed:1"] and told == [("webhook", "a:failed:1@webhook", True)]
    n.close()


def test_events_are_json_with_stable_ids_and_plain_messages() -> None:
    job = events.job_ref("j", "name", "run")
    stop = events.stop_event(job, {"reason": None, "step": 5, "gamma": {"tokens": 10.0}}, incarnation=2, t_s=1.0)
    assert stop["id"] == "j:stop:2" and stop["reason"] == "budget" and "finished at its budget" in stop["title"]
    assert stop["schema"] == events.SCHEMA and "\n" not in stop["title"]
    # without the budget-aware rule's bound, the gain left is the forecast's gain to the budget (when it fitted)
    fitted = {"reason": "marginal_return", "forecast": {"ok": True, "psi_gain_to_budget": 0.03}}
    assert events.stop_event(job, fitted, incarnation=0, t_s=1.0)["gain_left"] == 0.03
    unfitted = {"reason": "marginal_return", "forecast": {"ok": False, "psi_gain_to_budget": None}}
    assert events.stop_event(job, unfitted, incarnation=0, t_s=1.0)["gain_left"] is None
    bp = events.blueprint_event(job, "m", {"version": 3, "step": 40, "tokens": 4000, "path": "/b.json"}, t_s=1.0)
    assert bp["id"] == "j:blueprint:v3" and "cpr blueprint get m --version 3" in bp["message"]
    summary = events.summary_event(
        [
            {
                "job_id": "x",
                "state": "stopped",
                "reason": "marginal_return",
                "step": 9,
                "psi": -4.0,
                "gamma": {"energy_kwh": 0.5},
            }
        ],
        since_s=0.0,
        until_s=7 * 86400.0,
        experiment="cpr",
    )
    assert summary["by_state"] == {"stopped": 1} and summary["energy_kwh"] == 0.5
    assert "- x: stopped (marginal_return), step 9" in summary["message"]


def test_a_drained_close_sends_what_is_queued_then_ends_the_sender_threads(tmp_path: Path) -> None:
    told: list[tuple[str, str, bool]] = []
    gate = threading.Event()
    channel = Recorder("webhook", gate=gate)
    n = notifier(tmp_path / "outbox.jsonl", channel, told=told)
    n.send(event("0"))
    n.send(event("1"))
    n.close(drain=True)  # the job ended: its senders go once the queue is empty, retries and all
    gate.set()
    assert n.flush(5.0) == [] and channel.sent == ["a:failed:0", "a:failed:1"]
    for t in threading.enumerate():
        if t.name == "notify-a-webhook":
            t.join(5.0)
            assert not t.is_alive()
