"""Resource ledger: cumulative Γ of every kind from telemetry samples (DESIGN.md §5; Γ of §3).

Samples arrive from many sources (one per GPU, per node's CPU/RAM meter, per training rank) as plain data.
Each (source, metric) pair is one time series:
- ``power_w``, ``memory_gb``, ``gpu_count``: instantaneous values, integrated over time with the trapezoid rule
  into energy (J), VRAM GB·s and GPU·s.
- ``energy_j``, ``tokens``: cumulative counters. The first sample of a series is its baseline (NVML's energy
  counter counts from driver load, not from job start; a token counter's baseline is 0). A counter that goes
  down was reset (it restarts from 0, so the new value is the increment) or, when the series declares a
  modulus and the drop is more than half of it, wrapped (increment = new + modulus − old).
A source with an energy counter uses it; its power samples count only where it has no counter (NVML's
total-energy counter is exact, integrated power is the fallback). FLOPs come from tokens through a
`FlopsModel`, CO₂ from energy through a carbon intensity, wall hours from the span of sample times.

Every sample carries an id: a repeated id is ignored (idempotent), and series are kept sorted by (time, id),
so the exact totals do not depend on arrival order. A late sample inside an already-integrated interval can
lower the trapezoid estimate; the reported Γ (`totals`) never decreases: it holds its previous value until
the exact total passes it again. A kind with no source is absent from `totals`, never zero-filled.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestrator.core.flops import FlopsModel
from orchestrator.core.resources import ResourceKind

J_PER_KWH = 3.6e6
S_PER_HOUR = 3600.0


class Metric(StrEnum):
    POWER_W = "power_w"
    ENERGY_J = "energy_j"
    MEMORY_GB = "memory_gb"
    GPU_COUNT = "gpu_count"
    TOKENS = "tokens"


INSTANT = frozenset({Metric.POWER_W, Metric.MEMORY_GB, Metric.GPU_COUNT})
COUNTERS = frozenset({Metric.ENERGY_J, Metric.TOKENS})


class AddResult(StrEnum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, kw_only=True)
class TelemetrySample:
    """One reading of one metric from one source."""

    sample_id: str
    """Unique per reading (e.g. "node0/gpu1/energy/1234"); a repeat is ignored."""
    source: str
    """What was measured: "node0/gpu1", "node0/cpu", "rank3", ..."""
    metric: Metric
    t_s: float
    """Sampler clock, seconds."""
    value: float
    counter_wrap: float | None = None
    """Modulus of a counter that wraps around, in the metric's unit; None for counters that only reset."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "source": self.source,
            "metric": self.metric.value,
            "t_s": self.t_s,
            "value": self.value,
            "counter_wrap": self.counter_wrap,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TelemetrySample:
        return cls(**{**data, "metric": Metric(data["metric"])})


def counter_increment(old: float, new: float, wrap: float | None) -> float:
    """What a cumulative counter gained between two readings, through resets and wraps."""
    if new >= old:
        return new - old
    if wrap is not None and old - new > wrap / 2:
        return new + wrap - old  # wrapped past its modulus
    return new  # reset: it restarted from 0


class _Series:
    """One (source, metric) series, sorted by (t, id), with its running integral or counter total."""

    def __init__(self, metric: Metric, wrap: float | None) -> None:
        self.metric = metric
        self.wrap = wrap
        self.points: list[tuple[float, str, float]] = []  # (t_s, sample_id, value)
        self.ids: set[str] = set()
        self.total = 0.0

    def _piece(self, a: tuple[float, str, float], b: tuple[float, str, float]) -> float:
        if self.metric in INSTANT:
            return 0.5 * (a[2] + b[2]) * (b[0] - a[0])  # trapezoid rule
        return counter_increment(a[2], b[2], self.wrap)

    def add(self, t: float, sample_id: str, value: float) -> bool:
        if sample_id in self.ids:
            return False
        self.ids.add(sample_id)
        point = (t, sample_id, value)
        if not self.points or point[:2] >= self.points[-1][:2]:
            if self.points:
                self.total += self._piece(self.points[-1], point)
            self.points.append(point)
        else:  # late arrival: insert in order and recompute, left to right as the incremental path does
            bisect.insort(self.points, point)
            total = 0.0
            for a, b in zip(self.points, self.points[1:], strict=False):
                total += self._piece(a, b)
            self.total = total
        return True


