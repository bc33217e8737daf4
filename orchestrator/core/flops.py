"""Training FLOPs from model size and tokens: the `flops` kind of Γ.

Per token, a dense decoder-only transformer costs 6·N FLOPs for the parameter matmuls (2 forward, 4 backward;
Kaplan et al. 2020, §2.1) plus the attention score and value matmuls, 2·2·L·T·d forward, i.e. 12·L·T·d for
forward + backward (PaLM, Chowdhery et al. 2022, App. B). Here N counts the parameters that take part in a
matmul for every token: all weights except the input embedding tables (a lookup, not a matmul); a tied output
head is counted once, as a matmul. The causal mask's halving of the attention term is not applied, as in PaLM's
and nanoGPT's MFU accounting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class FlopsModel:
    """What the FLOP count of a training token depends on."""

    n_matmul_params: int
    """N: parameters used in a matmul per token (non-embedding weights plus the output head)."""
    n_layers: int
    """L: transformer blocks."""
    d_model: int
    """d: hidden size (= heads × head dim)."""
    seq_len: int
    """T: tokens per training sequence (context length)."""

    def __post_init__(self) -> None:
        for name in ("n_matmul_params", "n_layers", "d_model", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FlopsModel.{name} must be a positive integer, got {value!r}")

    @property
    def per_token(self) -> float:
        """Training FLOPs per token: 6·N + 12·L·T·d."""
        return 6.0 * self.n_matmul_params + 12.0 * self.n_layers * self.seq_len * self.d_model

    def training_flops(self, tokens: float) -> float:
        """FLOPs spent training on `tokens` tokens."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens!r}")
        return self.per_token * float(tokens)
