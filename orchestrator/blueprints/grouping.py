"""Parameter names to blueprint ids (App. A.1 (i): "attn.0", "ffn.12"), with the prefixes each id covers.

An adapter freezes/unfreezes by prefix, so every id records the exact module paths (ending with ".") it covers
(docs/blueprints.md). Hugging Face Llama/Mistral/Qwen and GPT-2 names are recognised; a leading wrapper such as
``module.`` (DeepSpeed/DDP) or ``_orig_mod.`` (torch.compile) is ignored for matching but kept in the prefixes.
Anything else goes to the id ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

OTHER = "other"

# Leading wrappers added by engines around the model; they may stack (e.g. module._orig_mod.).
_WRAPPER = re.compile(r"^(?:module\.|_orig_mod\.|_forward_module\.)+")

# (pattern on the unwrapped name, id template). The first group (if any) is the block index; the match's
# end is the module path the id covers. Llama, Mistral, Qwen2 share the LlamaForCausalLM naming.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Llama / Mistral / Qwen
    (re.compile(r"^model\.embed_tokens\."), "embed"),
    (re.compile(r"^model\.layers\.(\d+)\.self_attn\."), "attn.{}"),
    (re.compile(r"^model\.layers\.(\d+)\.mlp\."), "ffn.{}"),
    (re.compile(r"^model\.layers\.(\d+)\.(?:input_layernorm|post_attention_layernorm)\."), "norm.{}"),
    (re.compile(r"^model\.norm\."), "norm.final"),
    # GPT-2
    (re.compile(r"^transformer\.(?:wte|wpe)\."), "embed"),
    (re.compile(r"^transformer\.h\.(\d+)\.attn\."), "attn.{}"),
    (re.compile(r"^transformer\.h\.(\d+)\.mlp\."), "ffn.{}"),
    (re.compile(r"^transformer\.h\.(\d+)\.(?:ln_1|ln_2)\."), "norm.{}"),
    (re.compile(r"^transformer\.ln_f\."), "norm.final"),
    # both
    (re.compile(r"^lm_head\."), "head"),
)

_BLOCK_ID = re.compile(r"^(?:attn|ffn|norm)\.(\d+)$")


@dataclass(frozen=True, kw_only=True)
class ParamGroup:
    """A blueprint id, the parameter-name prefixes it covers (sorted, distinct) and its parameter count."""

    id: str
    prefixes: tuple[str, ...]
    n_params: int


def _classify(name: str) -> tuple[str, str]:
    """(id, prefix) of one parameter name."""
    wrapper_match = _WRAPPER.match(name)
    wrapper = wrapper_match.group(0) if wrapper_match else ""
    bare = name[len(wrapper) :]
    for pattern, template in _RULES:
        m = pattern.match(bare)
        if m:
            gid = template.format(*m.groups()) if m.groups() else template
            return gid, wrapper + m.group(0)
    # Unmatched: the parameter's own module path; a top-level parameter (no module) is its own prefix.
    cut = name.rfind(".")
    return OTHER, (name[: cut + 1] if cut >= 0 else name)


def group_parameters(named_sizes: Iterable[tuple[str, int]]) -> dict[str, ParamGroup]:
    """Group (parameter name, numel) pairs into blueprint ids, in the order ids first appear (model order).

    Prefixes never overlap across ids: an unmatched parameter whose module path would also cover another id's
    parameters (e.g. a parameter held directly by ``model.``) is recorded by its full name instead.
    """
    order: list[str] = []
    prefixes: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    others: list[tuple[str, str]] = []  # (name, module path) of unmatched parameters
    seen: set[str] = set()
    for name, size in named_sizes:
        if not isinstance(name, str) or not name:
            raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"parameter {name!r}: size must be an int >= 0, got {size!r}")
        if name in seen:
            raise ValueError(f"parameter {name!r} appears twice")
        seen.add(name)
        gid, prefix = _classify(name)
        if gid not in prefixes:
            order.append(gid)
            prefixes[gid] = set()
            counts[gid] = 0
        counts[gid] += size
        if gid == OTHER:
            others.append((name, prefix))
        else:
            prefixes[gid].add(prefix)
    matched = {p for gid, ps in prefixes.items() if gid != OTHER for p in ps}
    for name, prefix in others:
        overlaps = any(q.startswith(prefix) for q in matched) if prefix.endswith(".") else False
        prefixes[OTHER].add(name if overlaps else prefix)
    return {gid: ParamGroup(id=gid, prefixes=tuple(sorted(prefixes[gid])), n_params=counts[gid]) for gid in order}


def _covers(prefix: str, name: str) -> bool:
    return name.startswith(prefix) if prefix.endswith(".") else name == prefix


def group_of(name: str, groups: Mapping[str, ParamGroup]) -> str:
    """The id whose prefixes cover `name` (the longest matching prefix wins); KeyError if none does."""
    best: tuple[int, str] | None = None
    for gid, group in groups.items():
        for prefix in group.prefixes:
            if _covers(prefix, name) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), gid)
    if best is None:
        raise KeyError(f"no blueprint id covers parameter {name!r}")
    return best[1]


def coarse_id(layer_id: str) -> str:
    """The layer-level id of a submodule id (§5 "Drift & refresh": fall back to coarser layer groups).

    attn.3 / ffn.3 / norm.3 -> layer.3; embed, head, norm.final, other and unknown ids are unchanged.
    """
    m = _BLOCK_ID.match(layer_id)
    return f"layer.{m.group(1)}" if m else layer_id
