"""`cpr select` end to end (real Ray ranks, the base's real checkpoint, SQLite MLflow in a temp dir): a short debug
pretraining job is the base; its corpus is scored, a manifest written and logged, the cross-influence map published
in a new version of the base's blueprint and drawn by `cpr report`; a job trains on the manifest through
`data.selection`, and `cpr adapt` chooses its submodules from the map of the kept blocks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import cpr

pytestmark = pytest.mark.integration

BASE = ("+experiment=debug", "stop=shadow", "train.max_tokens=65536")  # 64 steps
CORPUS = ("+experiment=debug", "data.max_files=60")
"""The base's data config (the debug corpus), cut to 60 files: scoring it takes seconds."""


@pytest.fixture(scope="module")
def selected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("select")
    done = cpr("submit", *BASE, cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = re.search(r"^job id: (\S+)", done.stdout, re.M).group(1)  # type: ignore[union-attr]
    sel = cpr("select", job_id, *CORPUS, "select.sample=160", "select.fraction=0.3", cwd=work)
    assert sel.returncode == 0, sel.stdout[-3000:] + sel.stderr[-3000:]
    manifest = Path(re.search(r"^  manifest: (\S+)", sel.stdout, re.M).group(1))  # type: ignore[union-attr]
    select_id = re.search(r"\(job (select-\S+), run", sel.stdout).group(1)  # type: ignore[union-attr]
    return {"work": work, "job_id": job_id, "out": sel.stdout, "manifest": manifest, "select_id": select_id}


def test_the_manifest_keeps_the_top_fraction_of_the_scored_windows(selected: dict[str, Any]) -> None:
    from orchestrator.select import load_manifest

    m = load_manifest(selected["manifest"])
    n = len(m.windows)
    assert m.kept.sum() == int(np.ceil(0.3 * n))
    assert m.scores[m.kept].min() >= m.scores[~m.kept].max()  # the top q by score
    assert m.base["job_id"] == selected["job_id"]
    p = m.predictor or {}
    assert p["n_holdout"] == 40 and p["n_fit"] == 120 and -1 <= p["spearman"] <= 1
    assert m.length_bias is not None and abs(m.length_bias["rho_after"]) <= abs(m.length_bias["rho_before"]) + 0.05
    assert "Spearman ρ" in selected["out"] and "forward pass" in selected["out"]


def test_the_run_and_the_blueprint_carry_the_selection_and_the_map(selected: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    from orchestrator.blueprints import LocalBlueprintStore
    from orchestrator.select import load_manifest

    work = selected["work"]
    client = MlflowClient(f"sqlite:///{work / 'cpr_runs' / 'mlflow.db'}")
    m = load_manifest(selected["manifest"])
    run = client.get_run(m.provenance["run_id"])
    assert run.data.tags["cpr.selection"] == m.id and run.info.status == "FINISHED"
    assert run.data.metrics["select/predictor_spearman"] == pytest.approx(m.predictor["spearman"])
    logged = Path(client.download_artifacts(run.info.run_id, "selection/manifest.json", str(work)))
    assert json.loads(logged.read_text())["id"] == m.id
    store = LocalBlueprintStore(work / "cpr_runs" / "blueprints")
    bp = store.get(selected["job_id"])  # the newest version: the one cpr select published
    assert bp.cross_influence is not None and bp.schema_version == "1.2"
    assert set(bp.cross_influence.groups) == {e.id for e in bp.layers}
    assert bp.cross_influence.to_dict() == m.cross_influence
    report = cpr("report", selected["select_id"], "-o", str(work / "report"), cwd=work)
    assert report.returncode == 0, report.stderr[-2000:]
    page = (work / "report" / "report.html").read_text()
    assert 'id="cross-influence"' in page


def test_a_job_trains_on_the_kept_windows(selected: dict[str, Any]) -> None:
    """`cpr submit` tokenizes with the manifest's tokenizer (the base's) when data.tokenizer is not set, so the
    selection indexes its corpus; the run records the selection."""
    from mlflow.tracking import MlflowClient

    from orchestrator.select import load_manifest

    m = load_manifest(selected["manifest"])
    done = cpr(
        "submit", *CORPUS, f"data.selection={selected['manifest']}", "train.max_tokens=16384",
        "train.warmup_steps=4", "stop=shadow", "probe=off", cwd=selected["work"],
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id = re.search(r"^MLflow run id: (\S+)", done.stdout, re.M).group(1)  # type: ignore[union-attr]
    run = MlflowClient(f"sqlite:///{selected['work'] / 'cpr_runs' / 'mlflow.db'}").get_run(run_id)
    assert run.data.params["data.tokenizer"] == m.corpus["tokenizer"]
    assert m.id in json.dumps(run.data.params)


def test_adapt_chooses_its_submodules_from_the_map_of_the_kept_blocks(selected: dict[str, Any]) -> None:
    from orchestrator.select import load_manifest

    m = load_manifest(selected["manifest"])
    adapt = cpr(
        "adapt", selected["job_id"], *CORPUS, f"data.selection={selected['manifest']}", "train.max_tokens=16384",
        "train.warmup_steps=4", "stop=shadow", "adapt.max_fraction=0.4", cwd=selected["work"],
    )  # fmt: skip
    assert adapt.returncode == 0, adapt.stdout[-3000:] + adapt.stderr[-3000:]
    job_id = re.search(r"^job id: (\S+)", adapt.stdout, re.M).group(1)  # type: ignore[union-attr]
    summary = json.loads((selected["work"] / "cpr_runs" / "jobs" / job_id / "summary.json").read_text())
    assert summary["adapt"]["blueprint"].endswith(f"-joint-{m.id}.json")
    assert "joint selection" in adapt.stdout