class ResourceLedger:
    """Cumulative Γ per resource kind from telemetry samples: idempotent, order-independent, never decreasing."""

    def __init__(
        self,
        *,
        flops_model: FlopsModel | None = None,
        carbon_intensity_kg_per_kwh: float | None = None,
    ) -> None:
        if carbon_intensity_kg_per_kwh is not None and not (
            math.isfinite(carbon_intensity_kg_per_kwh) and carbon_intensity_kg_per_kwh >= 0
        ):
            raise ValueError(f"carbon intensity must be finite and ≥ 0, got {carbon_intensity_kg_per_kwh!r}")
        self.flops_model = flops_model
        self.carbon_intensity_kg_per_kwh = carbon_intensity_kg_per_kwh
        self._series: dict[tuple[str, Metric], _Series] = {}
        self._t_min: float | None = None
        self._t_max: float | None = None
        self._reported: dict[ResourceKind, float] = {}
        self.n_added = 0
        self.n_duplicates = 0
        self.n_rejected = 0

    def add(self, sample: TelemetrySample) -> AddResult:
        """Take one sample. Non-finite or negative readings are rejected (counted, not raised): hardware lies."""
        value, t = float(sample.value), float(sample.t_s)
        if not (math.isfinite(value) and math.isfinite(t)) or value < 0:
            self.n_rejected += 1
            return AddResult.REJECTED
        key = (sample.source, sample.metric)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(sample.metric, sample.counter_wrap)
        if not series.add(t, sample.sample_id, value):
            self.n_duplicates += 1
            return AddResult.DUPLICATE
        self.n_added += 1
        self._t_min = t if self._t_min is None else min(self._t_min, t)
        self._t_max = t if self._t_max is None else max(self._t_max, t)
        return AddResult.ADDED

    def add_many(self, samples: list[TelemetrySample]) -> dict[AddResult, int]:
        counts = dict.fromkeys(AddResult, 0)
        for sample in samples:
            counts[self.add(sample)] += 1
        return counts

    def energy_j_by_source(self) -> dict[str, float]:
        """Energy per source: its counter where it has one, else its integrated power."""
        counters = {src: s.total for (src, m), s in self._series.items() if m is Metric.ENERGY_J}
        powers = {src: s.total for (src, m), s in self._series.items() if m is Metric.POWER_W}
        return {**{src: e for src, e in powers.items() if src not in counters}, **counters}

    def _sum(self, metric: Metric) -> float | None:
        parts = [s.total for (_, m), s in self._series.items() if m is metric]
        return math.fsum(parts) if parts else None

    def exact_totals(self) -> dict[ResourceKind, float]:
        """Γ of every kind that has a source, computed from all samples seen (may dip after a late sample)."""
        out: dict[ResourceKind, float] = {}
        energy = self.energy_j_by_source()
        if energy:
            out[ResourceKind.ENERGY_KWH] = math.fsum(energy.values()) / J_PER_KWH
            if self.carbon_intensity_kg_per_kwh is not None:
                out[ResourceKind.CO2_KG] = out[ResourceKind.ENERGY_KWH] * self.carbon_intensity_kg_per_kwh
        if (gpu_s := self._sum(Metric.GPU_COUNT)) is not None:
            out[ResourceKind.GPU_HOURS] = gpu_s / S_PER_HOUR
        if (vram_s := self._sum(Metric.MEMORY_GB)) is not None:
            out[ResourceKind.VRAM_GB_HOURS] = vram_s / S_PER_HOUR
        if (tokens := self._sum(Metric.TOKENS)) is not None:
            out[ResourceKind.TOKENS] = tokens
            if self.flops_model is not None:
                out[ResourceKind.FLOPS] = self.flops_model.training_flops(tokens)
        if self._t_min is not None and self._t_max is not None:
            out[ResourceKind.WALL_HOURS] = (self._t_max - self._t_min) / S_PER_HOUR
        return out

    def totals(self) -> dict[ResourceKind, float]:
        """Γ of every kind that has a source; never lower than what was reported before."""
        for kind, value in self.exact_totals().items():
            self._reported[kind] = max(value, self._reported.get(kind, value))
        return dict(self._reported)

    def gamma(self, kind: ResourceKind) -> float:
        """Γ of one kind; KeyError naming the kinds that do have a source when this one has none."""
        totals = self.totals()
        if kind not in totals:
            have = ", ".join(sorted(k.value for k in totals)) or "none"
            raise KeyError(f"no telemetry source measures {kind.value} (measured: {have})")
        return totals[kind]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a persistent store; `from_dict` rebuilds an identical ledger."""
        return {
            "carbon_intensity_kg_per_kwh": self.carbon_intensity_kg_per_kwh,
            "flops_model": None if self.flops_model is None else vars(self.flops_model),
            "series": [
                {"source": src, "metric": m.value, "wrap": s.wrap, "points": s.points}
                for (src, m), s in self._series.items()
            ],
            "reported": {k.value: v for k, v in self._reported.items()},
            "counts": [self.n_added, self.n_duplicates, self.n_rejected],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourceLedger:
        fm = data["flops_model"]
        ledger = cls(
            flops_model=FlopsModel(**fm) if fm else None,
            carbon_intensity_kg_per_kwh=data["carbon_intensity_kg_per_kwh"],
        )
        for entry in data["series"]:
            metric = Metric(entry["metric"])
            for t, sid, value in entry["points"]:
                ledger.add(
                    TelemetrySample(
                        sample_id=sid,
                        source=entry["source"],
                        metric=metric,
                        t_s=t,
                        value=value,
                        counter_wrap=entry["wrap"],
                    )
                )
        ledger._reported = {ResourceKind(k): v for k, v in data["reported"].items()}
        ledger.n_added, ledger.n_duplicates, ledger.n_rejected = data["counts"]
        return ledger
