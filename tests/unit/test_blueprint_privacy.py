"""Privacy of released blueprints (§5 "Privacy"; docs/blueprints.md "Privacy"): noise that no logged value can
redraw, and a calibrated (ε, δ)-DP release whose every statistic is noised or withheld."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import dp_accounting
import numpy as np
import pytest

from orchestrator.blueprints import (
    Blueprint,
    ConfidenceInterval,
    LayerEntry,
    ParamGroup,
    add_gaussian_noise,
    blueprint_to_dict,
    build_blueprint,
    dp_epsilon,
    dp_release,
    dumps_blueprint,
    load_blueprint,
    parse_blueprint,
)
from orchestrator.blueprints.privacy import (
    ACCOUNTANT,
    ADJACENCY,
    DP_NOISED_LAYER_FIELDS,
    DP_PUBLIC_LAYER_FIELDS,
    NOISE_NOTE,
)
from orchestrator.core.gradmass import HistogramSpec, MagnitudeHistogram
from orchestrator.core.resource_model import resource_model
from orchestrator.errors import InputError

PAPER_FILE = Path(__file__).resolve().parents[1] / "assets" / "paper_appendix_a.json"
SPEC = HistogramSpec(lo=1e-8, hi=1e2, bins_per_decade=4)
CLIP = 10.0  # above every norm `probed` measures, so no released value sits at the clamp
# Top-level fields a dp release may carry: identity, progress, configuration and the privacy record; none is
# computed from the validation data.
DP_TOP_LEVEL_FIELDS = {
    "schema_version",
    "model_id",
    "blueprint_version",
    "training_checkpoint",
    "created_at",
    "run_id",
    "step",
    "tokens_seen",
    "layers",
    "resource_model",
    "privacy",
    "provenance",
}


def bp() -> Blueprint:
    return Blueprint(
        model_id="m",
        training_checkpoint=1.0,
        created_at="2025-01-31T12:00:00Z",
        layers=tuple(
            LayerEntry(
                id=f"attn.{i}",
                gradient_norm=0.1 * (i + 1),
                ci=ConfidenceInterval(low=0.08 * (i + 1), high=0.12 * (i + 1), level=0.95),
                domain_tags={"general": 1.0, "code": 0.5 + 0.1 * i},
            )
            for i in range(20)
        ),
    )


def probed(n_batches: int = 8) -> tuple[Blueprint, dict[str, list[float]]]:
    """A blueprint with every field the probe fills (CI, fits, k*, domain tags, prefixes) and its per-batch norms."""
    rng = np.random.default_rng(0)
    groups = {
        gid: ParamGroup(id=gid, prefixes=(f"model.{gid}.",), n_params=3000) for gid in ("embed", "attn.0", "head")
    }
    samples, hists = {}, {}
    for i, gid in enumerate(groups):
        grads = [(i + 1) * rng.pareto(1.5, 3000) * 1e-3 for _ in range(n_batches)]
        samples[gid] = [float(np.linalg.norm(g)) for g in grads]
        hists[gid] = MagnitudeHistogram.of(np.concatenate(grads), SPEC)
    built = build_blueprint(
        model_id="m",
        training_checkpoint=0.5,
        samples=samples,
        histograms=hists,
        groups=groups,
        resource_model=resource_model(n_params=9000, optimizer="adamw", precision="fp32", zero_stage=0),
        n_resamples=50,
        domain_norms={"code": {gid: 2 * float(np.mean(v)) for gid, v in samples.items()}},
        run_id="run1",
        step=100,
        tokens_seen=204800,
        provenance={"job_id": "j1"},
    )
    return built, samples


# --------------------------------------------------------------------------------------------- noise mode


def test_values_change_and_privacy_is_recorded():
    original = bp()
    noised = add_gaussian_noise(original, clip=1.0, noise_multiplier=0.1)
    assert all(a.gradient_norm != b.gradient_norm for a, b in zip(original.layers, noised.layers, strict=True))
    assert all(a.domain_tags == b.domain_tags for a, b in zip(original.layers, noised.layers, strict=True))
    p = noised.privacy
    assert (p.mechanism, p.clip, p.noise_multiplier, p.sigma, p.note) == ("gaussian", 1.0, 0.1, 0.1, NOISE_NOTE)
    assert (p.release, p.epsilon, p.delta) == ("noise", None, None)  # no guarantee is claimed
    assert original.privacy is None  # the input is left alone


def test_no_release_function_takes_a_seed():
    """Nothing a publication path passes in (a config value, a step) can choose the noise."""
    for release in (add_gaussian_noise, dp_release):
        assert not {"seed", "rng", "generator"} & set(inspect.signature(release).parameters)


@pytest.mark.parametrize("mode", ["noise", "dp"])
def test_two_publications_of_the_same_statistics_differ(mode):
    """Nothing is redrawn: the same statistics released twice get independent noise."""
    built, samples = probed()
    if mode == "noise":
        a, b = (add_gaussian_noise(built, clip=CLIP, noise_multiplier=0.01) for _ in range(2))
    else:
        a, b = (dp_release(built, samples, clip=CLIP, noise_multiplier=0.01, delta=1e-5) for _ in range(2))
    assert all(x.gradient_norm != y.gradient_norm for x, y in zip(a.layers, b.layers, strict=True))


def test_clip_is_honoured_without_noise():
    noised = add_gaussian_noise(bp(), clip=0.5, noise_multiplier=0.0)
    assert [e.gradient_norm for e in noised.layers] == [min(0.1 * (i + 1), 0.5) for i in range(20)]
    assert all(e.ci.high <= 0.5 and e.ci.low <= e.gradient_norm <= e.ci.high for e in noised.layers)


def test_noise_is_floored_at_zero_and_cis_stay_ordered():
    noised = add_gaussian_noise(bp(), clip=0.3, noise_multiplier=2.0)
    norms = [e.gradient_norm for e in noised.layers]
    assert min(norms) == 0.0 and all(n >= 0 for n in norms)
    assert all(0 <= e.ci.low <= e.gradient_norm <= e.ci.high for e in noised.layers)


def test_schema_valid_round_trip():
    noised = add_gaussian_noise(bp(), clip=1.0, noise_multiplier=0.5)
    text = dumps_blueprint(noised)
    assert parse_blueprint(text, source="noised") == noised
    assert json.loads(text)["schema_version"] == "1.2" and "seed" not in json.loads(text)["privacy"]


def test_paper_file_is_upgraded():
    noised = add_gaussian_noise(load_blueprint(PAPER_FILE), clip=0.05, noise_multiplier=0.1)
    assert noised.schema_version == "1.2" and noised.privacy.sigma == pytest.approx(0.005)
    assert all(e.gradient_norm <= 0.05 + 0.05 for e in noised.layers)
    assert parse_blueprint(dumps_blueprint(noised), source="x") == noised


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"clip": 0.0, "noise_multiplier": 1.0}, "clip"),
        ({"clip": -1.0, "noise_multiplier": 1.0}, "clip"),
        ({"clip": float("inf"), "noise_multiplier": 1.0}, "clip"),
        ({"clip": 1.0, "noise_multiplier": -0.1}, "noise_multiplier"),
        ({"clip": 1.0, "noise_multiplier": float("nan")}, "noise_multiplier"),
    ],
)
def test_bad_parameters(kw, field):
    with pytest.raises(InputError) as err:
        add_gaussian_noise(bp(), **kw)
    assert err.value.field == field


def test_noise_is_added_once():
    noised = add_gaussian_noise(bp(), clip=1.0, noise_multiplier=0.1)
    with pytest.raises(InputError, match="already noised"):
        add_gaussian_noise(noised, clip=1.0, noise_multiplier=0.1)
    with pytest.raises(InputError, match="already noised"):
        dp_release(noised, {e.id: [1.0] for e in noised.layers}, clip=1.0, noise_multiplier=1.0, delta=1e-5)


# --------------------------------------------------------------------------------------------- dp mode


def test_dp_release_records_what_dp_accounting_computes():
    """ε at δ is dp-accounting's RDP figure for every Gaussian query released so far in the run: one per id of this
    version, composed with the earlier versions' queries."""
    built, samples = probed()
    out = dp_release(built, samples, clip=2.0, noise_multiplier=1.5, delta=1e-6, prior_releases=6)
    p = out.privacy
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.GaussianDpEvent(1.5), 6 + 3)
    assert p.epsilon == pytest.approx(accountant.get_epsilon(1e-6), rel=1e-12)
    assert (p.delta, p.composed_releases, p.clip, p.noise_multiplier) == (1e-6, 9, 2.0, 1.5)
    assert p.sigma == pytest.approx(1.5 * 2.0 / 8)  # σ = z·C/n
    assert (p.mechanism, p.release, p.adjacency) == ("gaussian", "dp", ADJACENCY)
    assert p.accountant == ACCOUNTANT and "dp-accounting" in p.accountant and "rdp" in p.accountant
    # L queries of multiplier z are one Gaussian query of the L-vector: its L2 sensitivity is √L·C/n.
    assert dp_epsilon(1.5, 9, 1e-6) == pytest.approx(dp_epsilon(1.5 / 3.0, 1, 1e-6), rel=1e-9)
    # More queries cost more; more noise costs less.
    assert dp_epsilon(1.5, 3, 1e-6) < p.epsilon < dp_epsilon(1.5, 30, 1e-6)
    assert dp_epsilon(3.0, 9, 1e-6) < p.epsilon
    assert parse_blueprint(dumps_blueprint(out), source="dp") == out


