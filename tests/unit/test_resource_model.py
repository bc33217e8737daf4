"""Resource model of Prop. B.1 (App. B.2 eq. (10)) from optimizer / precision / ZeRO settings."""

from __future__ import annotations

import json

import pytest

from orchestrator.core.gradmass import k_star
from orchestrator.core.resource_model import ResourceModel, activation_bytes, resource_model
from orchestrator.errors import InputError

N = 1_000_000


def test_fp32_adamw_zero0() -> None:
    rm = resource_model(n_params=N, optimizer="adamw", precision="fp32")
    assert rm.cost_per_param == 12.0  # 4 grads + 8 moments, no master copy
    assert rm.cost_fixed == 4.0
    assert rm.breakdown == {
        "weights": 4.0,
        "activations": 0.0,
        "grads": 4.0,
        "optimizer_states": 8.0,
        "master_weights": 0.0,
    }


def test_bf16_adamw_zero0() -> None:
    rm = resource_model(n_params=N, optimizer="adamw", precision="bf16")
    assert rm.cost_per_param == 14.0  # 2 grads + 8 moments + 4 master
    assert rm.cost_fixed == 2.0
    # ZeRO paper's 16 bytes/param for mixed-precision Adam = weights + grads + K(=12)
    assert rm.cost_fixed + rm.cost_per_param == 16.0


@pytest.mark.parametrize(
    ("optimizer", "precision", "per_param"),
    [("sgd", "fp32", 4.0), ("sgd_momentum", "fp32", 8.0), ("sgd", "fp16", 6.0), ("adam", "fp16", 14.0)],
)
def test_optimizer_state_bytes(optimizer: str, precision: str, per_param: float) -> None:
    assert resource_model(n_params=N, optimizer=optimizer, precision=precision).cost_per_param == per_param


def test_adafactor_is_an_upper_bound_of_one_fp32_state() -> None:
    rm = resource_model(n_params=N, optimizer="adafactor", precision="fp32")
    assert rm.breakdown["optimizer_states"] == 4.0


@pytest.mark.parametrize(
    ("stage", "weights", "grads", "states", "master"),
    [
        (0, 2.0, 2.0, 8.0, 4.0),
        (1, 2.0, 2.0, 2.0, 1.0),  # optimizer states (and master weights) / 4
        (2, 2.0, 0.5, 2.0, 1.0),  # + grads / 4
        (3, 0.5, 0.5, 2.0, 1.0),  # + weights / 4
    ],
)
def test_zero_stages_partition_the_right_parts(
    stage: int, weights: float, grads: float, states: float, master: float
) -> None:
    rm = resource_model(n_params=N, optimizer="adamw", precision="bf16", zero_stage=stage, dp_world_size=4)
    b = rm.breakdown
    assert (b["weights"], b["grads"], b["optimizer_states"], b["master_weights"]) == (weights, grads, states, master)
    assert rm.cost_fixed == weights
    assert rm.cost_per_param == grads + states + master


def test_zero_stage_without_data_parallelism_changes_nothing() -> None:
    a = resource_model(n_params=N, zero_stage=0)
    b = resource_model(n_params=N, zero_stage=3, dp_world_size=1)
    assert (a.cost_fixed, a.cost_per_param) == (b.cost_fixed, b.cost_per_param)


def test_activation_bytes_formula_by_hand() -> None:
    # s=2048, b=1, h=4096, a=32, L=32: per layer 2048·4096·(34 + 5·32·2048/4096) = 8,388,608 · 114 bytes.
    per_layer = 2048 * 4096 * (34 + 80)
    assert per_layer == 956_301_312
    act = activation_bytes(seq_len=2048, micro_batch=1, hidden=4096, n_layers=32, n_heads=32)
    assert act == 32 * per_layer == 30_601_641_984
    # fp32 activations double it; micro-batch scales linearly
    assert activation_bytes(seq_len=2048, micro_batch=1, hidden=4096, n_layers=32, n_heads=32, bytes_per_value=4) == (
        2 * act
    )
    assert activation_bytes(seq_len=2048, micro_batch=3, hidden=4096, n_layers=32, n_heads=32) == 3 * act
    # full recomputation keeps only each layer's input: 2·s·b·h per layer
    rec = activation_bytes(seq_len=2048, micro_batch=1, hidden=4096, n_layers=32, n_heads=32, recompute=True)
    assert rec == 2 * 2048 * 4096 * 32 == 536_870_912


