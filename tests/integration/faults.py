"""What the fault tests share: killing a Ray process by its title, and reading a run's metric points back."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import ray


def kill_process(title: str) -> int:
    """SIGKILL a worker process titled `title...` (e.g. "ray::TrainWorker") of this test's Ray instance (started by
    this process: its raylet is our child), not a child the worker forked (which inherits its title); its pid."""
    raylets = {p.pid for p in psutil.Process().children() if p.name() == "raylet"}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith(title) and proc.info["ppid"] in raylets:
            print(f"killing {proc.info['pid']}: {cmdline[:80]}", flush=True)
            os.kill(proc.info["pid"], signal.SIGKILL)
            return int(proc.info["pid"])
    raise AssertionError(f"no process titled {title!r}")


def wait_for_step(controller: Any, job_id: str, step: int, timeout_s: float = 300) -> int:
    """Poll the controller until the job's reported step reaches `step`; returns the step seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = ray.get(controller.view.remote(job_id))["step"]
        if seen >= step:
            return int(seen)
        time.sleep(0.2)
    raise AssertionError(f"{job_id} did not reach step {step} in {timeout_s:.0f} s")


def metric_steps(client: Any, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def duplicated_points(client: Any, run_id: str) -> dict[str, list[int]]:
    """Per metric key of the run, the steps logged more than once (each key is logged once per step here)."""
    run = client.get_run(run_id)
    out = {}
    for key in run.data.metrics:
        counts = Counter(m.step for m in client.get_metric_history(run_id, key))
        if dupes := sorted(step for step, n in counts.items() if n > 1):
            out[key] = dupes
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def energy_kwh_from_log(samples: list[dict[str, Any]]) -> tuple[float, set[str]]:
    """Γ energy recomputed from the controller's telemetry log, independently of the ledger: per source, the sum
    of its counter's increments (these counters never reset here), and the sources seen."""
    series: dict[str, list[tuple[float, str, float]]] = {}
    for s in samples:
        if s["metric"] == "energy_j":
            series.setdefault(s["source"], []).append((s["t_s"], s["sample_id"], s["value"]))
    total = 0.0
    for points in series.values():
        points = sorted(set(points))
        values = [v for _, _, v in points]
        assert all(b >= a for a, b in itertools.pairwise(values)), "a counter went down"
        total += values[-1] - values[0]
    return total / 3.6e6, set(series)