def test_dp_release_noises_or_withholds_every_statistic():
    """Walk the released document: each layer field is the noised norm or a public field fixed by the config and
    the model; everything else the un-noised blueprint held is withheld, with a reason, and absent."""
    built, samples = probed()
    before = blueprint_to_dict(built)
    after = blueprint_to_dict(dp_release(built, samples, clip=CLIP, noise_multiplier=1.0, delta=1e-5))
    assert set(after) <= DP_TOP_LEVEL_FIELDS
    withheld = after["privacy"]["withheld"]
    held = {key for layer in before["layers"] for key in layer}
    for key in ("ci_low", "alpha", "gamma", "gamma_fit", "k_star", "fit", "domain_tags"):
        assert key in held and key in withheld and withheld[key]  # the probe did compute it; it is not released
    assert set(withheld) == held - set(DP_PUBLIC_LAYER_FIELDS) - set(DP_NOISED_LAYER_FIELDS)
    for old, new in zip(before["layers"], after["layers"], strict=True):
        assert set(new) <= set(DP_PUBLIC_LAYER_FIELDS) | set(DP_NOISED_LAYER_FIELDS)
        assert not set(new) & set(withheld)
        assert new["gradient_norm"] != old["gradient_norm"]
        assert all(new[key] == old[key] for key in DP_PUBLIC_LAYER_FIELDS if key in new)


