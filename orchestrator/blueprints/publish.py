"""From a training job's gradient probes to published blueprint versions (§5, App. A; docs/blueprints.md).

Pure: the controller passes plain probe reports and job facts in, and writes what comes out to MLflow. A version
is published once per (run, step, checkpoint): publishing again, e.g. after a controller restart replays its
reports, finds the version already in the store and returns it instead of adding a duplicate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.blueprints.builder import GENERAL_DOMAIN, build_blueprint
from orchestrator.blueprints.grouping import ParamGroup
from orchestrator.blueprints.model import Blueprint
from orchestrator.blueprints.privacy import add_gaussian_noise, dp_release
from orchestrator.blueprints.store import LocalBlueprintStore
from orchestrator.blueprints.tailfit import FitPolicy
from orchestrator.core.gradmass import MagnitudeHistogram
from orchestrator.core.reports import ProbeReport
from orchestrator.core.resource_model import ResourceModel

CHECKPOINT_KEY = "checkpoint"
"""Provenance key holding the checkpoint label ("0.5", "1.0", "stop"): with run_id and step, a version's identity."""


@dataclass(frozen=True, kw_only=True)
class BlueprintSettings:
    """How probe reports become a blueprint: the `probe` config group's summary settings, plus job facts."""

    model_id: str
    max_tokens: int
    statistic: str = "mean"
    ci_level: float = 0.95
    n_resamples: int = 1000
    fit_method: str = "binned-mle"
    fit_policy: FitPolicy = field(default_factory=FitPolicy)
    seed: int = 0
    """Seeds the bootstrap's resampling only; privacy noise always comes from the OS's entropy."""
    privacy: str = "none"
    """none | noise | dp (docs/blueprints.md "Privacy")."""
    noise_multiplier: float = 0.0
    noise_clip: float = 1.0
    dp_delta: float = 1e-5


def probe_metrics(report: ProbeReport, top_k: float, *, privacy: str = "none") -> dict[str, float]:
    """MLflow metrics of one probe: per submodule its mean gradient norm over batches (grad/norm/<id>) and the
    share of its gradient mass in its top-k fraction of entries, m(k) (grad/topk_share/<id>; §4.1), and m(k) of
    the whole model. None under privacy dp: they are the un-noised statistics a dp blueprint withholds, and the run
    that would hold them also holds the blueprints."""
    out: dict[str, float] = {}
    if privacy == "dp":
        return out
    hists = []
    for gid in report.ids:
        norms = report.batch_norms[gid]
        out[f"grad/norm/{gid}"] = math.fsum(norms) / len(norms)
        h = MagnitudeHistogram.from_dict(report.histograms[gid])
        if h.count:
            out[f"grad/topk_share/{gid}"] = float(h.retained_mass(top_k))
        hists.append(h)
    if hists:
        merged = MagnitudeHistogram.empty(hists[0].spec)
        for h in hists:  # in place: one model-wide histogram, not one new one per submodule
            merged.merge_in(h)
        if merged.count:
            out["grad/topk_share"] = float(merged.retained_mass(top_k))
    return out


def report_groups(report: ProbeReport) -> dict[str, ParamGroup]:
    """The blueprint ids of a probe report with their prefixes and parameter counts, in model order."""
    return {
        gid: ParamGroup(id=gid, prefixes=tuple(g["prefixes"]), n_params=int(g["n_params"]))
        for gid, g in report.groups.items()
    }


def blueprint_from_probes(
    reports: Sequence[ProbeReport],
    settings: BlueprintSettings,
    *,
    resource: ResourceModel | None,
    run_id: str | None,
    provenance: Mapping[str, str | int | float | bool],
    created_at: str | None = None,
    prior_releases: int = 0,
) -> Blueprint:
    """A blueprint from one checkpoint's probes: the general set's per-batch norms and histograms, each domain's
    mean norms as `domain_tags` relative to the general set (App. A.1 (vi)), released as `settings.privacy` says
    (§5 "Privacy"); a dp release composes its queries with the `prior_releases` of the run's earlier versions."""
    general = next((r for r in reports if r.domain == GENERAL_DOMAIN), None)
    if general is None:
        raise ValueError("a blueprint needs the probe of the general validation set")
    domain_norms = {
        r.domain: {gid: math.fsum(v) / len(v) for gid, v in r.batch_norms.items()}
        for r in reports
        if r.domain != GENERAL_DOMAIN
    }
    bp = build_blueprint(
        model_id=settings.model_id,
        training_checkpoint=round(min(general.tokens / settings.max_tokens, 1.0), 6),
        samples=general.batch_norms,
        histograms={gid: MagnitudeHistogram.from_dict(h) for gid, h in general.histograms.items()},
        groups=report_groups(general),
        resource_model=resource,
        statistic=settings.statistic,
        ci_level=settings.ci_level,
        n_resamples=settings.n_resamples,
        seed=settings.seed,
        domain_norms=domain_norms or None,
        run_id=run_id,
        step=general.step,
        tokens_seen=general.tokens,
        provenance={**provenance, CHECKPOINT_KEY: general.label or ""},
        fit_method=settings.fit_method,
        fit_policy=settings.fit_policy,
        created_at=created_at,
    )
    if settings.privacy == "noise":
        bp = add_gaussian_noise(bp, clip=settings.noise_clip, noise_multiplier=settings.noise_multiplier)
    elif settings.privacy == "dp":
        bp = dp_release(
            bp,
            general.batch_norms,
            clip=settings.noise_clip,
            noise_multiplier=settings.noise_multiplier,
            delta=settings.dp_delta,
            prior_releases=prior_releases,
        )
    elif settings.privacy != "none":
        raise ValueError(f"unknown privacy mode {settings.privacy!r}")
    return bp


def run_dp_releases(store: LocalBlueprintStore, model_id: str, run_id: str | None) -> int:
    """The Gaussian queries this run's published dp versions composed so far (each version's count is cumulative)."""
    counts = [0]
    for version in store.versions(model_id):
        old = store.get(model_id, version)
        if old.run_id == run_id and old.privacy is not None and old.privacy.composed_releases is not None:
            counts.append(old.privacy.composed_releases)
    return max(counts)


def published_version(store: LocalBlueprintStore, bp: Blueprint) -> int | None:
    """The version already holding this run's blueprint of this step and checkpoint, if any."""
    label = (bp.provenance or {}).get(CHECKPOINT_KEY)
    for version in store.versions(bp.model_id):
        old = store.get(bp.model_id, version)
        if old.run_id == bp.run_id and old.step == bp.step and (old.provenance or {}).get(CHECKPOINT_KEY) == label:
            return version
    return None


def publish_once(store: LocalBlueprintStore, bp: Blueprint) -> tuple[int, Path, bool]:
    """Publish `bp` as the model's next version unless it is already published: (version, file, fresh)."""
    version = published_version(store, bp)
    if version is not None:
        return version, store.path(bp.model_id, version), False
    version, path = store.publish(bp)
    return version, path, True
