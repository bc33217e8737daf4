"""`cpr report` against a real SQLite MLflow store in a temp dir: a run written as the controller writes it
(`RunWriter`, a `JobTracker` fed synthetic telemetry and reports, curve.csv, summary.json, published blueprints),
then the PNGs and the self-contained HTML page the command renders from the store alone."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from orchestrator.blueprints import build_blueprint, dumps_blueprint
from orchestrator.core.flops import FlopsModel
from orchestrator.core.gradmass import MagnitudeHistogram
from orchestrator.core.job_tracker import JobTracker
from orchestrator.core.ledger import Metric, TelemetrySample
from orchestrator.core.numbers import json_safe
from orchestrator.core.reports import EvalReport, TrainReport
from orchestrator.core.resource_model import ResourceModel
from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.tracking.published import record_version
from orchestrator.tracking.uri import default_tracking_uri
from orchestrator.tracking.writer import RunWriter
from tests.conftest import assert_one_line_error

T0 = 1_000.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tracker(job_id: str, *, enforce: bool = True) -> JobTracker:
    config = StopRuleConfig(resource=ResourceKind.ENERGY_KWH, window=3, patience=2, eta_rel=0.2)
    return JobTracker(
        job_id=job_id,
        rule_config=config,
        enforce=enforce,
        max_tokens=100_000,
        flops_model=FlopsModel(n_matmul_params=1000, n_layers=2, d_model=16, seq_len=8),
        carbon_intensity_kg_per_kwh=0.4,
        start_t=T0,
    )


def _train(writer: RunWriter, t: JobTracker, checks: int, *, scale: float = 3.0) -> None:
    """As the controller does: telemetry from two sources, a train and an eval report per check, metrics logged at
    the step; at the end the budget/stop, the tags and the artifacts (curve.csv, summary.json)."""
    seen = 0
    for i in range(1, checks + 1):
        s = i * 10
        t.on_telemetry(
            [
                TelemetrySample(sample_id=f"{src}/{k}", source=src, metric=Metric.ENERGY_J, t_s=T0 + k, value=w * k)
                for k in range(seen, s + 1)
                for src, w in (("n/rank0/cpu", 100.0), ("n/rank0/ram", 20.0))
            ]
        )
        seen = s
        step, loss = 10 * i, 2.0 + scale / math.sqrt(i)
        report = TrainReport(step=step, tokens=step * 100, loss=loss + 0.1, lr=1e-3, tokens_per_s=1e4, t_s=T0 + s)
        writer.log_metrics({**t.on_train(report), **t.resource_metrics(T0 + s)}, step)
        out = t.on_eval(EvalReport(step=step, tokens=step * 100, val_loss=loss, t_s=T0 + s))
        writer.log_metrics(out.metrics, step)
        if out.halt:
            break
    if not t.halted:
        t.budget_reached(step=t.last_eval.step, t_s=T0 + seen)
    summary = t.summary()
    writer.set_tags({"cpr.decision": "stop", "cpr.reason": summary["reason"], "cpr.state": "stopped"})
    writer.log_text(t.curve_csv(), "curve.csv")
    writer.log_text(json.dumps(json_safe(summary), indent=2), "summary.json")


def _publish(writer: RunWriter, steps: list[int]) -> None:
    rng = np.random.default_rng(0)
    rm = ResourceModel(
        cost_fixed=2.0, cost_per_param=14.0, optimizer="adamw", precision="fp32", zero_stage=0, dp_world_size=1,
        n_params=10_000,
    )  # fmt: skip
    versions: list[int] = []
    for v, step in enumerate(steps, start=1):
        ids = ["embed", "attn.0", "ffn.0", "head"]
        samples = {k: list(rng.uniform(0.5, 1.5, 4) * (j + 1) / v) for j, k in enumerate(ids)}
        hists = {k: MagnitudeHistogram.of(rng.pareto(1.5 + j, 4000) * 1e-3) for j, k in enumerate(ids)}
        bp = build_blueprint(
            model_id="tiny", training_checkpoint=step / 400, samples=samples, histograms=hists, resource_model=rm,
            blueprint_version=v, run_id=writer.run_id, step=step, tokens_seen=step * 100, n_resamples=50,
        )  # fmt: skip
        versions.append(v)
        record_version(writer, model_id="tiny", version=v, text=dumps_blueprint(bp), versions=versions)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    uri, art = default_tracking_uri(root), str(root / "artifacts")
    runs = {}
    for job_id, scale, enforce, blueprints in (("job-a", 3.0, True, True), ("job-b", 5.0, False, False)):
        tags = {"cpr.job_id": job_id, "cpr.sweep": "sweep-x"}  # as `cpr submit -m` tags a sweep's jobs
        w = RunWriter.create(uri, "cpr", job_id, tags, artifact_location=art)
        w.log_params({"stop.resource": "energy_kwh", "stop.patience": "2", "stop.window": "3"})
        if job_id == "job-b":  # a job whose Ψ is a task score, as `psi=fn` records it
            w.log_params({"psi.kind": "fn", "psi.name": "pass_at_1", "psi.units": "fraction"})
        t = _tracker(job_id, enforce=enforce)
        _train(w, t, 40, scale=scale)
        if blueprints:
            _publish(w, [100, 200, 300])
        assert w.close("FINISHED", 60)
        runs[job_id] = {"run_id": w.run_id, "summary": t.summary()}
    return {"uri": uri, "root": root, "runs": runs}


def _check_page(page: Path, pngs: list[Path]) -> str:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I), "a network reference"
    assert "http://" not in text and "https://" not in text and "<script" not in text.lower()
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, png
    assert text.count('src="data:image/png;base64,') == len(pngs)
    return text


def test_a_run_report_draws_every_figure_and_one_offline_page(cli, store, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = cli("report", "job-a", "-o", str(out), "--tracking-uri", store["uri"])
    assert result.code == 0, result.err
    names = {p.name for p in out.iterdir()}
    assert names == {
        "report.html",
        "psi_gamma.png",
        "psi_gamma_kinds.png",
        "ratio_eta.png",
        "gamma_kinds.png",
        "forecast.png",
        "gradient_mass.png",
        "retained_mass.png",
    }
    assert [Path(line).name for line in result.out.splitlines()][-1] == "report.html"
    text = _check_page(out / "report.html", sorted(out.glob("*.png")))
    summary = store["runs"]["job-a"]["summary"]
    assert summary["reason"] == "marginal_return"
    assert f"stopped at step {summary['decision']['step']} (marginal_return)" in text


def test_by_run_id_and_a_shadow_mode_run_without_blueprints(cli, store, tmp_path: Path) -> None:
    run_b = store["runs"]["job-b"]
    result = cli("report", run_b["run_id"], "-o", str(tmp_path), "--tracking-uri", store["uri"])
    assert result.code == 0, result.err
    assert not (tmp_path / "gradient_mass.png").exists() and (tmp_path / "ratio_eta.png").exists()
    text = _check_page(tmp_path / "report.html", sorted(tmp_path.glob("*.png")))
    rule = run_b["summary"]["rule_decision"]
    assert f"the rule's own STOP (shadow mode) at step {rule['step']}" in text and "No blueprints" in text


def test_a_sweep_compares_its_jobs_on_one_plot_and_a_table(cli, store, tmp_path: Path) -> None:
    result = cli("report", "--sweep", "job-a", "job-b", "-o", str(tmp_path), "--tracking-uri", store["uri"])
    assert result.code == 0, result.err
    text = _check_page(tmp_path / "report.html", [tmp_path / "sweep_psi_gamma.png"])
    assert "job-a" in text and "job-b" in text and "marginal_return" in text
    by_filter = cli(
        "report", "--sweep", "--filter", "tags.`cpr.job_id` LIKE 'job-%'", "-o", str(tmp_path / "f"),
        "--tracking-uri", store["uri"],
    )  # fmt: skip
    assert by_filter.code == 0, by_filter.err
    assert "2 jobs" in (tmp_path / "f" / "report.html").read_text(encoding="utf-8")
    by_id = cli("report", "--sweep", "sweep-x", "--tracking-uri", store["uri"], "-o", str(tmp_path / "s"))
    assert by_id.code == 0, by_id.err
    text = (tmp_path / "s" / "report.html").read_text(encoding="utf-8")
    assert "2 jobs" in text and "job-a" in text and "job-b" in text


def test_the_controller_helper_logs_the_report_as_artifacts_of_the_run(store, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from orchestrator.report import log_run_report, log_sweep_report

    uri = store["uri"]
    w = RunWriter.create(uri, "cpr", "job-c", {"cpr.job_id": "job-c"}, artifact_location=str(store["root"] / "a"))
    w.log_params({"stop.resource": "energy_kwh", "stop.patience": "2"})
    _train(w, _tracker("job-c"), 12)
    files = log_run_report(w, uri, tmp_path / "report")
    sweep = log_sweep_report(w, uri, "sweep-x", tmp_path / "sweep_report")
    assert files is not None and sweep is not None and w.close("FINISHED", 60)
    client = MlflowClient(uri)
    logged = {Path(a.path).name for a in client.list_artifacts(w.run_id, "report")}
    assert logged == {p.name for p in files.all} and "report.html" in logged
    assert {Path(a.path).name for a in client.list_artifacts(w.run_id, "sweep_report")} == {
        "report.html",
        "sweep_psi_gamma.png",
    }
    tags = client.get_run(w.run_id).data.tags
    assert tags["cpr.report"] == "report/report.html" and tags["cpr.sweep_report"] == "sweep_report/report.html"


def test_a_report_that_cannot_be_drawn_is_a_tag_not_an_error(store, tmp_path: Path, monkeypatch) -> None:
    """The store is down when the run ends (a real refused connection): no report, the job's end is not held up
    past the timeout, and the tag saying why reaches the store with the journaled writes once it is back."""
    from mlflow.tracking import MlflowClient

    from orchestrator.report import log_run_report
    from orchestrator.worker.trainer import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as the controller sets it
    uri = store["uri"]
    made = RunWriter.create(uri, "cpr", "job-d", {"cpr.job_id": "job-d"}, artifact_location=str(store["root"] / "a"))
    assert made.flush(30)
    made.stop()
    journal = tmp_path / "state"
    down = RunWriter(MlflowClient(f"http://127.0.0.1:{free_port()}"), made.run_id, made.experiment_id, journal)
    _train(down, _tracker("job-d"), 6)
    assert log_run_report(down, uri, tmp_path / "report", timeout_s=0.5) is None
    assert not (tmp_path / "report").exists()
    down.abandon()  # its thread would retry the dead port for ever, and log into later tests' output
    up = RunWriter.attach(uri, made.run_id, made.experiment_id, journal)  # the store is back: the journal is sent
    assert up.close("FINISHED", 60)
    why = MlflowClient(uri).get_run(made.run_id).data.tags["cpr.report"]
    assert why.startswith("not drawn: RuntimeError: its MLflow writes were still pending"), why


def test_bad_input_is_one_line_and_exit_2(cli, store, tmp_path: Path, capsys) -> None:
    uri = store["uri"]
    assert_one_line_error(cli("report", "no-such-job", "-o", str(tmp_path), "--tracking-uri", uri), "no-such-job")
    other = default_tracking_uri(tmp_path / "other")  # a store that exists, without job-a
    assert RunWriter.create(other, "cpr", "job-x", {"cpr.job_id": "job-x"}).close("FINISHED", 30)
    capsys.readouterr()  # MLflow's own log lines from creating that store
    assert_one_line_error(cli("report", "job-a", "-o", str(tmp_path), "--tracking-uri", other), "job-a")
    missing = default_tracking_uri(tmp_path / "missing")
    assert_one_line_error(cli("report", "job-a", "--tracking-uri", missing), "--tracking-uri")
    assert not (tmp_path / "missing" / "mlflow.db").exists()
    assert_one_line_error(cli("report", "job-a", "job-b", "--tracking-uri", uri), "--sweep")
    assert_one_line_error(cli("report", "--sweep", "--tracking-uri", uri), "--sweep")
    assert_one_line_error(cli("report", "--sweep", "job-a", "--resource", "joules", "--tracking-uri", uri), "joules")
    assert_one_line_error(cli("report", "--sweep", "--filter", "tags.x = ", "--tracking-uri", uri), "--filter")
    assert not list(tmp_path.glob("*.png"))


def test_the_page_says_what_psi_is(cli, store, tmp_path: Path) -> None:
    """Ψ's name and units from the run's psi.* params; a run without them (before `psi=`) is −validation loss."""
    for job_id, label in (("job-a", "Ψ = -val_loss [nats/token]"), ("job-b", "Ψ = pass_at_1 [fraction]")):
        out = tmp_path / job_id
        assert cli("report", job_id, "-o", str(out), "--tracking-uri", store["uri"]).code == 0
        assert label in (out / "report.html").read_text(encoding="utf-8")
