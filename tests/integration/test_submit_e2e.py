"""End to end: `cpr submit +experiment=debug` on real Ray, real DeepSpeed (2 ranks, gloo, ZeRO-2), real codecarbon
and a real SQLite MLflow store in a temp dir. The run must end by the stop rule, and MLflow must hold what the
issue promises. One run (`debug_run`, tests/conftest.py) is shared by the tests of this module (it takes a
minute or two on 2 cores).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from orchestrator.core.ledger import J_PER_KWH, counter_increment
from tests.conftest import CPR, cpr

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


def test_the_controller_attached_the_cpr_report_to_the_run(debug_run: dict) -> None:
    client, run_id = debug_run["client"], debug_run["run_id"]
    assert client.get_run(run_id).data.tags["cpr.report"] == "report/report.html"
    report = {a.path.removeprefix("report/") for a in client.list_artifacts(run_id, "report")}
    # the debug run publishes blueprints: every figure but the forecast, which needs the saturating fit to succeed
    assert {"report.html", "psi_gamma.png", "ratio_eta.png", "gamma_kinds.png", "gradient_mass.png"} <= report
    assert {"psi_gamma_kinds.png", "retained_mass.png"} <= report


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


def test_blueprints_were_published_at_the_checkpoints_and_the_stop(debug_run: dict) -> None:
    from orchestrator.blueprints import LocalBlueprintStore, load_blueprint

    client, run_id, job_id = debug_run["client"], debug_run["run_id"], debug_run["job_id"]
    tags = client.get_run(run_id).data.tags
    assert tags["cpr.blueprint.model_id"] == job_id
    versions = [int(v) for v in tags["cpr.blueprint.versions"].split(",")]
    # debug: checkpoints at 3 % and 5 % of the budget (steps 31, 52), then the rule's STOP (the decision), then the
    # end of its learning-rate cool-down
    assert versions == [1, 2, 3, 4] and tags["cpr.blueprint.latest"] == "4"
    store = LocalBlueprintStore(debug_run["work"] / "cpr_runs" / "blueprints")
    assert store.versions(job_id) == versions
    summary = json.loads((debug_run["work"] / "cpr_runs" / "jobs" / job_id / "summary.json").read_text())
    labels = [(b["checkpoint"], b["step"]) for b in summary["blueprints"]]
    decided, cooled = summary["decision"]["step"], summary["cooldown"]["end_step"]
    assert labels == [("0.03", 31), ("0.05", 52), ("decision", decided), ("stop", cooled)]
    assert cooled == summary["step"] > decided > 52
    for v in versions:
        local = store.path(job_id, v)
        remote = Path(client.download_artifacts(run_id, f"blueprints/v{v}/blueprint.json", str(debug_run["work"])))
        assert remote.read_bytes() == local.read_bytes()  # MLflow holds exactly the published file
        bp = load_blueprint(remote)  # validates against the JSON Schema
        assert (bp.blueprint_version, bp.run_id, bp.model_id) == (v, run_id, job_id)
        assert {e.id for e in bp.layers} == {"embed", "attn.0", "ffn.0", "norm.0", "attn.1", "ffn.1", "norm.1",
                                              "norm.final", "head"}  # fmt: skip
        for e in bp.layers:
            # 1 or 2 batches per rank (probe.batches=2), as the probe's share of the time allows, on both ranks alike.
            assert e.gradient_norm > 0 and e.n_batches in (2, 4) and e.prefixes and e.k_star is not None
            assert set(e.domain_tags) == {"general", "tests", "docs"}
        assert bp.resource_model.zero_stage == 2 and bp.resource_model.dp_world_size == 2
        assert bp.provenance["config_sha256"] and bp.provenance["checkpoint"] == labels[v - 1][0]
    assert "blueprints: v1 (0.03, step 31)" in debug_run["out"]
    listed = cpr("blueprint", "list", "--run", job_id, "--json", cwd=debug_run["work"])
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["version"] for line in listed.stdout.splitlines()] == versions
    got = subprocess.run([CPR, "blueprint", "get", job_id], cwd=debug_run["work"], capture_output=True, timeout=120)
    assert got.returncode == 0 and got.stdout == store.path(job_id, versions[-1]).read_bytes()


def test_probe_metrics_are_logged(debug_run: dict) -> None:
    client, run_id = debug_run["client"], debug_run["run_id"]
    steps = [m.step for m in client.get_metric_history(run_id, "grad/norm/attn.0")]
    # Each checkpoint (31, 52), and a periodic probe whenever none ran for probe.interval (50) steps.
    assert steps[:2] == [31, 52] and steps == sorted(set(steps))
    assert all(b - a <= 50 for a, b in itertools.pairwise(steps))
    shares = client.get_metric_history(run_id, "grad/topk_share/ffn.0")
    assert len(shares) == len(steps) and all(0.1 < m.value <= 1.0 for m in shares)
