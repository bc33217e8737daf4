"""End to end: `cpr submit +experiment=debug` on real Ray, real DeepSpeed (2 ranks, gloo, ZeRO-2), real codecarbon
and a real SQLite MLflow store in a temp dir. The run must end by the stop rule, and MLflow must hold what the
issue promises. One run is shared by the tests of this module (it takes a minute or two on 2 cores).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from orchestrator.core.ledger import J_PER_KWH, counter_increment

CPR = str(Path(sys.executable).with_name("cpr"))
RUN_METRICS = (
    "train/loss",
    "val/loss",
    "cpr/psi",
    "cpr/ratio",
    "cpr/eta",
    "throughput/tokens_per_s",
    "progress/tokens",
)
KINDS_HERE = ("energy_kwh", "co2_kg", "tokens", "flops", "wall_hours")  # no GPU here: no gpu_hours, vram_gb_hours


def cpr(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CPR, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("submit")
    done = cpr("submit", "+experiment=debug", cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id = next(
        line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("MLflow run id:")
    )
    job_id = next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("job id:"))
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / 'cpr_runs' / 'mlflow.db'}"
    return {
        "work": work,
        "out": done.stdout,
        "run_id": run_id,
        "job_id": job_id,
        "uri": uri,
        "client": MlflowClient(uri),
    }


def test_the_debug_run_stops_by_the_rule(debug_run: dict) -> None:
    run = debug_run["client"].get_run(debug_run["run_id"])
    assert run.data.tags["cpr.decision"] == "stop"
    assert run.data.tags["cpr.reason"] == "marginal_return", debug_run["out"][-2000:]
    assert run.data.tags["cpr.state"] == "stopped" and run.info.status == "FINISHED"
    assert "STOPPED" in debug_run["out"] and "marginal_return" in debug_run["out"]


def test_metrics_are_logged_at_increasing_steps(debug_run: dict) -> None:
    client, run_id = debug_run["client"], debug_run["run_id"]
    for key in (*RUN_METRICS, *(f"cpr/gamma/{k}" for k in KINDS_HERE)):
        history = client.get_metric_history(run_id, key)
        steps = [m.step for m in history]
        assert len(steps) >= 2, key
        assert steps == sorted(steps) and len(set(steps)) == len(steps), key
    assert client.get_metric_history(run_id, "cpr/gamma/gpu_hours") == []  # absent, not zero-filled
    energy = [m.value for m in client.get_metric_history(run_id, "cpr/gamma/energy_kwh")]
    assert energy == sorted(energy) and energy[-1] > 0
    keys = set(client.get_run(run_id).data.metrics)
    assert any(k.startswith("energy/") for k in keys) and any(k.startswith("power/") for k in keys)


def test_tags_name_the_absent_gpu_and_the_artifacts_are_there(debug_run: dict) -> None:
    client, run_id = debug_run["client"], debug_run["run_id"]
    tags = client.get_run(run_id).data.tags
    assert tags["cpr.job_id"] == debug_run["job_id"]
    assert "gpu" in tags["cpr.absent_sources"].lower()
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "decisions.jsonl", "summary.json", "curve.csv", "telemetry.jsonl"} <= names
    params = client.get_run(run_id).data.params
    assert params["stop.window"] == "5" and params["model.name"] == "llama-tiny"


def test_the_ledger_energy_equals_the_telemetry_it_was_fed(debug_run: dict) -> None:
    state = debug_run["work"] / "cpr_runs" / "jobs" / debug_run["job_id"]
    summary = json.loads((state / "summary.json").read_text())
    series: dict[str, list[tuple[float, str, float]]] = defaultdict(list)
    for line in (state / "telemetry.jsonl").read_text().splitlines():
        s = json.loads(line)
        if s["metric"] == "energy_j":
            series[s["source"]].append((s["t_s"], s["sample_id"], s["value"]))
    assert series, "no energy telemetry reached the controller"
    joules = 0.0
    for points in series.values():
        points.sort()
        joules += sum(counter_increment(a[2], b[2], None) for a, b in itertools.pairwise(points))
    assert summary["gamma"]["energy_kwh"] == pytest.approx(joules / J_PER_KWH, rel=1e-9)


def test_the_live_stop_matches_a_replay_of_the_recorded_curve(debug_run: dict) -> None:
    client, run_id, work = debug_run["client"], debug_run["run_id"], debug_run["work"]
    local = Path(client.download_artifacts(run_id, "curve.csv", str(work)))
    rows = list(csv.DictReader(io.StringIO(local.read_text())))
    assert rows and set(KINDS_HERE) <= set(rows[0])
    params = client.get_run(run_id).data.params
    rule = [f"--{k.replace('_', '-')}" for k in ("window", "patience", "min_checks", "eta_rel")]
    values = [params[f"stop.{k}"] for k in ("window", "patience", "min_checks", "eta_rel")]
    flags = [x for pair in zip(rule, values, strict=True) for x in pair]
    replayed = cpr("replay", str(local), "--resource", params["stop.resource"], *flags, "--json", cwd=work)
    assert replayed.returncode == 0, replayed.stderr
    result = json.loads(replayed.stdout)
    summary = json.loads(Path(client.download_artifacts(run_id, "summary.json", str(work))).read_text())
    assert result["stopped"] and result["stop_step"] == summary["decision"]["step"]


def test_a_checkpoint_was_saved_at_the_stop(debug_run: dict) -> None:
    ckpt = Path(
        json.loads((debug_run["work"] / "cpr_runs" / "jobs" / debug_run["job_id"] / "summary.json").read_text())[
            "checkpoint"
        ]
    )
    assert ckpt.is_dir() and any(ckpt.iterdir())


def test_status_lists_the_job_with_its_decision(debug_run: dict) -> None:
    done = cpr("status", "--json", cwd=debug_run["work"])
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    row = next(r for r in rows if r["job_id"] == debug_run["job_id"])
    assert (row["state"], row["decision"], row["reason"]) == ("stopped", "stop", "marginal_return")


def test_stopping_an_ended_job_is_refused(debug_run: dict) -> None:
    done = cpr("stop", debug_run["job_id"], cwd=debug_run["work"])
    assert done.returncode == 2 and "already ended" in done.stderr
