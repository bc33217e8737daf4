"""Models built from config (no download): forward pass, meta-device parameter counts, FLOPs' N."""

from __future__ import annotations

import pytest

from orchestrator.config.compose import compose_job
from orchestrator.errors import InputError
from orchestrator.models import build_model, count_parameters, flops_model


@pytest.mark.parametrize("name", ["llama-tiny", "llama-2m"])
def test_llama_builds_runs_and_counts(name: str) -> None:
    import torch

    cfg = compose_job([f"model={name}"]).model
    model = build_model(cfg, 512, 32, seed=0)
    logits = model(input_ids=torch.zeros(2, 32, dtype=torch.long)).logits
    assert logits.shape == (2, 32, 512)
    assert count_parameters(cfg, 512).total == sum(p.numel() for p in model.parameters())


def test_gpt2_tied_head_counts_once_as_a_matmul() -> None:
    cfg = compose_job(["model=gpt2-small", "model.num_layers=1", "model.hidden_size=64", "model.num_heads=2"]).model
    model = build_model(cfg, 300, 16, seed=0)
    counts = count_parameters(cfg, 300)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert flops_model(cfg, 300, 16).n_matmul_params == counts.total - counts.embedding + 300 * 64


def test_real_sizes_count_without_building() -> None:
    assert 120e6 < count_parameters(compose_job(["model=gpt2-small"]).model, 50257).total < 130e6
    assert 125e6 < count_parameters(compose_job(["model=llama-125m"]).model, 32000).total < 140e6


def test_bad_model_config() -> None:
    cfg = compose_job(["model.num_heads=3"]).model
    with pytest.raises(InputError) as err:
        count_parameters(cfg, 100)
    assert err.value.field == "model.num_heads"
    with pytest.raises(InputError):
        build_model(compose_job([]).model, 100, 1024, seed=0)
