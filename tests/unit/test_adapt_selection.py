"""Submodule selection for adaptation (Algorithm 1 steps (2)–(3), docs/adapt.md): the blend, the CI weights, the
drift guard, the budget, and the baselines (local, full, last_k, lisa, inverse, lora)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.adapt import (
    Budget,
    LinearShape,
    SelectionRequest,
    Strategy,
    SubmoduleInput,
    inputs_from_blueprint,
    select,
    trainable_names,
)
from orchestrator.adapt.selection import BYTES_PER_GB, ci_weight, spearman
from orchestrator.blueprints.grouping import group_parameters
from orchestrator.blueprints.model import Blueprint, ConfidenceInterval, LayerEntry
from orchestrator.core.resource_model import resource_model
from orchestrator.errors import InputError

RM = resource_model(n_params=1000, optimizer="adamw", precision="fp32", zero_stage=0)  # 4 B fixed, 12 B trained


def model_ids(n_layers: int) -> list[str]:
    ids = ["embed"]
    for i in range(n_layers):
        ids += [f"attn.{i}", f"ffn.{i}", f"norm.{i}"]
    return [*ids, "norm.final", "head"]


def subs(norms: dict[str, float], *, sizes: dict[str, int] | None = None, local: dict[str, float] | None = None, **kw):
    """SubmoduleInputs, 100 parameters each unless `sizes` says otherwise; G̃ = Ḡ unless `local` says otherwise."""
    return tuple(
        SubmoduleInput(
            id=i,
            n_params=(sizes or {}).get(i, 100),
            blueprint_norm=g,
            local_norm=(local or norms)[i],
            **{k: v[i] for k, v in kw.items() if i in v},
        )
        for i, g in norms.items()
    )


def request(submodules, *, max_fraction=None, memory_gb=None, **kw) -> SelectionRequest:
    return SelectionRequest(
        submodules=submodules, resource=RM, budget=Budget(memory_gb=memory_gb, max_fraction=max_fraction), **kw
    )


def spread_norms(n_layers: int = 3) -> dict[str, float]:
    """Distinct norms in a non-monotone order."""
    ids = model_ids(n_layers)
    return {gid: float((7 * k) % len(ids) + 1) for k, gid in enumerate(ids)}


# --------------------------------------------------------------------------------------------- blend and weights


def test_a_one_without_ci_picks_by_the_blueprint_norm() -> None:
    norms = spread_norms()
    sel = select("blueprint", request(subs(norms), max_fraction=4 / len(norms), a=1.0))
    top4 = sorted(norms, key=lambda g: -norms[g])[:4]
    assert set(sel.chosen) == set(top4)
    assert all(f == 1.0 for f in sel.chosen.values())
    assert sel.fallback == "none" and sel.a == 1.0 and sel.rho == pytest.approx(1.0)
    assert [r.weight for r in sel.rows] == [1.0] * len(norms)  # no CI: full weight


def test_a_zero_picks_by_the_local_norm() -> None:
    norms = spread_norms()
    local = {gid: float(len(norms) - (7 * k) % len(norms)) for k, gid in enumerate(norms)}  # reversed ranks
    sel = select("local", request(subs(norms, local=local), max_fraction=3 / len(norms)))
    assert set(sel.chosen) == set(sorted(local, key=lambda g: -local[g])[:3])
    assert sel.a == 0.0 and sel.strategy == "local"


def test_blend_is_on_the_sum_one_scale() -> None:
    norms = {"a.x": 1.0, "b.x": 3.0, "c.x": 6.0}
    local = {"a.x": 20.0, "b.x": 30.0, "c.x": 50.0}  # same ranks, another scale
    sel = select("blueprint", request(subs(norms, local=local), max_fraction=1.0, a=0.25))
    for row in sel.rows:
        p, q = norms[row.id] / 10, local[row.id] / 100
        assert row.blueprint_share == pytest.approx(p)
        assert row.local_share == pytest.approx(q)
        assert row.blended == pytest.approx(0.25 * p + 0.75 * q)
    assert sum(r.blended for r in sel.rows) == pytest.approx(1.0)


def test_a_wider_ci_gets_less_weight() -> None:
    widths = [ci_weight(1.0, 1.0 - h, 1.0 + h) for h in (0.0, 0.1, 0.5, 2.0)]
    weights = [w for _, w in widths]
    assert weights[0] == 1.0 and all(a > b for a, b in itertools.pairwise(weights))
    assert widths[2] == (pytest.approx(1.0), pytest.approx(0.5))
    assert ci_weight(2.0, None, None) == (None, 1.0)
    assert ci_weight(0.0, 0.0, 1.0) == (math.inf, 0.0)


def test_a_noisy_entry_leans_on_the_local_sample() -> None:
    norms = {"a.x": 1.0, "b.x": 2.0, "c.x": 3.0, "d.x": 4.0}
    lo = {k: v * 0.95 for k, v in norms.items()}
    hi = {k: v * 1.05 for k, v in norms.items()}
    lo["d.x"], hi["d.x"] = 0.0, 12.0  # d's CI is 3x its mean wide
    sel = select("blueprint", request(subs(norms, ci_low=lo, ci_high=hi), max_fraction=0.5, a=0.8))
    rows = {r.id: r for r in sel.rows}
    assert rows["d.x"].weight == pytest.approx(0.25)
    assert rows["d.x"].a_eff == pytest.approx(0.2)
    assert rows["a.x"].weight > rows["d.x"].weight
    assert rows["a.x"].a_eff == pytest.approx(0.8 / 1.1)


# --------------------------------------------------------------------------------------------- drift


def test_spearman_is_scipys_and_undefined_when_degenerate() -> None:
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def _drifted(n_layers: int = 3) -> tuple[dict[str, float], dict[str, float]]:
    """Submodule ranks reversed inside every block, block totals in the same order on both sides."""
    norms, local = {}, {}
    for gid in model_ids(n_layers):
        kind, _, idx = gid.partition(".")
        base = 10.0 * (int(idx) + 1) if idx.isdigit() else {"embed": 5.0, "norm": 1.0, "head": 40.0}[kind]
        inner = {"attn": 3.0, "ffn": 2.0, "norm": 1.0}.get(kind, 1.0) if idx.isdigit() else 1.0
        norms[gid] = base * inner
        local[gid] = base * (4.0 - inner if idx.isdigit() else 1.0)
    return norms, local


def test_drift_sets_a_to_zero() -> None:
    norms = spread_norms()
    local = {gid: -v for gid, v in norms.items()}
    local = {gid: v - min(local.values()) + 1 for gid, v in local.items()}  # reversed ranks: ρ = −1
    sel = select("blueprint", request(subs(norms, local=local), max_fraction=0.3, a=0.9, on_drift="local"))
    assert sel.drift and sel.rho == pytest.approx(-1.0)
    assert sel.fallback == "local" and sel.a == 0.0
    assert all(r.a_eff == 0.0 for r in sel.rows)
    assert sel.chosen == select("local", request(subs(norms, local=local), max_fraction=0.3)).chosen


def test_drift_falls_back_to_blocks_when_the_blocks_agree() -> None:
    norms, local = _drifted()
    req = request(subs(norms, local=local), max_fraction=0.5, a=0.9, rho_threshold=0.95)
    sel = select("blueprint", req)
    assert sel.drift and sel.rho is not None and sel.rho < 0.95
    assert sel.fallback == "blocks" and sel.a == 0.9 and sel.rho_coarse == pytest.approx(1.0)
    ids = {r.id for r in sel.rows}
    assert {"layer.0", "layer.1", "layer.2", "embed", "head", "norm.final"} == ids
    for row in sel.rows:  # whole blocks: every member of a chosen block, at fraction 1
        if row.fraction:
            assert all(sel.chosen[m] == 1.0 for m in row.members)
        else:
            assert not set(row.members) & set(sel.chosen)


def test_drift_at_block_level_too_drops_the_blueprint() -> None:
    norms = spread_norms()
    local = {gid: 100.0 - v for gid, v in norms.items()}
    sel = select("blueprint", request(subs(norms, local=local), max_fraction=0.5, a=0.9))
    assert sel.fallback == "blocks-local" and sel.a == 0.0


def test_no_drift_keeps_a() -> None:
    norms = spread_norms()
    local = {g: v * 1.1 + 0.01 for g, v in norms.items()}
    sel = select("blueprint", request(subs(norms, local=local), max_fraction=0.5, a=0.6))
    assert not sel.drift and sel.fallback == "none" and sel.a == 0.6


# --------------------------------------------------------------------------------------------- budget


@st.composite
def problems(draw):
    n_layers = draw(st.integers(1, 4))
    ids = model_ids(n_layers)
    norm = st.floats(0, 100, allow_nan=False)
    norms = {g: draw(norm) for g in ids}
    local = {g: draw(norm) for g in ids}
    sizes = {g: draw(st.integers(1, 10_000)) for g in ids}
    rec = {g: draw(st.one_of(st.none(), st.floats(0.01, 1.0))) for g in ids}
    gamma = {g: draw(st.floats(0.05, 1.0)) for g in ids}
    lo = {g: norms[g] * draw(st.floats(0, 1)) for g in ids}
    hi = {g: norms[g] * (1 + draw(st.floats(0, 3))) for g in ids}
    submodules = subs(norms, sizes=sizes, local=local, recommendation=rec, gamma_fit=gamma, ci_low=lo, ci_high=hi)
    total = sum(sizes.values())
    frac = draw(st.one_of(st.none(), st.floats(0.05, 1.0)))
    gb = draw(st.one_of(st.none(), st.floats(1.05, 3.0).map(lambda m: m * RM.cost_fixed * total / BYTES_PER_GB)))
    if frac is None and gb is None:
        frac = 0.5
    a = draw(st.floats(0, 1))
    return request(
        submodules, max_fraction=frac, memory_gb=gb, a=a, on_drift=draw(st.sampled_from(["local", "blocks"]))
    )


@settings(max_examples=150, deadline=None)
@given(req=problems(), strategy=st.sampled_from(["blueprint", "local", "inverse", "last_k", "lisa"]))
def test_the_budget_is_never_exceeded(req: SelectionRequest, strategy: str) -> None:
    try:
        sel = select(strategy, req)
    except InputError as e:
        assert e.field == "budget"  # only "nothing fits"
        return
    total = sum(s.n_params for s in req.submodules)
    assert sel.total_params == total
    assert sel.within_budget
    if req.budget.max_fraction is not None:
        assert sel.trainable_params <= req.budget.max_fraction * total
    if req.budget.memory_gb is not None:
        assert sel.predicted_memory_bytes <= req.budget.memory_gb * BYTES_PER_GB * (1 + 1e-9)
    assert sel.predicted_memory_bytes == pytest.approx(RM.cost_fixed * total + RM.cost_per_param * sel.trainable_params)
    assert sel.chosen and set(sel.chosen) <= {s.id for s in req.submodules}
    assert all(0 < f <= 1 for f in sel.chosen.values())


def test_a_recommendation_trains_a_fraction_of_the_submodule() -> None:
    norms = {"a.x": 1.0, "b.x": 2.0, "c.x": 3.0}
    sel = select(
        "blueprint",
        request(subs(norms, recommendation={"c.x": 0.25}, gamma_fit={"c.x": 0.5}), max_fraction=1.0, a=1.0),
    )
    assert sel.chosen == {"a.x": 1.0, "b.x": 1.0, "c.x": 0.25}
    rows = {r.id: r for r in sel.rows}
    assert rows["c.x"].trainable_params == 25
    assert sel.trainable_params == 225


def test_whole_units_only_count_what_an_engine_that_freezes_tensors_trains() -> None:
    norms = {"a.x": 1.0, "b.x": 2.0, "c.x": 3.0}
    req = request(subs(norms, recommendation={"c.x": 0.25}, gamma_fit={"c.x": 0.5}), max_fraction=1.0, a=1.0)
    sel = select("blueprint", replace(req, partial_units=False))
    assert sel.chosen == {"a.x": 1.0, "b.x": 1.0, "c.x": 1.0} and sel.trainable_params == 300
    tight = select("blueprint", replace(req, partial_units=False, budget=Budget(max_fraction=0.7)))
    assert sel.trainable_params <= 300 and tight.trainable_params <= 210 and set(tight.chosen) == {"b.x", "c.x"}


def test_the_gain_per_byte_decides_not_the_norm_alone() -> None:
    norms = {"a.x": 1.0, "b.x": 2.0, "c.x": 3.0}  # c has the largest norm but costs 10x per unit of norm
    sizes = {"a.x": 100, "b.x": 100, "c.x": 1500}
    sel = select("blueprint", request(subs(norms, sizes=sizes), max_fraction=200 / 1700, a=1.0))
    assert set(sel.chosen) == {"a.x", "b.x"}


def test_units_rank_by_their_per_parameter_gradient_not_their_norm_share_per_parameter() -> None:
    # Entries of typical magnitude r have a norm r·√n: the large unit's entries are 10 % stronger than the small
    # one's, though its norm per parameter (G′/n) is 9x smaller. Only one of the two fits.
    norms = {"small.x": 1.0 * 10, "large.x": 1.1 * 100}
    sizes = {"small.x": 100, "large.x": 10_000}
    sel = select("blueprint", request(subs(norms, sizes=sizes), max_fraction=10_000 / 10_100, a=1.0))
    assert set(sel.chosen) == {"large.x"}


def test_the_set_worth_most_is_chosen_where_greedy_by_density_is_shut_out() -> None:
    # The tiny model at a 20 % budget: attn.0 is a hair denser than ffn.0, and taking it first leaves no room for
    # ffn.0, worth more; the exact choice is ffn.0 with the norms (and the second attention block does not fit).
    norms = {"attn.0": 0.156, "ffn.0": 0.219, "attn.1": 0.116, "norm.0": 0.016, "norm.1": 0.014}
    sizes = {"attn.0": 16_384, "ffn.0": 33_024, "attn.1": 16_384, "norm.0": 128, "norm.1": 128}
    sel = select("blueprint", request(subs(norms, sizes=sizes), max_fraction=46_041 / 66_048, a=1.0))
    assert set(sel.chosen) == {"ffn.0", "norm.0", "norm.1"}


@settings(max_examples=100, deadline=None)
@given(req=problems())
def test_the_chosen_set_is_predicted_to_gain_at_least_what_greedy_takes(req: SelectionRequest) -> None:
    from orchestrator.adapt import selection as sel_mod

    scored = sel_mod._drift_scores(req, req.a)[0]
    gain = {s.unit.id: sel_mod._gain(s, sel_mod._fraction(s.unit)) for s in scored}
    exact = sel_mod._best_set(scored, req)
    greedy = sel_mod._greedy(scored, req, lowest_first=False)
    assert sum(gain[i] for i in exact) >= sum(gain[i] for i in greedy) * (1 - 1e-12)


def test_full_trains_everything_and_reports_the_budget() -> None:
    norms = spread_norms(2)
    sel = select("full", request(subs(norms), max_fraction=0.5))
    assert set(sel.chosen) == set(norms) and sel.trainable_params == sel.total_params
    assert not sel.within_budget
    assert select("full", request(subs(norms))).within_budget  # no budget at all is fine for full


# --------------------------------------------------------------------------------------------- baselines


def test_inverse_takes_the_other_end_of_the_ordering() -> None:
    norms = spread_norms()
    req = request(subs(norms), max_fraction=4 / len(norms), a=1.0)
    best, worst = select("blueprint", req), select("inverse", req)
    by_norm = sorted(norms, key=lambda g: norms[g])
    assert set(worst.chosen) == set(by_norm[:4])
    assert not set(best.chosen) & set(worst.chosen)
    everything = request(subs(norms), max_fraction=1.0, a=1.0)
    assert set(select("inverse", everything).chosen) == set(norms)


def test_last_k_picks_the_last_blocks_and_the_head() -> None:
    norms = spread_norms(4)
    # head + norm.final + two blocks of three: 8 of 15 submodules of 100 parameters
    sel = select("last_k", request(subs(norms), max_fraction=8 / 15))
    assert sel.last_k == 2
    assert set(sel.chosen) == {"head", "norm.final", "attn.3", "ffn.3", "norm.3", "attn.2", "ffn.2", "norm.2"}
    assert select("last_k", request(subs(norms), max_fraction=7.9 / 15)).last_k == 1


def test_last_k_refuses_a_budget_without_room_for_the_head() -> None:
    with pytest.raises(InputError, match="head"):
        select("last_k", request(subs(spread_norms(2), sizes={"head": 5000}), max_fraction=0.1))


def test_lisa_keeps_embed_and_head_and_resamples_by_seed() -> None:
    norms = spread_norms(6)
    n = len(norms)
    req = request(subs(norms), max_fraction=(3 + 2 * 3) / n, lisa_interval=5, seed=7)
    sel = select("lisa", req)
    sch = sel.schedule
    assert sch is not None and sch.n_active == 2 and sch.interval == 5
    sets = [sch.active(step) for step in range(0, 200)]
    for s in sets:
        assert {"embed", "head", "norm.final"} <= s
        assert len(s) == 3 + 2 * 3
    assert sets[0] == sets[4] and len({frozenset(s) for s in sets[::5]}) > 1  # fixed within a period, resampled
    again = select("lisa", req).schedule
    assert again is not None and [again.active(t) for t in range(200)] == sets
    other = select("lisa", replace(req, seed=8)).schedule
    assert other is not None and [other.active(t) for t in range(200)] != sets
    assert set(sel.chosen) == set(sch.active(0))
    with pytest.raises(InputError, match="step"):
        sch.active(-1)


def test_lora_rank_matches_the_parameter_budget() -> None:
    norms = spread_norms(2)
    total = 100 * len(norms)
    shapes = tuple(LinearShape(name=f"l{i}", d_in=8, d_out=4) for i in range(5))  # Σ(d_in + d_out) = 60
    sel = select("lora", request(subs(norms), max_fraction=0.2, linear_shapes=shapes))
    assert sel.lora is not None
    assert sel.lora.rank == int(0.2 * total // 60) and sel.lora.params_per_rank == 60
    assert sel.trainable_params == sel.lora.rank * 60 and sel.chosen == {}
    with pytest.raises(InputError, match="rank-1"):
        select("lora", request(subs(norms), max_fraction=0.01, linear_shapes=shapes))


def test_to_dict_is_json() -> None:
    import json

    norms = spread_norms(2)
    req = request(subs(norms, ci_low={"embed": 0.0}, ci_high={"embed": 3.0}), max_fraction=0.7, lisa_interval=3)
    for strategy in ("blueprint", "lisa"):
        json.dumps(select(strategy, req).to_dict(), allow_nan=False)


# --------------------------------------------------------------------------------------------- bad input


def test_bad_input_names_the_field() -> None:
    norms = spread_norms(2)
    s = subs(norms)
    cases = [
        (request(s, max_fraction=0.5, a=1.5), "a"),
        (request(s, max_fraction=0.5, a=-0.1), "a"),
        (request(s), "budget"),
        (request(s, max_fraction=0.0), "budget.max_fraction"),
        (request(s, memory_gb=RM.cost_fixed * 100 * len(norms) / BYTES_PER_GB * 0.99), "budget.memory_gb"),
        (request(s, max_fraction=10 / (100 * len(norms))), "budget"),  # nothing fits: empty S_adapt
        (request(s, max_fraction=0.5, rho_threshold=2.0), "rho_threshold"),
        (request((*s, s[0]), max_fraction=0.5), "submodules['embed']"),
        (request((replace(s[0], local_norm=math.nan), *s[1:]), max_fraction=0.5), "submodules['embed'].local_norm"),
        (request((replace(s[0], ci_low=2.0, ci_high=1.0), *s[1:]), max_fraction=0.5), "submodules['embed'].ci_low"),
    ]
    for req, field in cases:
        with pytest.raises(InputError) as e:
            select("blueprint", req)
        assert e.value.field == field, (field, e.value)
    with pytest.raises(InputError, match="frozen model alone"):
        select("blueprint", cases[4][0])
    with pytest.raises(InputError, match="unknown strategy"):
        select("magic", request(s, max_fraction=0.5))
    assert Strategy("last_k") is Strategy.LAST_K


# --------------------------------------------------------------------------------------------- adapters


def _blueprint(ids: list[str], n: int = 100) -> Blueprint:
    return Blueprint(
        model_id="m",
        training_checkpoint=1.0,
        layers=tuple(
            LayerEntry(
                id=gid,
                gradient_norm=float(k + 1),
                ci=ConfidenceInterval(low=k + 0.5, high=k + 1.5, level=0.95),
                n_params=n,
                recommendation=0.5 if gid == "head" else None,
                gamma_fit=0.6,
            )
            for k, gid in enumerate(ids)
        ),
    )


def test_inputs_from_a_blueprint() -> None:
    ids = model_ids(2)
    got = inputs_from_blueprint(_blueprint(ids), dict.fromkeys(ids, 1.0), dict.fromkeys(ids, 100))
    assert [s.id for s in got] == ids
    head = got[-1]
    assert (head.blueprint_norm, head.ci_low, head.ci_high, head.recommendation) == (9.0, 8.5, 9.5, 0.5)


def test_mismatched_ids_are_listed() -> None:
    ids = model_ids(8)
    bp = _blueprint(model_ids(2))
    with pytest.raises(InputError) as e:
        inputs_from_blueprint(bp, dict.fromkeys(ids, 1.0), dict.fromkeys(ids, 100))
    assert e.value.field == "blueprint.layers"
    assert "attn.2, ffn.2, norm.2, attn.3, ffn.3 and 13 more missing" in e.value.problem
    with pytest.raises(InputError, match="local_norms"):
        inputs_from_blueprint(bp, {}, dict.fromkeys(model_ids(2), 100))
    with pytest.raises(InputError, match="n_params"):
        inputs_from_blueprint(bp, dict.fromkeys(model_ids(2), 1.0), dict.fromkeys(model_ids(2), 99))


def test_trainable_names_cover_the_chosen_ids() -> None:
    names = [
        ("model.embed_tokens.weight", 10),
        ("model.layers.0.self_attn.q_proj.weight", 10),
        ("model.layers.0.mlp.up_proj.weight", 10),
        ("model.layers.0.input_layernorm.weight", 2),
        ("lm_head.weight", 10),
    ]
    groups = group_parameters(names)
    got = trainable_names([n for n, _ in names], groups, ["attn.0", "head"])
    assert got == {"model.layers.0.self_attn.q_proj.weight", "lm_head.weight"}
    with pytest.raises(InputError, match=r"ffn\.7"):
        trainable_names([n for n, _ in names], groups, ["ffn.7"])
