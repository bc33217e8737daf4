"""A dp job end to end (`cpr submit +experiment=debug probe.privacy=dp`, real Ray, DeepSpeed and SQLite MLflow): its
blueprints state (ε, δ) for every query the run released, keep only noised norms and public fields, and its MLflow
run holds no un-noised probe statistics (docs/blueprints.md "Privacy")."""

from __future__ import annotations

import json

from orchestrator.blueprints import SCHEMA_VERSION, LocalBlueprintStore, blueprint_to_dict, dp_epsilon, load_blueprint
from orchestrator.blueprints.privacy import DP_NOISED_LAYER_FIELDS, DP_PUBLIC_LAYER_FIELDS
from tests.conftest import cpr


def test_a_dp_job_publishes_accounted_blueprints_and_no_raw_probe_metrics(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    z, clip, delta = 4.0, 2.0, 1e-6
    done = cpr(
        "submit",
        "+experiment=debug",
        "probe.privacy=dp",
        f"probe.noise_multiplier={z}",
        f"probe.noise_clip={clip}",
        f"probe.dp_delta={delta}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout.splitlines()
    run_id = next(line.split(":", 1)[1].strip() for line in out if line.startswith("MLflow run id:"))
    job_id = next(line.split(":", 1)[1].strip() for line in out if line.startswith("job id:"))
    store = LocalBlueprintStore(tmp_path / "cpr_runs" / "blueprints")
    versions = store.versions(job_id)
    assert len(versions) >= 2
    for v in versions:
        bp = load_blueprint(store.path(job_id, v))
        p, n_ids = bp.privacy, len(bp.layers)
        assert bp.schema_version == SCHEMA_VERSION
        assert (p.release, p.clip, p.noise_multiplier, p.delta) == ("dp", clip, z, delta)
        assert p.composed_releases == v * n_ids  # every earlier version of the run is composed in
        assert p.epsilon == dp_epsilon(z, v * n_ids, delta)
        assert p.sigma == z * clip / 4  # debug: 2 probe batches on each of 2 ranks
        for layer in blueprint_to_dict(bp)["layers"]:
            assert set(layer) <= set(DP_PUBLIC_LAYER_FIELDS) | set(DP_NOISED_LAYER_FIELDS)
            assert 0 <= layer["gradient_norm"] <= clip
        assert {"ci_low", "alpha", "gamma", "k_star", "domain_tags"} <= set(p.withheld)
    client = MlflowClient(f"sqlite:///{tmp_path / 'cpr_runs' / 'mlflow.db'}")
    logged = client.get_run(run_id).data.metrics
    assert logged and not [name for name in logged if name.startswith("grad/")]
    shown = cpr("blueprint", "show", str(store.path(job_id, versions[-1])), cwd=tmp_path)
    assert shown.returncode == 0 and f"δ {delta:g}" in shown.stdout and "withheld:" in shown.stdout
    assert json.loads((tmp_path / "cpr_runs" / "jobs" / job_id / "summary.json").read_text())["blueprints"]
