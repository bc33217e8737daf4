"""`cpr report` draws the cross-influence map of a run's newest blueprint that carries one (schema 1.2): the rank-r
reconstruction as a heatmap and the singular value spectrum with the kept rank marked, in a section of the offline
page. The run is written to a real SQLite MLflow store in a temp dir, its versions published as the controller
publishes them (`record_version`)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from orchestrator.blueprints import build_blueprint, dumps_blueprint
from orchestrator.report.build import render_run
from orchestrator.report.data import RunData, Series
from orchestrator.select.influence import CrossInfluence, cross_influence
from orchestrator.tracking.published import record_version
from orchestrator.tracking.uri import default_tracking_uri
from orchestrator.tracking.writer import RunWriter

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GROUPS = ["embed", "attn.0", "ffn.0", "head"]
BLOCKS = ["code", "prose", "math", "web", "chat", "wiki"]


def influence(rank: int) -> CrossInfluence:
    rng = np.random.default_rng(rank)
    labels = [BLOCKS[i % len(BLOCKS)] for i in range(48)]
    return cross_influence(
        rng.uniform(0.1, 1.0, (48, len(GROUPS))), labels, GROUPS, BLOCKS, rank=rank, block_kind="cluster"
    )


def _blueprint(version: int, step: int, run_id: str, ci: CrossInfluence | None):
    bp = build_blueprint(
        model_id="tiny",
        training_checkpoint=step / 400,
        samples={g: [1.0 + i, 1.2 + i, 0.9 + i] for i, g in enumerate(GROUPS)},
        blueprint_version=version,
        run_id=run_id,
        step=step,
        tokens_seen=step * 100,
        n_resamples=20,
    )
    return replace(bp, cross_influence=ci)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """job-ci: v1 carries a rank-1 map, v2 a rank-3 one, v3 none; the report must draw v2's."""
    root = tmp_path_factory.mktemp("report-influence")
    uri = default_tracking_uri(root)
    w = RunWriter.create(uri, "cpr", "job-ci", {"cpr.job_id": "job-ci"}, artifact_location=str(root / "artifacts"))
    versions: list[int] = []
    for v, step, ci in ((1, 100, influence(1)), (2, 200, influence(3)), (3, 300, None)):
        versions.append(v)
        text = dumps_blueprint(_blueprint(v, step, w.run_id, ci))
        record_version(w, model_id="tiny", version=v, text=text, versions=versions)
    assert w.close("FINISHED", 60)
    return uri


def test_the_report_draws_the_newest_map_and_its_spectrum(cli, store, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = cli("report", "job-ci", "-o", str(out), "--tracking-uri", store)
    assert result.code == 0, result.err
    names = {p.name for p in out.iterdir()}
    assert {"report.html", "cross_influence.png", "cross_influence_spectrum.png", "gradient_mass.png"} <= names
    for png in ("cross_influence.png", "cross_influence_spectrum.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, png
    text = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I), "a network reference"
    assert "<script" not in text.lower()
    assert text.count('src="data:image/png;base64,') == len(list(out.glob("*.png")))
    section = text[text.index('<h2 id="cross-influence">') :]
    assert '<img alt="cross_influence" src="data:image/png;base64,' in section
    assert '<img alt="cross_influence_spectrum" src="data:image/png;base64,' in section
    ci = influence(3)
    assert "From blueprint v2 (step 200)" in section  # v3 carries none: the newest with a map
    assert f"4 groups × 6 cluster blocks (48 windows). Its rank-3 SVD summary keeps {ci.energy:.1%}" in section


def _run(blueprints: list) -> RunData:
    return RunData(
        run_id="r",
        job_id="job-x",
        run_name="",
        status="FINISHED",
        resource="energy_kwh",
        patience=None,
        decision=None,
        reason=None,
        psi=Series(),
        gamma={},
        ratio=Series(),
        eta=Series(),
        checks_below=Series(),
        blueprints=blueprints,
    )


def test_a_run_whose_blueprints_carry_no_map_has_no_section(tmp_path: Path) -> None:
    files = render_run(_run([_blueprint(1, 100, "r", None)]), tmp_path)
    names = {p.name for p in files.pngs}
    assert "gradient_mass.png" in names and not names & {"cross_influence.png", "cross_influence_spectrum.png"}
    assert 'id="cross-influence"' not in files.html.read_text(encoding="utf-8")


def test_a_map_of_one_group_and_full_rank_still_draws(tmp_path: Path) -> None:
    """Degenerate sizes: one group (one singular value, rank 1, energy 1) and a map too wide to name its blocks."""
    blocks = [f"cluster-{j}" for j in range(80)]
    labels = [blocks[i % 80] for i in range(160)]
    ci = cross_influence(np.ones((160, 1)), labels, ["all"], blocks, rank=4, block_kind="cluster")
    assert ci.rank == 1 and ci.energy == 1.0
    files = render_run(_run([_blueprint(1, 100, "r", ci)]), tmp_path)
    assert {"cross_influence.png", "cross_influence_spectrum.png"} <= {p.name for p in files.pngs}
    assert "keeps 100.0% of Σσ²" in files.html.read_text(encoding="utf-8")
