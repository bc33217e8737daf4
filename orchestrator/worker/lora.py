"""LoRA on the engine side (docs/adapt.md): the linear layers the `lora` strategy sizes its rank over, and the model
wrapped with peft's LoRA adapters for that descriptor.

The selection (`orchestrator.adapt`, pure) only computes a `LoraDescriptor` from `LinearShape`s; this module reads
the shapes off a real model (`linear_shapes`), realises the descriptor with peft (`apply_lora`), and names the
parameters `build_engine(trainable=...)` keeps trainable (`lora_trainable`). torch, transformers and peft are
imported inside the functions, as elsewhere in orchestrator/worker.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.adapt import LinearShape, LoraDescriptor
from orchestrator.blueprints.grouping import coarse_id, group_parameters
from orchestrator.errors import InputError

_LORA_PARAM = re.compile(r"(?:^|\.)lora_[AB]\.")
"""peft's names of a LoRA pair's matrices: `...q_proj.lora_A.default.weight`, `...q_proj.lora_B.default.weight`."""


def _linear_types() -> tuple[type, ...]:
    """torch's Linear and GPT-2's Conv1D (a linear layer whose weight is stored (d_in, d_out))."""
    import torch

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is in the train extra with torch
        return (torch.nn.Linear,)
    return (torch.nn.Linear, Conv1D)


def _in_out(module: Any) -> tuple[int, int]:
    """(d_in, d_out) of a Linear (weight (d_out, d_in)) or a Conv1D (weight (d_in, d_out))."""
    import torch

    rows, cols = (int(s) for s in module.weight.shape)
    return (cols, rows) if isinstance(module, torch.nn.Linear) else (rows, cols)


def linear_shapes(model: Any) -> tuple[LinearShape, ...]:
    """Every linear layer (torch Linear, GPT-2's Conv1D) inside the model's transformer blocks, in model order, as
    `LinearShape(name=<module name>, d_in, d_out)`: the `SelectionRequest.linear_shapes` the `lora` strategy sizes
    its rank over. The lm head and the embeddings are left out (they are not in a block: attn.i / ffn.i / norm.i of
    `orchestrator.blueprints.grouping`).

    Names are module names as `model.named_modules()` gives them (`model.layers.0.self_attn.q_proj`), which is what
    the descriptor's `targets` carry through `_lora` unchanged and what peft's `target_modules` matches.
    """
    kinds = _linear_types()
    modules = [(n, m) for n, m in model.named_modules() if n and isinstance(m, kinds)]
    if not modules:
        return ()
    groups = group_parameters((f"{n}.weight", int(m.weight.numel())) for n, m in modules)
    in_block = {
        prefix for gid, g in groups.items() if coarse_id(gid).startswith("layer.") for prefix in g.prefixes
    }  # attn.i / ffn.i / norm.i prefixes: `model.layers.0.self_attn.`, `transformer.h.0.mlp.`, ...
    out = []
    for name, module in modules:
        if any(f"{name}.".startswith(p) for p in in_block):
            d_in, d_out = _in_out(module)
            out.append(LinearShape(name=name, d_in=d_in, d_out=d_out))
    return tuple(out)


def apply_lora(model: Any, descriptor: LoraDescriptor, *, alpha: float | None = None, dropout: float = 0.0) -> Any:
    """`model` wrapped by peft with rank-`descriptor.rank` LoRA adapters on `descriptor.targets` (module names, as
    `linear_shapes` gives them): a `PeftModelForCausalLM`, still called as `model(input_ids=x).logits`.

    lora_alpha is `alpha`, 2·rank by default (the update is scaled by alpha / rank = 2); no biases are trained.
    Afterwards only the LoRA A/B matrices require grad (peft freezes the base model), and their count is checked
    against `descriptor.trainable_params` = rank · Σ(d_in + d_out): InputError if a target is not a linear layer of
    the model, RuntimeError if peft's adapters hold another count. Pass `trainable=lora_trainable` to
    `build_engine`, so the optimizer gets the adapters only.
    """
    import peft

    if isinstance(descriptor.rank, bool) or not isinstance(descriptor.rank, int) or descriptor.rank < 1:
        raise InputError("lora.rank", f"must be an integer >= 1, got {descriptor.rank!r}")
    if not descriptor.targets:
        raise InputError("lora.targets", "is empty", "select with linear_shapes(model) in the request")
    kinds = _linear_types()
    modules = dict(model.named_modules())
    bad = [t for t in descriptor.targets if not isinstance(modules.get(t), kinds)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise InputError(
            "lora.targets",
            f"name no linear layer of the model: {shown}",
            "targets are module names, as linear_shapes(model) gives them",
        )
    import torch

    conv1d = [not isinstance(modules[t], torch.nn.Linear) for t in descriptor.targets]
    config = peft.LoraConfig(
        r=descriptor.rank,
        lora_alpha=2 * descriptor.rank if alpha is None else alpha,
        target_modules=list(descriptor.targets),
        lora_dropout=dropout,
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=all(conv1d),  # GPT-2's Conv1D stores its weight transposed
    )
    wrapped = peft.get_peft_model(model, config)
    trainable = [(n, p) for n, p in wrapped.named_parameters() if p.requires_grad]
    stray = [n for n, _ in trainable if not lora_trainable(n)]
    count = sum(p.numel() for _, p in trainable)
    if stray or count != descriptor.trainable_params:
        raise RuntimeError(
            f"LoRA adapters hold {count} trainable parameters, the descriptor {descriptor.trainable_params} "
            f"(rank {descriptor.rank} · {descriptor.params_per_rank})"
            + (f"; trainable besides the adapters: {', '.join(stray[:5])}" if stray else "")
        )
    return wrapped


def lora_trainable(name: str) -> bool:
    """Whether a parameter of an `apply_lora` model is a LoRA matrix (A or B): the `trainable` predicate for
    `build_engine`.

    Taking peft's requires_grad as it is (`trainable=None`) does not do: build_engine would then hand the optimizer
    every parameter, frozen base weights included, and its no-decay group (norms, biases) would hold only frozen
    tensors, which ZeRO 1/2 drops, leaving a group it cannot flatten; the predicate keeps the groups to the adapters.
    """
    return _LORA_PARAM.search(name) is not None
