"""From probe reports to published blueprint versions (pure): building, metrics, and publishing exactly once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from orchestrator.blueprints import LocalBlueprintStore, load_blueprint
from orchestrator.blueprints.publish import (
    CHECKPOINT_KEY,
    BlueprintSettings,
    blueprint_from_probes,
    probe_metrics,
    publish_once,
)
from orchestrator.core.gradmass import HistogramSpec, MagnitudeHistogram
from orchestrator.core.reports import ProbeReport
from orchestrator.core.resource_model import resource_model

SPEC = HistogramSpec(lo=1e-8, hi=1e2, bins_per_decade=4)
GROUPS = {
    "embed": {"prefixes": ["model.embed_tokens."], "n_params": 4000},
    "attn.0": {"prefixes": ["model.layers.0.self_attn."], "n_params": 2000},
    "head": {"prefixes": ["lm_head."], "n_params": 4000},
}


def _report(domain: str, scale: float, *, step: int = 100, label: str | None = "0.5", seed: int = 0) -> ProbeReport:
    rng = np.random.default_rng(seed)
    norms, hists = {}, {}
    for i, (gid, g) in enumerate(GROUPS.items()):
        grads = [scale * (i + 1) * rng.pareto(1.5, g["n_params"]) * 1e-3 for _ in range(4)]
        norms[gid] = [float(np.linalg.norm(x)) for x in grads]
        hists[gid] = MagnitudeHistogram.of(np.concatenate(grads), SPEC).to_dict()
    return ProbeReport(
        step=step, tokens=step * 2048, domain=domain, label=label, ids=list(GROUPS), groups=GROUPS,
        batch_norms=norms, histograms=hists,
    )  # fmt: skip


SETTINGS = BlueprintSettings(model_id="llama-2m-run1", max_tokens=409600, n_resamples=200)
RESOURCE = resource_model(n_params=10000, optimizer="adamw", precision="fp32", zero_stage=2, dp_world_size=2)


def _blueprint(reports, run_id="run1"):
    return blueprint_from_probes(
        reports, SETTINGS, resource=RESOURCE, run_id=run_id, provenance={"job_id": "j1", "config_sha256": "ab"}
    )


def test_blueprint_carries_statistic_fit_k_star_prefixes_domains_and_provenance() -> None:
    bp = _blueprint([_report("general", 1.0), _report("code", 2.0, seed=1)])
    assert bp.model_id == "llama-2m-run1" and bp.training_checkpoint == 0.5
    assert (bp.step, bp.tokens_seen, bp.run_id) == (100, 204800, "run1")
    assert bp.provenance == {"job_id": "j1", "config_sha256": "ab", CHECKPOINT_KEY: "0.5"}
    assert [e.id for e in bp.layers] == list(GROUPS)
    general, code = _report("general", 1.0), _report("code", 2.0, seed=1)
    for e in bp.layers:
        assert e.gradient_norm == pytest.approx(np.mean(general.batch_norms[e.id]))
        assert e.ci is not None and e.ci.low <= e.gradient_norm <= e.ci.high
        assert e.prefixes == tuple(GROUPS[e.id]["prefixes"]) and e.n_params == GROUPS[e.id]["n_params"]
        assert e.alpha is not None and e.gamma == pytest.approx(1 - e.alpha / (1 + e.alpha))
        assert e.k_star is not None and e.fit is not None and e.fit.error is None
        # App. A.1 (vi): the domain's mean norm relative to the general set's
        ratio = np.mean(code.batch_norms[e.id]) / np.mean(general.batch_norms[e.id])
        assert e.domain_tags == {"general": 1.0, "code": pytest.approx(ratio)}
    assert bp.resource_model.zero_stage == 2 and bp.resource_model.dp_world_size == 2


def test_a_blueprint_needs_the_general_set() -> None:
    with pytest.raises(ValueError, match="general"):
        _blueprint([_report("code", 1.0)])


def test_noise_is_added_and_recorded() -> None:
    noisy = blueprint_from_probes(
        [_report("general", 1.0)],
        BlueprintSettings(model_id="m", max_tokens=409600, n_resamples=50, noise_multiplier=0.5, noise_clip=1.0),
        resource=None,
        run_id="r",
        provenance={},
    )
    clean = blueprint_from_probes(
        [_report("general", 1.0)],
        BlueprintSettings(model_id="m", max_tokens=409600, n_resamples=50),
        resource=None,
        run_id="r",
        provenance={},
    )
    assert noisy.privacy is not None and noisy.privacy.sigma == pytest.approx(0.5)
    assert clean.privacy is None
    assert [e.gradient_norm for e in noisy.layers] != [e.gradient_norm for e in clean.layers]


def test_probe_metrics_are_mean_norms_and_top_k_shares() -> None:
    r = _report("general", 1.0)
    m = probe_metrics(r, top_k=0.1)
    for gid in GROUPS:
        assert m[f"grad/norm/{gid}"] == pytest.approx(math.fsum(r.batch_norms[gid]) / 4)
        share = m[f"grad/topk_share/{gid}"]
        assert 0.1 < share < 1.0  # heavy-tailed: the top 10 % hold more than 10 % of the mass
        assert share == pytest.approx(MagnitudeHistogram.from_dict(r.histograms[gid]).retained_mass(0.1))
    assert 0.1 < m["grad/topk_share"] < 1.0


def test_publish_once_never_publishes_a_checkpoint_twice(tmp_path: Path) -> None:
    store = LocalBlueprintStore(tmp_path)
    v1, p1, fresh1 = publish_once(store, _blueprint([_report("general", 1.0, step=100, label="0.5")]))
    v2, _, fresh2 = publish_once(store, _blueprint([_report("general", 1.0, step=160, label="0.8")]))
    assert (v1, fresh1, v2, fresh2) == (1, True, 2, True)
    before = p1.read_bytes()
    # A restarted controller replays the 0.5 checkpoint's probe: a new store object, a rebuilt blueprint.
    again, path, fresh = publish_once(LocalBlueprintStore(tmp_path), _blueprint([_report("general", 1.0)]))
    assert (again, fresh, path) == (1, False, p1)
    assert store.versions("llama-2m-run1") == [1, 2]
    assert p1.read_bytes() == before  # the published file is never rewritten
    # The same step of another run is a different blueprint.
    v3, _, fresh3 = publish_once(store, _blueprint([_report("general", 1.0)], run_id="run2"))
    assert (v3, fresh3) == (3, True)
    doc = json.loads(store.path("llama-2m-run1", 3).read_text())
    assert doc["blueprint_version"] == 3 and load_blueprint(store.path("llama-2m-run1", 3)).run_id == "run2"
