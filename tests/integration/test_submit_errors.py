"""`cpr submit` refuses what it cannot run — one line naming the field, exit 2 — before a job or run exists."""

from __future__ import annotations

import pytest

from tests.conftest import assert_one_line_error

DEBUG = "+experiment=debug"


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    return tmp_path


def nothing_started(root) -> None:
    """No job state, no checkpoint, no MLflow run."""
    runs = root / "cpr_runs"
    assert not (runs / "jobs").exists() and not (runs / "checkpoints").exists()
    db = runs / "mlflow.db"
    if db.exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{db}")
        exp = client.get_experiment_by_name("cpr")
        assert exp is None or not client.search_runs([exp.experiment_id])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["data=text_dir", "data.path=/no/such/folder"], "data.path"),
        (["data=text_dir", "data.path=EMPTY"], "data.path"),
        (["data=text_dir"], "data.path"),
        (["tracking.uri=http://127.0.0.1:9"], "tracking.uri"),
        (["tracking.uri=sqlite:////no/such/dir/at/all/mlflow.db"], "tracking.uri"),
        (["model=llama-125m", "cluster.memory_gb_per_worker=0.5"], "model"),
        (["telemetry.country_iso_code=ZZZ"], "telemetry.country_iso_code"),
        (["cluster.address=127.0.0.1:9"], "cluster.address"),
        (["cluster.num_workers=64"], "cluster.num_workers"),
    ],
)
def test_refused_before_anything_starts(cli, here, overrides: list[str], field: str) -> None:
    overrides = [o.replace("EMPTY", str(here / "empty")) for o in overrides]
    result = cli("submit", DEBUG, *overrides)
    assert_one_line_error(result, f"error: {field}")
    nothing_started(here)


def test_a_histogram_range_too_narrow_for_the_gradients_is_one_line(tmp_path) -> None:
    """Only the run meets this one: the first probe sees gradients at or above probe.histogram.hi, every rank
    stops there, and `cpr submit` says so in one line with exit 2 (the run records the failure)."""
    import subprocess
    import sys
    from pathlib import Path

    cpr = str(Path(sys.executable).with_name("cpr"))
    done = subprocess.run(
        [cpr, "submit", DEBUG, "probe.histogram.hi=1e-6", "probe.interval=1", "telemetry=off"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.startswith("cpr: error: probe.histogram.hi:") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