def test_dp_noise_has_the_stated_sigma_around_the_clipped_mean():
    """The mechanism releases mean(min(x, C)) + N(0, (z·C/n)²): clipping is applied per batch before the mean."""
    n, clip, z = 10, 1.0, 1.0  # the released values stay far inside [0, C], where they are clamped
    values = [0.4] * (n - 1) + [50.0]  # one outlying batch, clipped to C = 1
    built = build_blueprint(
        model_id="m", training_checkpoint=0.5, samples={f"attn.{i}": values for i in range(50)}, n_resamples=10
    )
    draws = np.array(
        [
            e.gradient_norm
            for _ in range(20)
            for e in dp_release(
                built, {e.id: values for e in built.layers}, clip=clip, noise_multiplier=z, delta=1e-5
            ).layers
        ]
    )
    clipped_mean, sigma = (0.4 * (n - 1) + 1.0) / n, z * clip / n
    assert abs(draws.mean() - clipped_mean) < 4 * sigma / math.sqrt(draws.size)
    assert draws.std(ddof=1) == pytest.approx(sigma, rel=0.15)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"delta": float("nan")}, "delta"),
        ({"clip": 0.0}, "clip"),
        ({"prior_releases": -1}, "prior_releases"),
    ],
)
def test_dp_bad_parameters(kw, field):
    built, samples = probed()
    args = {"clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-5, **kw}
    with pytest.raises(InputError) as err:
        dp_release(built, samples, **args)
    assert err.value.field == field


def test_dp_needs_the_samples_of_exactly_the_blueprints_ids():
    built, samples = probed()
    with pytest.raises(InputError) as err:
        dp_release(built, {**samples, "extra": [1.0]}, clip=1.0, noise_multiplier=1.0, delta=1e-5)
    assert err.value.field == "samples"


def test_a_1_0_file_may_not_carry_the_1_1_accounting():
    built, samples = probed()
    doc = blueprint_to_dict(dp_release(built, samples, clip=1.0, noise_multiplier=1.0, delta=1e-5))
    doc["schema_version"] = "1.0"
    with pytest.raises(InputError) as err:
        parse_blueprint(json.dumps(doc), source="old.json")
    assert err.value.field == "old.json: privacy.release" and "1.1" in err.value.fix


def test_loading_the_privacy_code_does_not_bring_absl() -> None:
    """dp-accounting brings absl, whose log handler closes the stream it held when Hydra's job logging clears the
    handlers: an in-process `cpr submit` after a blueprint was read closed pytest's captured stderr. It loads only
    when ε is computed."""
    code = "import sys, orchestrator.blueprints.privacy, launch.cli; print('absl' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
