"""The engine side of LoRA without an engine (orchestrator/worker/lora.py, docs/adapt.md): the linear layers of a
tiny Llama and GPT-2 that the `lora` strategy sizes its rank over (torch Linear, weight (d_out, d_in); GPT-2's Conv1D,
weight (d_in, d_out)), peft's adapters on them, and apply_lora's refusals. tests/integration/test_lora.py trains them.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.adapt import LinearShape, LoraDescriptor
from orchestrator.config.compose import compose_job
from orchestrator.errors import InputError
from orchestrator.models import build_model
from orchestrator.worker.lora import apply_lora, linear_shapes, lora_trainable

VOCAB, SEQ = 1024, 32
GPT2_TINY = ["model=gpt2-small", "model.num_layers=2", "model.hidden_size=64", "model.num_heads=2"]


def _descriptor(shapes: tuple[LinearShape, ...], rank: int) -> LoraDescriptor:
    per_rank = sum(s.d_in + s.d_out for s in shapes)
    return LoraDescriptor(
        rank=rank, targets=tuple(s.name for s in shapes), params_per_rank=per_rank, trainable_params=rank * per_rank
    )


def test_linear_shapes_of_a_tiny_llama_are_the_blocks_projections() -> None:
    model = build_model(compose_job(["model=llama-tiny"]).model, VOCAB, SEQ, 0)  # hidden 64, MLP 172, 2 layers
    shapes = linear_shapes(model)
    per_block = [
        ("self_attn.q_proj", 64, 64),
        ("self_attn.k_proj", 64, 64),
        ("self_attn.v_proj", 64, 64),
        ("self_attn.o_proj", 64, 64),
        ("mlp.gate_proj", 64, 172),
        ("mlp.up_proj", 64, 172),
        ("mlp.down_proj", 172, 64),
    ]
    assert shapes == tuple(
        LinearShape(name=f"model.layers.{i}.{name}", d_in=d_in, d_out=d_out)
        for i in range(2)
        for name, d_in, d_out in per_block
    )  # no lm_head, no embedding; module names, as peft's target_modules
    modules = dict(model.named_modules())
    for s in shapes:
        assert tuple(modules[s.name].weight.shape) == (s.d_out, s.d_in)  # torch Linear: (d_out, d_in)


def test_linear_shapes_of_gpt2_read_conv1d_as_d_in_by_d_out() -> None:
    model = build_model(compose_job(GPT2_TINY).model, 300, 16, 0)
    shapes = linear_shapes(model)
    per_block = [("attn.c_attn", 64, 192), ("attn.c_proj", 64, 64), ("mlp.c_fc", 64, 256), ("mlp.c_proj", 256, 64)]
    assert shapes == tuple(
        LinearShape(name=f"transformer.h.{i}.{name}", d_in=d_in, d_out=d_out)
        for i in range(2)
        for name, d_in, d_out in per_block
    )
    modules = dict(model.named_modules())
    for s in shapes:
        assert tuple(modules[s.name].weight.shape) == (s.d_in, s.d_out)  # Conv1D: (d_in, d_out)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_apply_lora_trains_only_the_adapters_and_starts_as_the_base_model(arch: str) -> None:
    import torch

    cfg = compose_job(["model=llama-tiny"] if arch == "llama" else GPT2_TINY).model
    model = build_model(cfg, 300, 16, 0)
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(input_ids=x).logits
    desc = _descriptor(linear_shapes(model), rank=3)
    wrapped = apply_lora(model, desc)
    trainable = [(n, p) for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all(lora_trainable(n) for n, _ in trainable)
    assert sum(p.numel() for _, p in trainable) == desc.trainable_params
    assert len(trainable) == 2 * len(desc.targets)  # one A and one B per target
    assert not any(lora_trainable(n) for n, p in wrapped.named_parameters() if not p.requires_grad)
    with torch.no_grad():
        assert torch.equal(wrapped(input_ids=x).logits, base)  # B = 0: the wrapped model is the base model


def test_apply_lora_refuses_a_target_that_is_no_linear_layer_and_a_wrong_count() -> None:
    cfg = compose_job(["model=llama-tiny"]).model
    model = build_model(cfg, 300, 16, 0)
    shapes = linear_shapes(model)
    with pytest.raises(InputError) as err:  # a parameter name, not a module name
        apply_lora(model, _descriptor((LinearShape(name="lm_head.weight", d_in=64, d_out=300),), rank=2))
    assert err.value.field == "lora.targets" and "lm_head.weight" in str(err.value)
    right = _descriptor(shapes, rank=2)
    wrong = replace(right, trainable_params=right.trainable_params + 1)
    with pytest.raises(RuntimeError, match="LoRA adapters hold"):
        apply_lora(build_model(cfg, 300, 16, 0), wrong)


def test_lora_trainable_names_the_a_and_b_matrices_only() -> None:
    assert lora_trainable("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight")
    assert lora_trainable("base_model.model.transformer.h.1.mlp.c_fc.lora_B.default.weight")
    assert not lora_trainable("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight")
    assert not lora_trainable("base_model.model.lm_head.weight")


@pytest.mark.parametrize("overrides", [["model=llama-tiny"], GPT2_TINY], ids=["llama", "gpt2"])
def test_merged_adapters_score_as_the_peft_model(overrides: list[str]) -> None:
    """`cpr export` of a LoRA adaptation: merge_lora folds every adapter into its base layer (W + alpha/r·B·A)."""
    import torch

    from orchestrator.export import merge_lora

    cfg = compose_job(overrides).model
    model = build_model(cfg, VOCAB, SEQ, 0)
    wrapped = apply_lora(model, _descriptor(linear_shapes(model), 4), alpha=6.0)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # as after training (B starts at 0)
    x = torch.randint(0, VOCAB, (2, SEQ))
    merged = build_model(cfg, VOCAB, SEQ, 1)
    merged.load_state_dict(merge_lora(wrapped.state_dict(), 6.0, conv1d=cfg.arch == "gpt2"), strict=True)
    assert torch.allclose(merged(input_ids=x).logits, wrapped(input_ids=x).logits, atol=1e-5)
    plain = build_model(cfg, VOCAB, SEQ, 0).state_dict()
    assert merge_lora(plain, None) is plain  # not a LoRA state: as it is
