"""Parameters and data chosen together (orchestrator/adapt/joint.py): with a selection's cross-influence map, the
blueprint norms Algorithm 1 blends are the map's influence on the kept blocks, so the kept data decides which
submodules train."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.adapt import Budget, SelectionRequest, inputs_from_blueprint, select
from orchestrator.adapt.joint import joint_blueprint, joint_norms
from orchestrator.blueprints.model import Blueprint, ConfidenceInterval, LayerEntry
from orchestrator.core.resource_model import resource_model
from orchestrator.errors import InputError
from orchestrator.select import cross_influence

IDS = ["embed", "attn.0", "ffn.0", "attn.1", "ffn.1", "head"]


def blueprint() -> Blueprint:
    return Blueprint(
        model_id="m",
        training_checkpoint=1.0,
        blueprint_version=3,
        layers=tuple(
            LayerEntry(id=g, gradient_norm=1.0, ci=ConfidenceInterval(low=0.9, high=1.1, level=0.95), n_params=100)
            for g in IDS
        ),
    )


def influence():
    """Block "code" moves the first block's submodules, block "prose" the second's."""
    rng = np.random.default_rng(0)
    pattern = {
        "code": np.array([1.0, 5.0, 5.0, 0.5, 0.5, 1.0]),
        "prose": np.array([1.0, 0.5, 0.5, 5.0, 5.0, 1.0]),
    }
    labels = rng.choice(["code", "prose"], size=100)
    norms = np.stack([pattern[b] * (1 + 0.01 * rng.normal(size=6)) for b in labels])
    return cross_influence(norms, labels.tolist(), IDS, ["code", "prose"], rank=2, block_kind="folder")


def chosen(bp: Blueprint) -> set[str]:
    subs = inputs_from_blueprint(bp, bp.norms(), dict.fromkeys(IDS, 100))  # the local sample agrees: no drift
    rm = resource_model(n_params=600, optimizer="adamw", precision="fp32", zero_stage=0)
    req = SelectionRequest(submodules=subs, resource=rm, budget=Budget(max_fraction=2 / 6), a=1.0)
    return set(select("blueprint", req).chosen)


def test_the_kept_blocks_decide_which_submodules_train() -> None:
    ci = influence()
    on_code = joint_blueprint(blueprint(), ci, {"code": 1.0}, "sel1")
    on_prose = joint_blueprint(blueprint(), ci, {"prose": 1.0}, "sel2")
    assert chosen(on_code) == {"attn.0", "ffn.0"}
    assert chosen(on_prose) == {"attn.1", "ffn.1"}
    assert on_code.provenance is not None and on_code.provenance["joint_selection"] == "sel1"
    e = on_code.layer("ffn.0")
    assert e.ci is not None and e.ci.low / e.gradient_norm == pytest.approx(0.9)  # CI scaled with the norm
    mixed = joint_norms(ci, {"code": 0.5, "prose": 0.5})
    assert mixed["ffn.0"] == pytest.approx(mixed["ffn.1"], rel=0.05)


def test_a_map_of_other_groups_or_blocks_is_refused() -> None:
    ci = influence()
    with pytest.raises(InputError, match="no column"):
        joint_norms(ci, {"poetry": 1.0})
    assert joint_norms(ci, {"code": 0.7, "poetry": 0.3}) == joint_norms(ci, {"code": 0.7})  # unsampled: no column
    other = Blueprint(model_id="m", training_checkpoint=1.0, layers=(LayerEntry(id="embed", gradient_norm=1.0),))
    with pytest.raises(InputError) as err:
        joint_blueprint(other, ci, {"code": 1.0}, "s")
    assert err.value.field == "data.selection" and "adapt.joint=false" in (err.value.fix or "")
