"""Live Prometheus metrics of the controller: jobs by state, per-job ratio and η, power, energy, CO₂, tokens/s, Γ
by kind, and the decisions taken.

Design: Ray's own metrics API (`ray.util.metrics`), not `prometheus_client` with a server of its own. The controller
is a Ray actor: its Gauges and Counters go to the metrics agent of its node, which Prometheus already scrapes for
Ray's own metrics (`ray start --metrics-export-port`, targets listed in Ray's service-discovery file
`/tmp/ray/prom_metrics_service_discovery.json`). So no extra port to choose, open or secure, nothing to bind when the
actor moves to another node after a restart, and one scrape config for cpr's and Ray's panels. The cost: Prometheus
sees every name with Ray's `ray_` prefix (`cpr_ratio` is `ray_cpr_ratio`; `EXPORTED` lists them), with Ray's labels
(`WorkerId`, `SessionName`, …) added, and values reach the agent at Ray's report interval (10 s by default).

`ControllerMetrics` keeps the values it last set (`values()`: what the unit tests read, no Ray needed) and forwards
each to a sink: Ray's metrics inside a Ray worker, nothing elsewhere. One cheap call per controller event, no I/O;
`RaySink` re-records its gauges in the background, since Ray's metrics agent drops a gauge not re-exported lately.
Only per-job series (no per-rank ones: their cardinality would grow with the world size).
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.core.lifecycle import JobLifecycle

RAY_PREFIX = "ray_"
"""What Ray's metrics agent puts before every application metric's name."""


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its name inside cpr, gauge or counter, help text and label names."""

    name: str
    kind: str
    """gauge | counter"""
    description: str
    labels: tuple[str, ...]


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("cpr_jobs", "gauge", "Jobs of this controller by state.", ("state",)),
    MetricSpec("cpr_ratio", "gauge", "Latest window ratio dPsi/dGamma of the job's stop rule.", ("job_id",)),
    MetricSpec("cpr_eta", "gauge", "The stop rule's threshold eta (unset until r_ref is known).", ("job_id",)),
    MetricSpec("cpr_power_watts", "gauge", "Mean power of all the job's ranks since its previous report.", ("job_id",)),
    MetricSpec("cpr_energy_kwh_total", "gauge", "Energy the job has used so far (kWh, all ranks).", ("job_id",)),
    MetricSpec("cpr_co2_kg_total", "gauge", "CO2 the job has emitted so far (kg, estimated).", ("job_id",)),
    MetricSpec("cpr_tokens_per_second", "gauge", "Training throughput reported by rank 0.", ("job_id",)),
    MetricSpec("cpr_gamma", "gauge", "Resource Gamma used so far, per kind, at the latest check.", ("job_id", "kind")),
    MetricSpec("cpr_decisions_total", "counter", "Stop-rule decisions taken.", ("job_id", "action", "reason")),
)
SPECS = {m.name: m for m in METRICS}
EXPORTED = frozenset(RAY_PREFIX + m.name for m in METRICS)
"""The names Prometheus scrapes from Ray's metrics agent: what dashboards/cpr.json may query."""

Key = tuple[str, tuple[tuple[str, str], ...]]


class Sink(Protocol):
    """Where values go besides `ControllerMetrics.values()`."""

    def set(self, name: str, value: float, labels: Mapping[str, str]) -> None: ...

    def inc(self, name: str, value: float, labels: Mapping[str, str]) -> None: ...


