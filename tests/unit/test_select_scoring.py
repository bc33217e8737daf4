"""A `cpr select` rank's torch side (orchestrator/worker/scoring.py), against plain autograd: the vmap per-example
gradient norms per group equal one backward pass per window, padding changes nothing, and the forward pass's
head-gradient (ghost) norm equals the head's real gradient norm."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model():
    from orchestrator.config.schema import ModelConfig
    from orchestrator.models import hf_config, model_class

    cfg = hf_config(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), 200)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return model_class("llama")(cfg).float().eval()


TOKENS = np.random.default_rng(0).integers(0, 200, 2000).astype(np.uint16)
START = np.array([0, 300, 700, 1200])
LENGTH = np.array([65, 20, 65, 9])  # different lengths: padded in one batch


def backward(model, s: int, n: int) -> dict[str, float]:
    """Per-parameter gradient norms of one window's mean token loss, by plain autograd."""
    x = torch.from_numpy(TOKENS[s : s + n - 1].astype(np.int64))[None]
    y = torch.from_numpy(TOKENS[s + 1 : s + n].astype(np.int64))
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(input_ids=x).logits[0], y).backward()
    return {name: float(p.grad.norm()) for name, p in model.named_parameters()}


def test_vmap_norms_per_group_equal_one_backward_per_window(model) -> None:
    from orchestrator.blueprints.grouping import group_of, group_parameters
    from orchestrator.worker.scoring import GradientNorms, total_norm

    norms = GradientNorms(model)
    got = norms(TOKENS, START, LENGTH)
    groups = group_parameters((n, p.numel()) for n, p in model.named_parameters())
    for i, (s, n) in enumerate(zip(START, LENGTH, strict=True)):
        per_param = backward(model, int(s), int(n))
        want = np.zeros(len(norms.groups))
        for name, g in per_param.items():
            want[norms.groups.index(group_of(name, groups))] += g**2
        np.testing.assert_allclose(got[i], np.sqrt(want), rtol=2e-4, atol=1e-7)
        assert total_norm(got[i : i + 1])[0] == pytest.approx(np.sqrt(sum(g**2 for g in per_param.values())), rel=2e-4)
    alone = norms(TOKENS, START[1:2], LENGTH[1:2])  # unpadded: the same as in the padded batch
    np.testing.assert_allclose(alone[0], got[1], rtol=1e-5)


def test_the_forward_pass_gives_loss_and_the_heads_gradient_norm(model) -> None:
    from orchestrator.worker.scoring import features

    pooled, cheap = features(model, TOKENS, START, LENGTH)
    assert pooled.shape == (4, 32) and cheap.shape == (4, 2)
    for i, (s, n) in enumerate(zip(START, LENGTH, strict=True)):
        x = torch.from_numpy(TOKENS[s : s + n - 1].astype(np.int64))[None]
        y = torch.from_numpy(TOKENS[s + 1 : s + n].astype(np.int64))
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits[0], y)
        loss.backward()
        assert cheap[i, 0] == pytest.approx(float(loss.detach()), rel=1e-5)
        assert cheap[i, 1] == pytest.approx(float(model.lm_head.weight.grad.norm()), rel=1e-3)
