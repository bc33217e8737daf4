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
