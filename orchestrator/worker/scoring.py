"""A `cpr select` rank: the base model's view of the corpus's windows (Algorithm 2 steps 1 and 3; docs/select.md).

- `features`: one forward pass per batch of windows gives each window's mean-pooled last hidden state and its mean
  token loss: what f_φ predicts J from, for every window of the corpus.
- `gradient_norms`: J(z) = ‖∇_θ L(z; θ_base)‖ per window of D_small, in total and per blueprint group, from
  per-example gradients computed with torch.func (`vmap` of `grad` over a batch, `functional_call` on the model's
  own parameters). Attention runs in its eager form there: vmap has no batching rule for the fused SDPA kernels.

A window is [start, start + length) of train.bin: input tokens [0, length−1), targets [1, length), padded to the
longest window of the batch; the model is causal, so padding at the end changes nothing before it, and the loss
masks it out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from orchestrator.blueprints.grouping import group_of, group_parameters


def load_scorer(folder: str, arch: str, threads: int) -> Any:
    """The base model (a save_pretrained folder) in fp32, eval mode, eager attention."""
    import torch

    from orchestrator.models import model_class

    torch.set_num_threads(max(1, threads))
    model = model_class(arch).from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def padded(tokens: np.ndarray, start: np.ndarray, length: np.ndarray) -> tuple[Any, Any, Any]:
    """(inputs, targets, mask) of a batch of windows, right-padded with token 0 (masked)."""
    import torch

    width = int(length.max()) - 1
    x = np.zeros((start.size, width), dtype=np.int64)
    y = np.zeros_like(x)
    mask = np.zeros((start.size, width), dtype=np.float32)
    for i, (s, n) in enumerate(zip(start, length, strict=True)):
        w = np.asarray(tokens[s : s + n], dtype=np.int64)
        x[i, : n - 1], y[i, : n - 1], mask[i, : n - 1] = w[:-1], w[1:], 1.0
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask)


def features(model: Any, tokens: np.ndarray, start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pooled last hidden state per window (n × hidden), [mean token loss, head gradient norm] per window (n × 2)).

    The head's per-example gradient needs no backward pass: for logits = H Wᵀ and the mean token loss, ∂L/∂W =
    Eᵀ H / n with E = softmax − onehot(target), so ‖∂L/∂W‖² = Σ_{t,s} (e_t·e_s)(h_t·h_s) / n² (the per-layer "ghost
    norm" of Opacus's ghost clipping, Li et al. 2022), from the forward pass's own tensors."""
    import torch

    x, y, mask = padded(tokens, start, length)
    with torch.no_grad():
        out = model(input_ids=x, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # after the final norm: the head's input
        m = mask.unsqueeze(-1)
        count = mask.sum(1)
        pooled = (hidden * m).sum(1) / m.sum(1)
        logits = out.logits.float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
        loss = (nll * mask).sum(1) / count
        err = torch.softmax(logits, dim=-1)
        err.scatter_add_(-1, y.unsqueeze(-1), -torch.ones_like(y, dtype=err.dtype).unsqueeze(-1))
        err = err * m
        h = hidden * m
        head_sq = ((err @ err.transpose(1, 2)) * (h @ h.transpose(1, 2))).sum((1, 2)) / count.square()
    cheap = torch.stack([loss, head_sq.clamp_min(0).sqrt()], dim=1)
    return pooled.numpy().astype(np.float32), cheap.numpy().astype(np.float64)


class GradientNorms:
    """Per-example gradient norms of one model, by blueprint group: built once per rank, called per batch."""

    def __init__(self, model: Any) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = group_parameters((n, p.numel()) for n, p in named)
        self.model = model
        self.groups: tuple[str, ...] = tuple(groups)
        self.params = {n: p.detach() for n, p in named}
        gid = {n: group_of(n, groups) for n, _ in named}
        self.index = {n: self.groups.index(gid[n]) for n, _ in named}

    def __call__(self, tokens: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Per-group gradient norms, n × groups; J is the root of each row's sum of squares."""
        import torch
        from torch.func import functional_call, grad, vmap

        model = self.model

        def loss(params: dict[str, Any], x: Any, y: Any, mask: Any) -> Any:
            logits = functional_call(model, params, (x.unsqueeze(0),)).logits[0]
            nll = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            return (nll * mask).sum() / mask.sum()

        x, y, mask = padded(tokens, start, length)
        grads = vmap(grad(loss), in_dims=(None, 0, 0, 0))(self.params, x, y, mask)
        sq = np.zeros((start.size, len(self.groups)))
        for name, g in grads.items():
            sq[:, self.index[name]] += g.reshape(g.shape[0], -1).pow(2).sum(1).double().numpy()
        return np.sqrt(sq)


def total_norm(per_group: np.ndarray) -> np.ndarray:
    """J per example from its per-group norms."""
    return np.sqrt(np.square(per_group).sum(axis=1))


def batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, max(1, size))]


def gigabytes_per_batch(n_params: int, grad_batch: int) -> float:
    """The per-example gradients' memory for one vmap call (fp32)."""
    return 4.0 * n_params * grad_batch / 1e9 if n_params > 0 else math.nan


class ScoringRank:
    """One rank of a `cpr select` job (a Ray actor): the base model and the corpus's training tokens, loaded once;
    each call scores one chunk of windows and returns plain arrays."""

    def __init__(self, folder: str, arch: str, threads: int, train_bin: str, dtype: str) -> None:
        self.model = load_scorer(folder, arch, threads)
        self.tokens = np.memmap(train_bin, dtype=dtype, mode="r")
        self.norms: GradientNorms | None = None

    def features(self, start: np.ndarray, length: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
        parts = [features(self.model, self.tokens, start[s], length[s]) for s in batches(start.size, batch)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def gradient_norms(self, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        if self.norms is None:
            self.norms = GradientNorms(self.model)
        return self.norms(self.tokens, start, length)

    def groups(self) -> tuple[str, ...]:
        if self.norms is None:
            self.norms = GradientNorms(self.model)
        return self.norms.groups