def test_activations_spread_over_all_params_as_fixed_cost() -> None:
    rm = resource_model(n_params=1000, precision="bf16", activation_bytes=500.0)
    assert rm.breakdown["activations"] == 0.5
    assert rm.cost_fixed == 2.5
    assert rm.cost_per_param == 14.0


def test_k_star_from_a_realistic_resource_model_is_interior() -> None:
    # A 1.3B model (24 layers, hidden 2048, 16 heads), bf16 AdamW, ZeRO-0, seq 2048, micro-batch 4, full recompute.
    n = 1_300_000_000
    act = activation_bytes(seq_len=2048, micro_batch=4, hidden=2048, n_layers=24, n_heads=16, recompute=True)
    rm = resource_model(n_params=n, optimizer="adamw", precision="bf16", activation_bytes=act)
    assert isinstance(rm, ResourceModel)
    assert rm.cost_fixed == pytest.approx(2.0 + act / n)
    ks = k_star(0.6, rm.cost_fixed, rm.cost_per_param)
    assert ks.interior
    assert 0 < ks.k_star < 1
    assert ks.k_star == pytest.approx(0.6 * rm.cost_fixed / (rm.cost_per_param * 0.4))
    assert ks.gain_at_k_star > ks.gain_full


def test_k_star_is_full_update_when_activations_dominate() -> None:
    # 7B, 4k context, no recomputation, ZeRO-1 over 8 ranks: ~104 GB of activations per rank (~15 B/param) of
    # fixed cost against 3.5 B/param trainable cost, so eq. (16) fails for γ=0.6 and the model says: update all.
    n = 6_738_415_616
    act = activation_bytes(seq_len=4096, micro_batch=1, hidden=4096, n_layers=32, n_heads=32)
    rm = resource_model(
        n_params=n, optimizer="adamw", precision="bf16", zero_stage=1, dp_world_size=8, activation_bytes=act
    )
    assert rm.cost_per_param == 3.5
    ks = k_star(0.6, rm.cost_fixed, rm.cost_per_param)
    assert not ks.interior and ks.k_star == 1.0


def test_to_dict_is_json_safe_and_complete() -> None:
    rm = resource_model(n_params=N, optimizer="AdamW", precision="BF16", zero_stage=2, dp_world_size=2)
    d = json.loads(json.dumps(rm.to_dict()))
    assert d["optimizer"] == "adamw" and d["precision"] == "bf16"
    assert d["cost_fixed"] == rm.cost_fixed and d["cost_per_param"] == rm.cost_per_param
    assert d["breakdown"] == rm.breakdown
    assert (d["zero_stage"], d["dp_world_size"], d["n_params"]) == (2, 2, N)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_params": 0}, "n_params"),
        ({"n_params": 1.5}, "n_params"),
        ({"n_params": True}, "n_params"),
        ({"n_params": N, "optimizer": "lion"}, "optimizer"),
        ({"n_params": N, "precision": "fp8"}, "precision"),
        ({"n_params": N, "zero_stage": 4}, "zero_stage"),
        ({"n_params": N, "zero_stage": -1}, "zero_stage"),
        ({"n_params": N, "dp_world_size": 0}, "dp_world_size"),
        ({"n_params": N, "activation_bytes": -1.0}, "activation_bytes"),
        ({"n_params": N, "activation_bytes": float("nan")}, "activation_bytes"),
    ],
)
def test_bad_inputs_raise_input_error(kwargs: dict, field: str) -> None:
    with pytest.raises(InputError) as info:
        resource_model(**kwargs)
    assert info.value.field == field


def test_activation_bytes_bad_inputs() -> None:
    with pytest.raises(InputError) as info:
        activation_bytes(seq_len=0, micro_batch=1, hidden=8, n_layers=1, n_heads=1)
    assert info.value.field == "seq_len"
