"""build_blueprint: statistics with bootstrap CIs, power-law fields from histograms, k* from the resource model,
domain weights; the result is schema-valid and round-trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.blueprints import (
    build_blueprint,
    dumps_blueprint,
    group_parameters,
    parse_blueprint,
)
from orchestrator.blueprints.tailfit import FitPolicy, csn_xmin
from orchestrator.core.gradmass import MagnitudeHistogram, fit_gamma, fit_powerlaw, gamma_from_alpha, k_star
from orchestrator.core.resource_model import resource_model
from orchestrator.errors import InputError

NAMES = [
    ("model.embed_tokens.weight", 4096),
    ("model.layers.0.self_attn.q_proj.weight", 1024),
    ("model.layers.0.mlp.up_proj.weight", 2048),
    ("model.norm.weight", 64),
    ("lm_head.weight", 4096),
]
CREATED = "2025-01-31T12:00:00Z"


def powerlaw_hist(rng: np.random.Generator, shape: float = 1.5, n: int = 4000) -> MagnitudeHistogram:
    """|g| with a Pareto tail of density exponent 1+shape: rank-size exponent α = 1/shape."""
    return MagnitudeHistogram.of((rng.pareto(shape, size=n) + 1.0) * 1e-3)


@pytest.fixture(scope="module")
def inputs() -> dict:
    rng = np.random.default_rng(7)
    groups = group_parameters(NAMES)
    samples = {gid: rng.gamma(4.0, 0.01 * (i + 1), size=12).tolist() for i, gid in enumerate(groups)}
    hists = {gid: powerlaw_hist(rng) for gid in groups}
    return {"groups": groups, "samples": samples, "hists": hists, "rm": resource_model(n_params=11_328)}


def build(inputs: dict, **kw):
    args = {
        "model_id": "tiny-llama",
        "training_checkpoint": 0.5,
        "samples": inputs["samples"],
        "histograms": inputs["hists"],
        "groups": inputs["groups"],
        "resource_model": inputs["rm"],
        "created_at": CREATED,
        "n_resamples": 500,
    }
    args.update(kw)
    return build_blueprint(**args)


def test_full_blueprint_validates_and_round_trips(inputs):
    bp = build(inputs, run_id="run-1", step=300, tokens_seen=123_456, provenance={"config_sha256": "ab12", "seed": 0})
    assert bp.schema_version == "1.2" and bp.created_at == CREATED and bp.run_id == "run-1"
    assert [e.id for e in bp.layers] == ["embed", "attn.0", "ffn.0", "norm.final", "head"]  # model order
    text = dumps_blueprint(bp)
    assert parse_blueprint(text, source="built") == bp
    rm = inputs["rm"]
    assert bp.resource_model.cost_fixed == rm.cost_fixed and bp.resource_model.cost_per_param == rm.cost_per_param
    assert bp.resource_model.optimizer == "adamw" and bp.resource_model.n_params == 11_328
    for e in bp.layers:
        group = inputs["groups"][e.id]
        assert e.n_params == group.n_params and e.prefixes == group.prefixes
        assert e.n_batches == 12 and e.statistic == "mean"
        assert e.gradient_norm == pytest.approx(float(np.mean(inputs["samples"][e.id])))


def test_fit_fields_come_from_the_histogram_and_the_resource_model(inputs):
    bp = build(inputs)
    rm = inputs["rm"]
    for e in bp.layers:
        hist = inputs["hists"][e.id]
        pl = fit_powerlaw(hist, method="binned-mle")
        assert e.alpha == pl.powerlaw_alpha
        assert 0.4 < e.alpha < 1.0  # Pareto shape 1.5: rank-size α = 1/1.5
        assert e.gamma == gamma_from_alpha(e.alpha) == pytest.approx(1 / (1 + e.alpha))
        assert e.gamma_fit == fit_gamma(hist).gamma
        ks = k_star(e.gamma_fit, rm.cost_fixed, rm.cost_per_param)  # k* from the measured γ (docs/maths.md)
        assert e.k_star == ks.k_star and e.k_star_interior == ks.interior
        assert e.recommendation is None and e.recommendation_reason.startswith("alpha<=1")  # rank α = 1/1.5
        assert e.fit.method == "binned-mle" and e.fit.ks_distance == pl.ks_distance and e.fit.n_tail == pl.n_tail
        assert e.fit.error is None


def test_rank_lstsq_records_r2_and_rank_range(inputs):
    bp = build(inputs, fit_method="rank-lstsq")
    e = bp.layers[0]
    assert e.fit.method == "rank-lstsq" and e.fit.r2 is not None and e.fit.rank_range == (1e-4, 0.5)
    assert parse_blueprint(dumps_blueprint(bp), source="x") == bp


def test_no_resource_model_means_no_k_star(inputs):
    bp = build(inputs, resource_model=None)
    assert all(e.k_star is None and e.k_star_interior is None and e.alpha is not None for e in bp.layers)
    assert bp.resource_model is None


def test_too_little_data_for_a_fit_is_said_in_the_entry(inputs):
    hists = dict(inputs["hists"])
    hists["head"] = MagnitudeHistogram.of([0.1, 0.2, 0.3])
    bp = build(inputs, histograms=hists)
    head = bp.layer("head")
    assert head.alpha is None and head.gamma is None and head.k_star is None and head.k_star_interior is None
    assert head.fit.method == "binned-mle" and "needs" in head.fit.error
    assert parse_blueprint(dumps_blueprint(bp), source="x") == bp  # still schema-valid


def test_without_histograms_only_norms_and_cis(inputs):
    bp = build(inputs, histograms=None, groups=None)
    assert [e.id for e in bp.layers] == sorted(inputs["samples"])  # sorted without groups
    assert all(e.alpha is None and e.fit is None and e.prefixes is None for e in bp.layers)


def test_median_vs_mean():
    samples = {"attn.0": [1.0, 1.1, 0.9, 1.0, 50.0]}  # one outlier batch
    mean = build_blueprint(model_id="m", training_checkpoint=1.0, samples=samples, created_at=CREATED)
    median = build_blueprint(
        model_id="m", training_checkpoint=1.0, samples=samples, statistic="median", created_at=CREATED
    )
    assert mean.layers[0].gradient_norm == pytest.approx(10.8)
    assert median.layers[0].gradient_norm == 1.0
    assert (mean.layers[0].statistic, median.layers[0].statistic) == ("mean", "median")


def test_ci_contains_the_statistic_and_is_reproducible(inputs):
    a = build(inputs, seed=3, histograms=None)
    b = build(inputs, seed=3, histograms=None)
    c = build(inputs, seed=4, histograms=None)
    for ea, eb, ec in zip(a.layers, b.layers, c.layers, strict=True):
        assert ea.ci.low <= ea.gradient_norm <= ea.ci.high and ea.ci.low < ea.ci.high
        assert ea.ci.level == 0.95
        assert ea.ci == eb.ci  # same seed, same CI
        assert ec.ci != ea.ci  # another seed resamples differently
    # A layer's CI does not depend on which other layers are in the blueprint.
    alone = build_blueprint(
        model_id="m",
        training_checkpoint=0.5,
        samples={"ffn.0": inputs["samples"]["ffn.0"]},
        seed=3,
        n_resamples=500,
        created_at=CREATED,
    )
    assert alone.layers[0].ci == a.layer("ffn.0").ci


def test_wider_level_gives_wider_ci(inputs):
    narrow = build(inputs, ci_level=0.5, histograms=None).layers[0].ci
    wide = build(inputs, ci_level=0.99, histograms=None).layers[0].ci
    assert wide.low <= narrow.low and wide.high >= narrow.high and wide.level == 0.99


def test_one_batch_has_no_ci():
    bp = build_blueprint(model_id="m", training_checkpoint=0.5, samples={"attn.0": [0.3]}, created_at=CREATED)
    assert bp.layers[0].ci is None and bp.layers[0].n_batches == 1 and bp.layers[0].gradient_norm == 0.3


def test_domain_tags_are_relative_to_the_general_statistic():
    samples = {"attn.0": [2.0, 2.0], "ffn.0": [4.0, 4.0], "head": [0.0, 0.0]}
    bp = build_blueprint(
        model_id="m",
        training_checkpoint=0.8,
        samples=samples,
        domain_norms={"bio": {"attn.0": 1.0, "ffn.0": 5.0}, "legal": {"attn.0": 3.0}},
        created_at=CREATED,
    )
    assert bp.layer("attn.0").domain_tags == {"general": 1.0, "bio": 0.5, "legal": 1.5}
    assert bp.layer("ffn.0").domain_tags == {"general": 1.0, "bio": 1.25}
    assert bp.layer("head").domain_tags is None  # no general scale to be relative to


def test_created_at_defaults_to_now_in_utc():
    bp = build_blueprint(model_id="m", training_checkpoint=0.5, samples={"a": [1.0]})
    assert bp.created_at.endswith("Z") and bp.created_at.startswith("20")


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"training_checkpoint": 1.5}, "training_checkpoint"),
        ({"training_checkpoint": -0.1}, "training_checkpoint"),
        ({"samples": {}}, "samples"),
        ({"samples": {"a": []}}, "samples['a']"),
        ({"samples": {"a": [1.0, math.nan]}}, "samples['a']"),
        ({"samples": {"a": [1.0, -0.5]}}, "samples['a']"),
        ({"samples": {"a/b": [1.0]}}, "layers[0].id"),
        ({"statistic": "mode"}, "statistic"),
        ({"ci_level": 1.0}, "ci_level"),
        ({"n_resamples": 0}, "n_resamples"),
        ({"fit_method": "eyeball"}, "fit_method"),
        ({"histograms": {"b": MagnitudeHistogram.of([1.0])}}, "histograms['b']"),
        ({"domain_norms": {"general": {"a": 1.0}}}, "domain_norms['general']"),
        ({"domain_norms": {"bio": {"a": -1.0}}}, "domain_norms['bio']['a']"),
        ({"provenance": {"x": [1, 2]}}, "provenance.x"),
        ({"step": -1}, "step"),
        ({"created_at": "noon"}, "created_at"),
        ({"model_id": ""}, "model_id"),
    ],
)
def test_bad_arguments_raise_input_error(kw, field):
    args = {"model_id": "m", "training_checkpoint": 0.5, "samples": {"a": [1.0, 2.0]}, "created_at": CREATED}
    args.update(kw)
    with pytest.raises(InputError) as err:
        build_blueprint(**args)
    assert field in err.value.field, err.value.one_line()


def test_samples_outside_the_groups_are_refused(inputs):
    with pytest.raises(InputError, match="parameter groups"):
        build_blueprint(
            model_id="m",
            training_checkpoint=0.5,
            samples={"attn.9": [1.0]},
            groups=inputs["groups"],
            created_at=CREATED,
        )


def test_a_built_blueprint_is_consistent_and_the_papers_example_is_not(inputs):
    from dataclasses import replace
    from pathlib import Path

    from orchestrator.blueprints.consistency import consistency_notes
    from orchestrator.blueprints.model import load_blueprint

    bp = build(inputs, resource_model=resource_model(n_params=10_000, optimizer="adamw", precision="bf16"))
    assert consistency_notes(bp) == []
    first = bp.layers[0]
    tampered = replace(bp, layers=(replace(first, k_star=min(1.0, first.k_star + 0.2)), *bp.layers[1:]))
    assert len(consistency_notes(tampered)) == 1 and "k_star" in consistency_notes(tampered)[0]

    paper = load_blueprint(Path(__file__).resolve().parents[1] / "assets" / "paper_appendix_a.json")
    notes = consistency_notes(paper)
    assert len(notes) == 3 and "0.405" in notes[0]  # the App. A erratum: α = 1.47 gives γ = 0.405, not 0.60


def _entry_of(values, rm=None, **kw):
    hist = MagnitudeHistogram.of(values)
    bp = build_blueprint(
        model_id="m",
        training_checkpoint=0.5,
        samples={"x": [1.0, 1.1, 0.9]},
        histograms={"x": hist},
        resource_model=rm,
        created_at=CREATED,
        **kw,
    )
    return bp.layers[0]


def test_a_heavy_power_law_tail_gets_a_recommendation_and_its_tests(inputs):
    """Density exponent 1.5: rank-size α = 2 > 1, the whole sample in the tail, the exponential rejected."""
    rng = np.random.default_rng(1)
    e = _entry_of(rng.pareto(0.5, 20_000) + 1, inputs["rm"])
    assert e.fit.tail_alpha == pytest.approx(1.5, abs=0.1) and e.fit.tail_share > 0.9
    exp = e.fit.likelihood_ratios["exponential"]
    assert exp["ratio"] > 0 and exp["p"] < 0.1 and set(e.fit.likelihood_ratios) == {"exponential", "lognormal"}
    assert e.recommendation == e.k_star and e.recommendation_reason is not None
    bp = build_blueprint(
        model_id="m",
        training_checkpoint=0.5,
        samples={"x": [1.0]},
        created_at=CREATED,
        resource_model=inputs["rm"],
        histograms={"x": MagnitudeHistogram.of(rng.pareto(0.5, 5_000) + 1)},
    )
    assert parse_blueprint(dumps_blueprint(bp), source="x") == bp  # the new fields survive the file


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        # CSN finds only a short, steep far tail in these: too small to support anything
        (np.random.default_rng(2).exponential(1.0, 20_000), "tail too small"),
        (np.abs(np.random.default_rng(3).normal(0, 1e-3, 50_000)), "tail too small"),
        (np.random.default_rng(4).pareto(1.5, 20_000) + 1, "alpha<=1"),  # density exponent 2.5: rank α = 2/3
        (np.random.default_rng(5).pareto(0.5, 60) + 1, "tail too small"),
    ],
    ids=["exponential", "gaussian-gradients", "alpha-below-1", "tiny-tail"],
)
def test_a_fit_that_does_not_support_a_recommendation_says_why(inputs, values, reason):
    e = _entry_of(values, inputs["rm"])
    assert e.recommendation is None and reason in e.recommendation_reason


def test_the_thresholds_are_the_policys(inputs):
    values = np.random.default_rng(5).pareto(0.5, 60) + 1
    e = _entry_of(values, inputs["rm"], fit_policy=FitPolicy(min_tail=10, min_tail_share=0.05))
    assert e.recommendation == e.k_star


def test_no_resource_model_means_no_recommendation():
    e = _entry_of(np.random.default_rng(1).pareto(0.5, 20_000) + 1)
    assert e.recommendation is None and e.recommendation_reason == "no resource model"


def test_an_exponential_preference_withholds_the_recommendation():
    from orchestrator.blueprints.tailfit import Comparison, TailFit, unsupported

    tail = dict(pdf_alpha=1.5, x_min=1.0, n=2000, n_tail=1500, ks_distance=0.01)
    thin = TailFit(**tail, comparisons={"exponential": Comparison(ratio=-3.2, p=0.001)})
    assert unsupported(thin, FitPolicy()) == "exponential preferred (R=-3.2, p=0.001)"
    unsure = TailFit(**tail, comparisons={"exponential": Comparison(ratio=-3.2, p=0.3)})
    assert unsupported(unsure, FitPolicy()) is None  # the sign of R is not significant at p_level 0.1


@pytest.mark.parametrize("draw", ["student_t", "lognormal", "pareto"])
def test_the_closed_form_x_min_search_finds_the_packages_x_min(draw: str) -> None:
    """csn_xmin replaces `powerlaw`'s own search (a bounded numerical fit per candidate): the same x_min and α."""
    import warnings

    import powerlaw

    rng = np.random.default_rng(3)
    x = {
        "student_t": lambda: np.abs(rng.standard_t(3, 400)),
        "lognormal": lambda: rng.lognormal(0.0, 1.0, 400),
        "pareto": lambda: rng.pareto(1.5, 400) + 1.0,
    }[draw]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        searched = powerlaw.Fit(x, verbose=False, parameter_ranges={"alpha": (1.0, None)})
        fixed = powerlaw.Fit(x, xmin=csn_xmin(x), verbose=False, parameter_ranges={"alpha": (1.0, None)})
    assert fixed.xmin == pytest.approx(searched.xmin)
    assert fixed.power_law.alpha == pytest.approx(searched.alpha, rel=1e-4)
