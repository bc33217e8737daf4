"""One blueprint version from a probe at a blueprint checkpoint: built, validated and published in the local store
(immutable, idempotent per content), then recorded in the job's run (`state.RecordBlueprint`)."""

from __future__ import annotations

import hashlib
from typing import Any

from orchestrator.blueprints.publish import BlueprintSettings, blueprint_from_probes, publish_once, run_dp_releases
from orchestrator.blueprints.tailfit import FitPolicy
from orchestrator.config.compose import job_to_yaml
from orchestrator.controller.events import BlueprintPublished
from orchestrator.controller.handles import JobHandle
from orchestrator.core.reports import ProbeReport


def publish_blueprint(h: JobHandle, reports: list[ProbeReport]) -> BlueprintPublished:
    """Build and publish the blueprint of these probe reports (the general set and every domain); the event says
    which version it is and whether this call published it."""
    job = h.job
    general = next(r for r in reports if r.domain == "general")
    n_params = sum(int(g["n_params"]) for g in general.groups.values())
    p = job.probe
    settings = BlueprintSettings(
        model_id=p.model_id or h.job_id,
        max_tokens=job.train.max_tokens,
        statistic=p.statistic,
        ci_level=p.ci_level,
        n_resamples=p.n_resamples,
        fit_method=p.fit_method,
        fit_policy=FitPolicy(min_tail=p.fit_min_tail, min_tail_share=p.fit_min_tail_share, p_level=p.fit_p_level),
        seed=job.seed,
        privacy=str(p.privacy),
        noise_multiplier=p.noise_multiplier,
        noise_clip=p.noise_clip,
        dp_delta=p.dp_delta,
    )
    world = h.entry.record.world or job.cluster.num_workers
    provenance: dict[str, Any] = {
        "job_id": h.job_id,
        "config_sha256": hashlib.sha256(job_to_yaml(job).encode()).hexdigest(),
        "model": job.model.name,
        "data": job.data.name,
        "zero_stage": job.deepspeed.zero_stage,
        "world_size": world,
        "probe_batches": len(next(iter(general.batch_norms.values()))),
    }
    run_id = h.writer.run_id
    bp = blueprint_from_probes(
        reports,
        settings,
        resource=job.resized(world).resource_model(n_params),
        run_id=run_id,
        provenance=provenance,
        prior_releases=0 if p.privacy != "dp" else run_dp_releases(h.blueprint_store, settings.model_id, run_id),
    )
    version, path, fresh = publish_once(h.blueprint_store, bp)
    record = {
        "version": version,
        "step": general.step,
        "tokens": general.tokens,
        "checkpoint": general.label,
        "path": str(path),
    }
    return BlueprintPublished(h.job_id, record, fresh, settings.model_id)
