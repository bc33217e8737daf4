"""From probe reports to published blueprint versions (pure): building, metrics, and publishing exactly once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from orchestrator.blueprints import LocalBlueprintStore, load_blueprint
from orchestrator.blueprints.privacy import dp_epsilon
from orchestrator.blueprints.publish import (
    CHECKPOINT_KEY,
    BlueprintSettings,
    blueprint_from_probes,
    probe_metrics,
    publish_once,
    run_dp_releases,
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


def _released(privacy: str, seed: int = 0, noise_multiplier: float = 0.5, **kw):
    settings = BlueprintSettings(
        model_id="m",
        max_tokens=409600,
        n_resamples=50,
        seed=seed,
        privacy=privacy,
        noise_multiplier=noise_multiplier,
        **kw,
    )
    return blueprint_from_probes([_report("general", 1.0)], settings, resource=None, run_id="r", provenance={})


def test_noise_is_added_and_recorded() -> None:
    noisy, clean = _released("noise", noise_clip=1.0), _released("none")
    assert noisy.privacy is not None and noisy.privacy.sigma == pytest.approx(0.5)
    assert clean.privacy is None
    assert [e.gradient_norm for e in noisy.layers] != [e.gradient_norm for e in clean.layers]


@pytest.mark.parametrize("privacy", ["noise", "dp"])
def test_no_config_value_reproduces_the_noise(privacy: str) -> None:
    """The same probes published twice under the same job seed and step get different noise (issue: the noise was
    drawn from job.seed + step, both in the run's records, and could be redrawn and subtracted)."""
    a, b = (_released(privacy, seed=7, noise_multiplier=1e-3, noise_clip=100.0) for _ in range(2))
    assert all(x.gradient_norm != y.gradient_norm for x, y in zip(a.layers, b.layers, strict=True))
    assert a.privacy.release == privacy


def test_dp_versions_of_a_run_compose(tmp_path: Path) -> None:
    """A run's versions release the same validation batches again: ε covers every query the run published."""
    store = LocalBlueprintStore(tmp_path)
    settings = BlueprintSettings(
        model_id="m", max_tokens=409600, n_resamples=50, privacy="dp", noise_multiplier=2.0, dp_delta=1e-6
    )

    def publish(step: int, label: str, run_id: str = "run1"):
        prior = run_dp_releases(store, "m", run_id)
        report = _report("general", 1.0, step=step, label=label)
        bp = blueprint_from_probes(
            [report], settings, resource=None, run_id=run_id, provenance={}, prior_releases=prior
        )
        publish_once(store, bp)
        return bp.privacy

    first, second = publish(100, "0.5"), publish(160, "0.8")
    assert (first.composed_releases, second.composed_releases) == (3, 6)  # three ids per version
    assert second.epsilon == pytest.approx(dp_epsilon(2.0, 6, 1e-6)) and first.epsilon < second.epsilon
    assert run_dp_releases(store, "m", "run1") == 6 and run_dp_releases(store, "m", "run2") == 0
    assert publish(100, "0.5", run_id="run2").composed_releases == 3  # another run is accounted on its own


def test_probe_metrics_are_mean_norms_and_top_k_shares() -> None:
    r = _report("general", 1.0)
    m = probe_metrics(r, top_k=0.1)
    for gid in GROUPS:
        assert m[f"grad/norm/{gid}"] == pytest.approx(math.fsum(r.batch_norms[gid]) / 4)
        share = m[f"grad/topk_share/{gid}"]
        assert 0.1 < share < 1.0  # heavy-tailed: the top 10 % hold more than 10 % of the mass
        assert share == pytest.approx(MagnitudeHistogram.from_dict(r.histograms[gid]).retained_mass(0.1))
    assert 0.1 < m["grad/topk_share"] < 1.0


def test_a_dp_job_logs_no_raw_probe_metrics() -> None:
    """The MLflow run that holds a dp blueprint does not also hold the un-noised norms and shares it withholds."""
    r = _report("general", 1.0)
    assert probe_metrics(r, top_k=0.1, privacy="dp") == {}
    assert probe_metrics(r, top_k=0.1, privacy="noise") == probe_metrics(r, top_k=0.1)


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
