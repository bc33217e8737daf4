"""What an adapt job logs of its selection and its engine's memory: MLflow metric names and values, and the summary's
short form (docs/adapt.md). Pure: the controller logs what these return."""

from __future__ import annotations

from typing import Any

from orchestrator.core.names import ADAPT_PREFIX
from orchestrator.core.numbers import is_finite_number

ROW_FIGURES = {
    "blueprint_norm": "blueprint_norm",  # Ḡᵢ
    "local_norm": "local_norm",  # G̃ᵢ
    "blueprint_share": "blueprint_share",
    "local_share": "local_share",
    "blended": "blended",  # G′ᵢ
    "ci_width": "ci_width",
    "weight": "ci_weight",
    "fraction": "trained_fraction",
}
"""Row field -> metric figure: `adapt/<figure>/<submodule id>`."""
SCALARS = ("a", "rho", "rho_coarse", "trainable_params", "total_params", "predicted_memory_bytes")
MEASURED = (
    "optimizer_state_bytes",
    "gradient_bytes",
    "trainable_params",
    "total_params",
    "optimizer_state_bytes_if_full",
    "memory_saved_bytes",
)


def selection_metrics(selection: dict[str, Any]) -> dict[str, float]:
    """A `Selection.to_dict()` as metrics: every unit's figures, ρ, a, and the trainable parameters and their share."""
    out: dict[str, float] = {}
    for row in selection.get("rows") or []:
        for field, figure in ROW_FIGURES.items():
            value = row.get(field)
            if is_finite_number(value):
                out[f"{ADAPT_PREFIX}{figure}/{row['id']}"] = float(value)
    for key in SCALARS:
        if is_finite_number(selection.get(key)):
            out[ADAPT_PREFIX + key] = float(selection[key])
    if selection.get("total_params"):
        out[ADAPT_PREFIX + "trainable_share"] = selection["trainable_params"] / selection["total_params"]
    out[ADAPT_PREFIX + "drift"] = 1.0 if selection.get("drift") else 0.0
    return out


def measured_metrics(measured: dict[str, Any]) -> dict[str, float]:
    """Rank 0's engine figures after its first step (bytes of optimizer state and gradients it holds)."""
    return {ADAPT_PREFIX + k: float(measured[k]) for k in MEASURED if is_finite_number(measured.get(k))}


def layer_kinds(targets: list[str]) -> str:
    """LoRA's target layers by kind, in order (`q_proj, k_proj, …`): their module names' last parts."""
    return ", ".join(dict.fromkeys(t.rsplit(".", 1)[-1] for t in targets))


def chosen_tag(selection: dict[str, Any]) -> str:
    """S_adapt as one tag: `id` or `id@fraction` for a partial one; `lora(r=…)` for LoRA."""
    lora = selection.get("lora")
    if lora:
        return f"lora(r={lora['rank']}: {len(lora['targets'])} layers: {layer_kinds(lora['targets'])})"[:5000]
    parts = [i if f >= 1 else f"{i}@{f:.3g}" for i, f in (selection.get("chosen") or {}).items()]
    return ", ".join(parts)[:5000]


def summary_of(record: dict[str, Any]) -> dict[str, Any]:
    """The summary's `adapt` entry: strategy, what was trained, drift and the memory measured."""
    sel = record.get("selection") or {}
    return {
        "strategy": sel.get("strategy"),
        "base": record.get("base"),
        "blueprint": record.get("blueprint"),
        "chosen": sel.get("chosen"),
        "lora": sel.get("lora"),
        "trainable_params": sel.get("trainable_params"),
        "total_params": sel.get("total_params"),
        "rho": sel.get("rho"),
        "drift": sel.get("drift"),
        "fallback": sel.get("fallback"),
        "measured": record.get("measured"),
    }
