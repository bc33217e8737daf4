"""The controller's live metrics without Ray: values after a sequence of events, and the actor's wiring of them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from orchestrator.config.schema import JobConfig
from orchestrator.controller.actor import Controller
from orchestrator.controller.events import GangStarted
from orchestrator.controller.handles import JobHandle, new_entry
from orchestrator.controller.metrics import EXPORTED, METRICS, ControllerMetrics
from orchestrator.controller.store import JobStore
from orchestrator.core.ledger import Metric
from orchestrator.core.lifecycle import JobLifecycle
from tests.unit.test_job_tracker import POWER_W, T0, saturating_loss, tracker


class RecordingSink:
    """Every call the metrics forward, as Ray's Gauges and Counters would get them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []

    def set(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        self.calls.append(("set", name, value, dict(labels)))

    def inc(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        self.calls.append(("inc", name, value, dict(labels)))


def test_values_after_a_sequence_of_events() -> None:
    sink = RecordingSink()
    m = ControllerMetrics(sink)
    m.job_state("a", "queued")
    m.job_state("b", "queued")
    m.job_state("a", "running")
    assert m.value("cpr_jobs", state="queued") == 1.0
    assert m.value("cpr_jobs", state="running") == 1.0
    assert m.value("cpr_jobs", state="failed") == 0.0  # every state has a series, 0 when empty
    m.train("a", 1234.5, {"power/total_w": 80.0, "energy/total_kwh": 0.5, "train/loss": 3.0})
    m.train("a", 1300.0, {})  # no power yet measured: the last value stays
    assert m.value("cpr_tokens_per_second", job_id="a") == 1300.0
    assert m.value("cpr_power_watts", job_id="a") == 80.0
    m.check("a", {"energy_kwh": 0.6, "co2_kg": 0.24, "tokens": 1e6}, ratio=None, eta=None)
    m.decision("a", "continue", None)
    m.check("a", {"energy_kwh": 0.7, "co2_kg": 0.28, "tokens": 2e6}, ratio=5.0, eta=10.0)
    m.decision("a", "continue", None)
    m.decision("a", "stop", "marginal_return")
    m.job_state("a", "stopped")
    assert m.value("cpr_energy_kwh_total", job_id="a") == 0.7  # the check's ledger total replaces the report's
    assert m.value("cpr_co2_kg_total", job_id="a") == 0.28
    assert m.value("cpr_gamma", job_id="a", kind="tokens") == 2e6
    assert (m.value("cpr_ratio", job_id="a"), m.value("cpr_eta", job_id="a")) == (5.0, 10.0)
    assert m.value("cpr_decisions_total", job_id="a", action="continue", reason="none") == 2.0
    assert m.value("cpr_decisions_total", job_id="a", action="stop", reason="marginal_return") == 1.0
    assert (m.value("cpr_jobs", state="running"), m.value("cpr_jobs", state="stopped")) == (0.0, 1.0)
    assert m.value("cpr_ratio", job_id="b") is None
    # The sink saw the same: the last `set` of each series is its value, a counter's `inc`s sum to it.
    seen: dict[Any, float] = {}
    for op, name, value, labels in sink.calls:
        key = (name, tuple(sorted(labels.items())))
        seen[key] = seen.get(key, 0.0) + value if op == "inc" else value
    assert seen == m.values()
    assert {name for name, _ in m.values()} == {s.name for s in METRICS}
    assert {"ray_" + s.name for s in METRICS} == EXPORTED
    assert {k[1][0][1] for k in m.values() if k[0] == "cpr_jobs"} == set(JobLifecycle)


def test_an_export_error_never_fails_the_event() -> None:
    class Broken(RecordingSink):
        def set(self, name: str, value: float, labels: Mapping[str, str]) -> None:
            raise RuntimeError("agent gone")

    m = ControllerMetrics(Broken())
    m.train("a", 10.0, {})
    m.train("a", 11.0, {})
    assert m.value("cpr_tokens_per_second", job_id="a") == 11.0


class FakeWriter:
    """The MLflow run writer's surface that the report path uses."""

    run_id = "run"

    def __init__(self) -> None:
        self.marks: set[tuple[str, int]] = set()

    def logged(self, key: str, step: int) -> bool:
        return (key, step) in self.marks

    def log_metrics(self, metrics: dict[str, float], step: int, *, mark: str | None = None) -> None:
        if mark is not None:
            self.marks.add((mark, step))

    def set_tags(self, tags: dict[str, str]) -> None:
        pass


@pytest.fixture
def controller(tmp_path) -> Controller:
    """A controller outside Ray (no sink: the values only) holding one job fed by hand."""
    c = Controller()
    entry = new_entry("j", JobConfig(), tracker(), submitted_t=T0, run_id="run", sweep=None)
    h = JobHandle(entry=entry, job=JobConfig(), store=JobStore(tmp_path), writer=FakeWriter())
    c.jobs["j"] = h
    c.state.jobs["j"] = entry
    c.metrics.job_state("j", h.state)
    return c


def test_the_controller_updates_them_at_its_events(controller: Controller) -> None:
    c, h = controller, controller.jobs["j"]
    c.step_job(h, GangStarted("j", 1))
    for i in range(1, 40):
        t = T0 + 10 * i
        sample = {"sample_id": f"cpu/{i}", "source": "n/rank0/cpu", "metric": Metric.ENERGY_J.value, "t_s": t}
        c.telemetry("j", [{**sample, "value": POWER_W * 10 * i}])  # a counter: a constant POWER_W
        report = {"step": 10 * i, "tokens": 1000 * i, "loss": 3.0, "lr": 1e-3, "tokens_per_s": 100.0 + i, "t_s": t}
        c.train("j", report)
        answer = c.eval("j", {"step": 10 * i, "tokens": 1000 * i, "val_loss": saturating_loss(i), "t_s": t})
        c.eval("j", {"step": 10 * i, "tokens": 1000 * i, "val_loss": saturating_loss(i), "t_s": t})  # a retry
        if answer["halt"]:
            break
    assert answer["halt"], "the rule should have stopped this saturating curve"
    m, view = c.metrics, h.tracker.view()
    assert m.value("cpr_jobs", state="running") == 1.0 and m.value("cpr_jobs", state="queued") == 0.0
    assert m.value("cpr_tokens_per_second", job_id="j") == 100.0 + i
    assert m.value("cpr_power_watts", job_id="j") == pytest.approx(POWER_W)
    assert m.value("cpr_ratio", job_id="j") == view["ratio"] and m.value("cpr_eta", job_id="j") == view["eta"]
    for kind, value in view["gamma"].items():
        assert m.value("cpr_gamma", job_id="j", kind=kind) == value
    assert m.value("cpr_energy_kwh_total", job_id="j") == view["gamma"]["energy_kwh"]
    assert m.value("cpr_co2_kg_total", job_id="j") == view["gamma"]["co2_kg"]
    continues = m.value("cpr_decisions_total", job_id="j", action="continue", reason="none")
    assert continues == i - 1  # once per check: the retried ones are not counted again
    assert m.value("cpr_decisions_total", job_id="j", action="stop", reason="marginal_return") == 1.0
    assert c.request_stop("j")["ok"]  # already stopped by the rule: no second STOP counted
    assert m.value("cpr_decisions_total", job_id="j", action="stop", reason="user") is None


def test_a_user_stop_is_counted_with_its_reason(controller: Controller) -> None:
    assert controller.request_stop("j")["ok"]
    assert controller.metrics.value("cpr_decisions_total", job_id="j", action="stop", reason="user") == 1.0


def test_ray_sink_re_records_every_gauge_series_until_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray exports a gauge value once and its agent drops a series not re-exported: the sink records each gauge
    series' last value again every `refresh_s`; counters are never repeated (the agent sums them)."""
    import ray.util.metrics

    from orchestrator.controller.metrics import RaySink

    records: list[tuple[str, str, float, dict[str, str]]] = []

    class Fake:
        def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] = ()) -> None:
            self.name = name

        def set(self, value: float, tags: dict[str, str]) -> None:
            records.append(("set", self.name, value, tags))

        def inc(self, value: float, tags: dict[str, str]) -> None:
            records.append(("inc", self.name, value, tags))

    monkeypatch.setattr(ray.util.metrics, "Gauge", Fake)
    monkeypatch.setattr(ray.util.metrics, "Counter", Fake)
    sink = ControllerMetrics(RaySink(refresh_s=0.02))
    sink.job_state("a", "running")
    sink.check("a", {"tokens": 5.0}, ratio=2.0, eta=1.0)
    sink.check("a", {"tokens": 6.0}, ratio=3.0, eta=1.0)
    sink.decision("a", "continue", None)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(r[1] == "cpr_ratio" for r in records) < 5:
        time.sleep(0.02)
    sink._sink.close()  # type: ignore[union-attr]
    ratios = [r[2] for r in records if r[1] == "cpr_ratio"]
    assert len(ratios) >= 5 and ratios[0] == 2.0 and set(ratios[1:]) == {3.0}  # the last value, again and again
    assert [r for r in records if r[0] == "inc"] == [
        ("inc", "cpr_decisions_total", 1.0, {"job_id": "a", "action": "continue", "reason": "none"})
    ]
    assert {r[3]["state"] for r in records if r[1] == "cpr_jobs"} == {s.value for s in JobLifecycle}
