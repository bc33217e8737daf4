"""The controller's live metrics from a real job: `cpr submit +experiment=debug detach=true` starts a `ray start`
head with `cluster.metrics_export_port`, and Prometheus scrapes of that head's metrics agent show the job running
(with its throughput, power and energy) while it trains, then its STOP and final state. Stopped with `ray stop`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.test_ui import free_port
from tests.conftest import cpr
from tests.integration.test_metrics_export import Samples, read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head():
    yield
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True, timeout=120)


def wait_for(port: int, seen: Callable[[Samples], bool], deadline_s: float) -> Samples:
    """Scrape until `seen(samples)` holds; the last scrape either way."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            samples = read_metrics(port)
        except OSError:  # the agent is not up yet
            samples = {}
        if seen(samples) or time.monotonic() > end:
            return samples
        time.sleep(0.5)


def test_a_live_job_is_scraped_while_it_trains_and_after_its_stop(tmp_path: Path, monkeypatch, ray_head) -> None:
    port = free_port()
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")  # Ray's default is 10 s: a debug job lasts ~30 s
    done = cpr("submit", "+experiment=debug", "detach=true", f"cluster.metrics_export_port={port}", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job_id = next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("job id:"))
    job = (("job_id", job_id),)

    def training(s: Samples) -> bool:
        return (
            s.get(("ray_cpr_jobs", (("state", "running"),))) == 1
            and s.get(("ray_cpr_tokens_per_second", job), 0) > 0
            and ("ray_cpr_energy_kwh_total", job) in s
        )

    live = wait_for(port, training, deadline_s=240)
    assert training(live), sorted(live.items())
    assert live["ray_cpr_power_watts", job] >= 0 and live["ray_cpr_energy_kwh_total", job] > 0

    stop = (("action", "stop"), ("job_id", job_id), ("reason", "marginal_return"))

    def stopped(s: Samples) -> bool:
        return s.get(("ray_cpr_jobs", (("state", "stopped"),))) == 1 and s.get(("ray_cpr_decisions_total", stop)) == 1

    end = wait_for(port, stopped, deadline_s=400)
    assert stopped(end), sorted(end.items())
    assert end["ray_cpr_jobs", (("state", "running"),)] == 0
    assert end["ray_cpr_ratio", job] > 0 and end["ray_cpr_eta", job] > end["ray_cpr_ratio", job]  # why it stopped
    kinds = {dict(labels).get("kind") for name, labels in end if name == "ray_cpr_gamma"}
    assert {"energy_kwh", "tokens", "flops"} <= kinds
