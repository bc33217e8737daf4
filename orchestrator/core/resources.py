"""Resource kinds Γ that the ledger tracks and the stop rule can use (docs/maths.md)."""

from __future__ import annotations

from enum import StrEnum


class ResourceKind(StrEnum):
    """A kind of cumulative resource Γ. The value is the name used in configs, CSV columns and metrics."""

    ENERGY_KWH = "energy_kwh"
    GPU_HOURS = "gpu_hours"
    VRAM_GB_HOURS = "vram_gb_hours"
    FLOPS = "flops"
    CO2_KG = "co2_kg"
    TOKENS = "tokens"
    WALL_HOURS = "wall_hours"

    @classmethod
    def parse(cls, name: str, *, field: str = "resource") -> ResourceKind:
        """The kind called `name`, or an InputError listing the valid names."""
        from orchestrator.errors import InputError

        try:
            return cls(name)
        except ValueError:
            valid = ", ".join(k.value for k in cls)
            raise InputError(field, f"unknown resource kind {name!r}", f"use one of: {valid}") from None


def projected_to_budget(value: float, tokens: float, max_tokens: float) -> float | None:
    """A cumulative Γ projected linearly to the token budget from the run's own rate so far (None before a token).

    The controller's horizon for the budget-aware rule, the summary's "projected at the token budget" and `cpr replay`
    of a curve with a tokens column all project the same way, so a replay decides as the live job did."""
    return value * max_tokens / tokens if tokens > 0 else None