class RaySink:
    """`ray.util.metrics` Gauges and Counters, one per spec, created in this Ray worker.

    Every gauge series is re-recorded every `refresh_s` (half Ray's export interval) by a daemon thread, for as long
    as the worker lives. Ray's OpenTelemetry path (the default in recent Ray) exports a gauge value once: the worker
    forgets its recorded gauge values after each export to the metrics agent, and the agent drops a series not
    re-exported within twice the report interval (20 s by default). A gauge set once and never again (a job's state
    count, the figures of a job that ended, everything between two rare checks) would vanish from the scrape, while
    counters, which the agent accumulates, stay. Re-recording the last value keeps the series until the controller
    dies; then the agent ages them out as Ray intends.
    """

    def __init__(self, refresh_s: float | None = None) -> None:
        from ray.util.metrics import Counter, Gauge

        self._metrics: dict[str, Any] = {
            m.name: (Gauge if m.kind == "gauge" else Counter)(m.name, description=m.description, tag_keys=m.labels)
            for m in METRICS
        }
        self._lock = threading.Lock()  # one record per series at a time: a refresh never re-records a replaced value
        self._gauges: dict[Key, float] = {}
        self.refresh_s = refresh_s if refresh_s is not None else _refresh_interval_s()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="cpr-metrics-refresh", daemon=True)
        self._thread.start()

    def set(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        with self._lock:
            self._metrics[name].set(value, tags=dict(labels))
            self._gauges[_key(name, labels)] = value

    def inc(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        self._metrics[name].inc(value, tags=dict(labels))

    def refresh(self) -> None:
        """Record every gauge series' last value again."""
        with self._lock:
            for (name, labels), value in self._gauges.items():
                self._metrics[name].set(value, tags=dict(labels))

    def close(self) -> None:
        self._stop.set()

    def _refresh_loop(self) -> None:
        failed = False
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:  # printed once; the next round tries again
                if not failed:
                    failed = True
                    traceback.print_exc()


def _refresh_interval_s() -> float:
    """Half the interval at which this worker exports metrics to the agent (Ray floors it at 1 s)."""
    try:
        import ray

        interval_ms = float(ray._config.metrics_report_interval_ms())
    except Exception:
        interval_ms = 10_000.0
    return max(interval_ms, 1000.0) / 2000.0


def default_sink() -> Sink | None:
    """Ray's metrics inside a Ray worker (the controller actor); None elsewhere (plain tests, replay), or where the
    environment says CPR_LIVE_METRICS=0 (benchmarks/overhead measures the export's cost that way)."""
    if os.environ.get("CPR_LIVE_METRICS", "1") == "0":
        return None
    try:
        import ray

        if ray.is_initialized():
            return RaySink()
    except Exception:  # metrics must never keep the controller from starting
        traceback.print_exc()
    return None


class ControllerMetrics:
    """The controller's metrics, updated once per event (state change, training report, check, decision)."""

    def __init__(self, sink: Sink | None = None) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}
        self._values: dict[Key, float] = {}
        self._sink_failed = False

    # -- events ---------------------------------------------------------------------------------------------
    def job_state(self, job_id: str, state: str) -> None:
        """A job entered `state` (or was registered, or restored after a controller restart in it)."""
        with self._lock:
            self._states[job_id] = state
            counts = dict.fromkeys(JobLifecycle, 0)  # a series (0 or more) for every state
            for s in self._states.values():
                counts[s] = counts.get(s, 0) + 1
            for s, n in counts.items():
                self._set("cpr_jobs", float(n), state=s)

    def train(self, job_id: str, tokens_per_s: float, logged: Mapping[str, float]) -> None:
        """Rank 0's training report; `logged`: the metrics written to MLflow for it (power/energy when measured)."""
        with self._lock:
            self._set("cpr_tokens_per_second", tokens_per_s, job_id=job_id)
            if (w := logged.get("power/total_w")) is not None:
                self._set("cpr_power_watts", w, job_id=job_id)
            if (kwh := logged.get("energy/total_kwh")) is not None:
                self._set("cpr_energy_kwh_total", kwh, job_id=job_id)

    def check(self, job_id: str, gamma: Mapping[str, float], ratio: float | None, eta: float | None) -> None:
        """An evaluation check: Γ of every kind measured (ledger totals), the rule's window ratio and η."""
        with self._lock:
            for kind, value in gamma.items():
                self._set("cpr_gamma", value, job_id=job_id, kind=kind)
            if (kwh := gamma.get("energy_kwh")) is not None:
                self._set("cpr_energy_kwh_total", kwh, job_id=job_id)
            if (co2 := gamma.get("co2_kg")) is not None:
                self._set("cpr_co2_kg_total", co2, job_id=job_id)
            if ratio is not None:
                self._set("cpr_ratio", ratio, job_id=job_id)
            if eta is not None:
                self._set("cpr_eta", eta, job_id=job_id)

    def decision(self, job_id: str, action: str, reason: str | None) -> None:
        """One decision recorded (CONTINUE at a check, or a STOP and why)."""
        labels = {"job_id": job_id, "action": action, "reason": reason or "none"}
        key = _key("cpr_decisions_total", labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + 1.0
            self._forward("inc", "cpr_decisions_total", 1.0, labels)

    def restore(self, job_id: str, state: str, view: Mapping[str, Any]) -> None:
        """A job rebuilt after a controller restart: its state and its latest figures (`JobTracker.view()`)."""
        self.job_state(job_id, state)
        self.check(job_id, view.get("gamma") or {}, view.get("ratio"), view.get("eta"))

    # -- reading --------------------------------------------------------------------------------------------
    def values(self) -> dict[Key, float]:
        """A copy of every value set: {(name, ((label, value), …)): value}."""
        with self._lock:
            return dict(self._values)

    def value(self, name: str, **labels: str) -> float | None:
        with self._lock:
            return self._values.get(_key(name, labels))

    def _set(self, name: str, value: float, **labels: str) -> None:
        self._values[_key(name, labels)] = float(value)
        self._forward("set", name, float(value), labels)

    def _forward(self, op: str, name: str, value: float, labels: Mapping[str, str]) -> None:
        """To the sink; an export error is printed once and never fails the report being handled."""
        if self._sink is None:
            return
        try:
            getattr(self._sink, op)(name, value, labels)
        except Exception:
            if not self._sink_failed:
                self._sink_failed = True
                traceback.print_exc()


def _key(name: str, labels: Mapping[str, str]) -> Key:
    return name, tuple(sorted(labels.items()))
