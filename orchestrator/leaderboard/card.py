"""A run's carbon disclosure card from what it logged (tags, params, Γ by kind), pure: how much energy and CO₂,
and how each was obtained (docs/leaderboard.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from orchestrator.core import names
from orchestrator.leaderboard.rank import CarbonCard

# What a telemetry source's detail says (orchestrator/telemetry/sampler.py, cpu.py) → how its energy was obtained.
_METHODS = (
    ("NVML total-energy counter", "NVML counter"),
    ("integrating NVML power", "NVML power, integrated"),
    ("CPU power measured (intel_rapl", "RAPL"),
    ("CPU power measured (intel_power_gadget", "Intel Power Gadget"),
    ("CPU power measured (apple_powermetrics", "powermetrics"),
    ("CPU power estimated", "codecarbon TDP estimate"),
)


_SOURCE = re.compile(r"; (?=[\w.-]+/rank[\w-]*/\w+[:( ])")
"""Where one source's entry of `cpr.fallbacks` / `cpr.absent_sources` ends (a detail may hold `; ` itself)."""


def _split(tag: str | None, sep: str | re.Pattern[str] = _SOURCE) -> list[str]:
    if not tag or tag == "none":
        return []
    parts = tag.split(sep) if isinstance(sep, str) else sep.split(tag)
    return [p.strip() for p in parts if p.strip()]


def _by_detail(items: list[str], cut: str) -> list[str]:
    """`<source><cut><detail>` entries as one line per distinct detail, with how many sources gave it."""
    seen: dict[str, int] = {}
    for item in items:
        name, found, detail = item.partition(cut)
        key = detail.strip() if found else name
        seen[key] = seen.get(key, 0) + 1
    return [f"{d} ({n} source{'s' if n > 1 else ''})" for d, n in seen.items()]


def energy_methods(hardware: list[str], fallbacks: list[str]) -> str:
    """The ways the run's energy was obtained, e.g. "NVML counter + codecarbon TDP estimate"."""
    found: list[str] = []
    for text in hardware or fallbacks:
        for needle, label in _METHODS:
            if needle in text and label not in found:
                found.append(label)
    if any("RAM power estimated" in t for t in hardware or fallbacks):
        found.append("codecarbon RAM estimate")
    return " + ".join(found) or ("meters not recorded" if not hardware else "unknown")


def carbon_card(
    tags: Mapping[str, str],
    params: Mapping[str, str],
    gamma: Mapping[str, float],
    *,
    wall_hours: float | None = None,
) -> CarbonCard:
    """The card of one run. `wall_hours`: its MLflow start-to-end time, used where Γ wall_hours was not logged."""
    hardware, fallbacks = _split(tags.get(names.HARDWARE), " | "), _split(tags.get(names.FALLBACKS))
    absent = _split(tags.get(names.ABSENT_SOURCES))
    energy, co2 = gamma.get("energy_kwh"), gamma.get("co2_kg")
    country = params.get("telemetry.country_iso_code")
    grid = co2 / energy * 1000.0 if energy and co2 is not None else None
    method = energy_methods(hardware, fallbacks) if energy is not None else "not measured"
    estimates = [f"energy estimated: {f}" for f in _by_detail(fallbacks, ": ")]
    estimates += [f"absent, not counted: {a}" for a in _by_detail(absent, ": ")]
    if co2 is not None:
        estimates.append("CO₂ = energy × a country-average grid intensity, not the grid's at the time")
    try:
        ranks = int(params["cluster.num_workers"])
    except (KeyError, ValueError):
        ranks = None
    return CarbonCard(
        energy_kwh=energy,
        energy_method=method,
        co2_kg=co2,
        co2_method=f"energy ({method}) × grid intensity" if co2 is not None else "not measured",
        grid_g_per_kwh=grid,
        grid_source=f"codecarbon offline country average, {country}" if grid is not None and country else "none",
        hardware=tuple(hardware),
        ranks=ranks,
        wall_hours=gamma.get("wall_hours", wall_hours),
        estimates=tuple(estimates),
    )
