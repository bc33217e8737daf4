"""Decoder-only transformers built from config with `transformers` (Llama, GPT-2): random init, never downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.core.flops import FlopsModel
from orchestrator.errors import InputError


@dataclass(frozen=True, kw_only=True)
class ParamCount:
    total: int
    embedding: int
    """Input embedding table(s): a lookup, not a matmul (excluded from FLOPs' N)."""


def llama_intermediate(hidden: int) -> int:
    """Llama's MLP width rule: 8/3·h rounded up to a multiple of 8 (the shipped llama-2m uses 344 = 8/3·128 → 344)."""
    return 8 * -(-(8 * hidden // 3) // 8)


def hf_config(cfg: Any, vocab_size: int) -> Any:
    """The transformers config object for a ModelConfig (validated)."""
    if cfg.arch not in ("llama", "gpt2"):
        raise InputError("model.arch", f"unknown architecture {cfg.arch!r}", "use llama or gpt2")
    if cfg.hidden_size % cfg.num_heads:
        raise InputError(
            "model.num_heads",
            f"hidden_size {cfg.hidden_size} is not divisible by {cfg.num_heads} heads",
            "pick num_heads that divides hidden_size",
        )
    if cfg.arch == "llama":
        from transformers import LlamaConfig

        kv = cfg.num_kv_heads or cfg.num_heads
        if cfg.num_heads % kv:
            raise InputError("model.num_kv_heads", f"{kv} does not divide num_heads {cfg.num_heads}", "use a divisor")
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size or llama_intermediate(cfg.hidden_size),
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=kv,
            max_position_embeddings=cfg.max_position_embeddings,
            tie_word_embeddings=cfg.tie_word_embeddings,
            attention_dropout=cfg.dropout,
        )
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size,
        n_positions=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
    )


def model_class(arch: str) -> Any:
    """The transformers class of an architecture: LlamaForCausalLM or GPT2LMHeadModel."""
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    return LlamaForCausalLM if arch == "llama" else GPT2LMHeadModel


def build_model(cfg: Any, vocab_size: int, seq_len: int, seed: int) -> Any:
    """A randomly initialised causal LM (the seed fixes the init, the same on every rank)."""
    import torch

    if seq_len > cfg.max_position_embeddings:
        raise InputError(
            "model.max_position_embeddings",
            f"{cfg.max_position_embeddings} < train.seq_len {seq_len}",
            "raise it or shorten train.seq_len",
        )
    torch.manual_seed(seed)
    return model_class(cfg.arch)(hf_config(cfg, vocab_size))


def count_parameters(cfg: Any, vocab_size: int) -> ParamCount:
    """Parameter counts from a model built on the meta device: exact, instant, no memory even at 125M."""
    import torch

    with torch.device("meta"):
        model = model_class(cfg.arch)(hf_config(cfg, vocab_size))
    total = sum(p.numel() for p in model.parameters())  # shared (tied) tensors are yielded once
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return ParamCount(total=total, embedding=embedding)


def flops_model(cfg: Any, vocab_size: int, seq_len: int) -> FlopsModel:
    """N = all parameters but the input embedding tables (a tied head still counts once as a matmul)."""
    counts = count_parameters(cfg, vocab_size)
    n = counts.total - counts.embedding
    if cfg.tie_word_embeddings:
        n += vocab_size * cfg.hidden_size
    return FlopsModel(n_matmul_params=n, n_layers=cfg.num_layers, d_model=cfg.hidden_size, seq_len=seq_len)
