"""`cpr leaderboard` against a real SQLite MLflow store of three hand-written runs (two on one evaluation set, one
`cpr select` run): it ranks them, and every bad input is one line naming the field, exit 2, nothing written."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from orchestrator.tracking.uri import default_tracking_uri
from orchestrator.tracking.writer import RunWriter
from tests.cli.conftest import refused, run_cli


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("leaderboard-store")
    uri = default_tracking_uri(root)
    for job, psi, kwh, kind in (("job-a", -3.0, 0.002, None), ("job-b", -2.5, 0.004, None), ("sel", -9.0, 1, "select")):
        tags = {"cpr.job_id": job, "cpr.psi.name": "-val_loss", "cpr.psi.units": "nats/token"}
        tags |= {"cpr.kind": kind} if kind else {}
        w = RunWriter.create(uri, "cpr", job, tags, artifact_location=str(root / "artifacts"))
        w.log_params({"cpr.eval_set": "abc123", "model.vocab_size": "512", "cluster.num_workers": "2"})
        w.log_metrics({"cpr/psi": psi - 1.0, "cpr/gamma/energy_kwh": kwh / 2, "cpr/gamma/tokens": 100.0}, 10)
        w.log_metrics({"cpr/psi": psi, "cpr/gamma/energy_kwh": kwh, "cpr/gamma/tokens": 200.0}, 20)
        assert w.close("FINISHED", 60)
    return uri


def test_it_ranks_the_training_runs(store: str) -> None:
    got = run_cli("leaderboard", "--tracking-uri", store, "--format", "csv")
    assert got.code == 0, got.err
    rows = list(csv.DictReader(io.StringIO(got.out)))
    assert [(r["rank"], r["job_id"], r["eval_set"]) for r in rows] == [
        ("1", "job-a", "abc123"),
        ("2", "job-b", "abc123"),
    ]
    named = run_cli("leaderboard", "--tracking-uri", store, "--format", "md", "--baseline", "job-a", "--by", "tokens")
    assert named.code == 0 and "| 1 | job-b |" in named.out and "run job-a" in named.out
    assert "sel (select)" in named.out


@pytest.mark.parametrize(
    ("field", "argv"),
    [
        ("--by", ["--by", "watts"]),
        ("--by", ["--by", "gpu_hours"]),
        ("--experiment", ["--experiment", "nope"]),
        ("--filter", ["--filter", "tags.`cpr.model` =="]),
        ("--baseline", ["--baseline", "no-such-run"]),
        ("--format", ["--format", "pdf"]),
    ],
)
def test_bad_input_is_one_line(store: str, tmp_path: Path, monkeypatch, field: str, argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    refused(tmp_path, field, "leaderboard", "--tracking-uri", store, "-o", str(tmp_path / "out.md"), *argv)
