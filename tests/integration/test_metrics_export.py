"""The controller's metrics exported for real: Ray's metrics agent serves them, a Prometheus text scrape parses.
A stand-in actor checks every metric and value; a real job on the real controller checks that its gauges stay."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.config.compose import compose_job
from orchestrator.controller.actor import controller_handle
from orchestrator.controller.metrics import EXPORTED, RAY_PREFIX
from orchestrator.submission import plan_of, prepare
from tests.integration.cluster import wait_all

NAMESPACE = "cpr-metrics-test"
AGENT_KEEPS_S = 20.0
"""How long Ray's metrics agent keeps a gauge series no worker re-exported: twice its report interval (the agent
process reads the default, 10 s, whatever `_system_config` the workers get)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@ray.remote(num_cpus=0)
class Emitter:
    """A stand-in for the controller actor: the same `ControllerMetrics` with Ray's sink, fed one of each event."""

    def emit(self) -> None:
        from orchestrator.controller.metrics import ControllerMetrics, default_sink

        self.m = ControllerMetrics(default_sink())
        self.m.job_state("j1", "running")
        self.m.train("j1", 2048.0, {"power/total_w": 95.0, "energy/total_kwh": 0.25})
        self.m.check("j1", {"energy_kwh": 0.3, "co2_kg": 0.12, "tokens": 1e6}, ratio=4.0, eta=9.0)
        self.m.decision("j1", "continue", None)
        self.m.decision("j1", "stop", "marginal_return")


def scrape_all(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Every cpr sample at Ray's metrics port now: (name, labels, value), Ray's labels included."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(RAY_PREFIX + "cpr_")
    ]


def scrape(port: int, deadline_s: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """cpr's samples at Ray's metrics port once all have arrived (Ray exports at its report interval)."""
    end = time.monotonic() + deadline_s
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        samples = {
            (
                s.name,
                tuple(
                    sorted((k, v) for k, v in s.labels.items() if k in ("job_id", "state", "kind", "action", "reason"))
                ),
            ): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith(RAY_PREFIX + "cpr_")
        }
        if {name for name, _ in samples} >= EXPORTED or time.monotonic() > end:
            return samples
        time.sleep(0.25)


@pytest.fixture(scope="module")
def metrics_port():
    port = _free_port()
    ray.init(
        address="local",
        num_cpus=2,  # the real job's 2 ranks
        namespace=NAMESPACE,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 500},
    )
    try:
        yield port
    finally:
        ray.shutdown()


def test_every_metric_is_scraped_with_its_value(metrics_port: int) -> None:
    emitter = Emitter.remote()
    ray.get(emitter.emit.remote())
    got = scrape(metrics_port, deadline_s=30)
    assert {name for name, _ in got} == EXPORTED
    job = (("job_id", "j1"),)
    assert got["ray_cpr_jobs", (("state", "running"),)] == 1.0
    assert got["ray_cpr_jobs", (("state", "queued"),)] == 0.0
    assert got["ray_cpr_tokens_per_second", job] == 2048.0
    assert got["ray_cpr_power_watts", job] == 95.0
    assert got["ray_cpr_energy_kwh_total", job] == 0.3
    assert got["ray_cpr_co2_kg_total", job] == 0.12
    assert (got["ray_cpr_ratio", job], got["ray_cpr_eta", job]) == (4.0, 9.0)
    assert got["ray_cpr_gamma", (("job_id", "j1"), ("kind", "tokens"))] == 1e6
    stop = (("action", "stop"), ("job_id", "j1"), ("reason", "marginal_return"))
    assert got["ray_cpr_decisions_total", stop] == 1.0


def test_the_real_controllers_gauges_stay_after_its_job_ends(metrics_port: int, tmp_path: Path) -> None:
    """The real controller, a real short job: its gauges are still scraped once the agent would have dropped any
    series set for the last time when the job ended (Ray exports a gauge value once; cpr re-records them)."""
    controller = controller_handle(NAMESPACE, detached=False)
    overrides = ["+experiment=debug", "probe=off", "telemetry=off", f"runs_dir={tmp_path / 'runs'}"]
    job = prepare(plan_of(compose_job(overrides))).submission
    job.send(controller)
    result, _ = wait_all(controller, [job.job_id], timeout_s=400)
    assert result[job.job_id]["summary"]["reason"] == "marginal_return"
    time.sleep(AGENT_KEEPS_S + 10)  # nothing is set any more: only a re-export keeps a gauge
    samples = scrape_all(metrics_port)
    mine = {
        (name, tuple(sorted(labels.items()))): v for name, labels, v in samples if labels.get("job_id") == job.job_id
    }
    names = {name for name, _ in mine}
    assert {"ray_cpr_tokens_per_second", "ray_cpr_ratio", "ray_cpr_eta", "ray_cpr_gamma"} <= names, sorted(names)
    assert "ray_cpr_decisions_total" in names
    worker = next(labels["WorkerId"] for name, labels, _ in samples if labels.get("job_id") == job.job_id)
    jobs = {
        labels["state"]: v for name, labels, v in samples if name == "ray_cpr_jobs" and labels["WorkerId"] == worker
    }
    assert jobs.get("stopped") == 1.0 and jobs.get("running") == 0.0, jobs
