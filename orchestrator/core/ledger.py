"""Resource ledger: cumulative Γ of every kind from telemetry samples (docs/maths.md; Γ of §3).

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

Memory is bounded (the controller holds one ledger per job for the whole run): a series keeps only its newest
`TAIL_POINTS` points, with the running total at each of them, so the total of everything older is folded into the
oldest kept point. Within that tail all of the above holds exactly. A sample older than the whole tail is rejected
as late (`n_late`, also counted in `n_rejected`), never folded in: it may well be a replay of a sample already
dropped from the tail (its id is no longer remembered), and rejecting keeps the totals idempotent. A genuinely new
one that late would change little: a counter reading between two counted ones adds nothing their difference does
not already count (unless the counter reset in between), a power reading only refines the trapezoid.
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
TAIL_POINTS = 32
"""Points kept per (source, metric) series: how far back a late sample may still be placed in order, and how far
back a repeated id is still recognised; older ones are rejected as late. At one reading a second per source that is
half a minute of reordering; the controller holds (and persists after every check) this many points for every
rank's every meter, ~35 MiB at 1,024 ranks × 3 meters (benchmarks/scale)."""


class Metric(StrEnum):
    POWER_W = "power_w"
    ENERGY_J = "energy_j"
    MEMORY_GB = "memory_gb"
    GPU_COUNT = "gpu_count"
    TOKENS = "tokens"


INSTANT = frozenset({Metric.POWER_W, Metric.MEMORY_GB, Metric.GPU_COUNT})
COUNTERS = frozenset({Metric.ENERGY_J, Metric.TOKENS})
_METRICS = {m.value: m for m in Metric}


class AddResult(StrEnum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


# Module-level aliases for the per-sample path: an Enum member read through its class costs a lookup each time.
_ADDED, _DUPLICATE, _REJECTED = AddResult.ADDED, AddResult.DUPLICATE, AddResult.REJECTED
_RESULTS = tuple(AddResult)
_ENERGY_J, _POWER_W = Metric.ENERGY_J, Metric.POWER_W


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
        metric = data["metric"]
        return cls(**{**data, "metric": _METRICS.get(metric) or Metric(metric)})  # the lookup: one per sample


def counter_increment(old: float, new: float, wrap: float | None) -> float:
    """What a cumulative counter gained between two readings, through resets and wraps."""
    if new >= old:
        return new - old
    if wrap is not None and old - new > wrap / 2:
        return new + wrap - old  # wrapped past its modulus
    return new  # reset: it restarted from 0


class _Series:
    """One (source, metric) series: its newest points sorted by (t, id), each with the series' total up to it."""

    __slots__ = ("cum", "ids", "instant", "metric", "points", "total", "trimmed", "wrap")

    def __init__(self, metric: Metric, wrap: float | None) -> None:
        self.metric = metric
        self.instant = metric in INSTANT
        self.wrap = wrap
        self.points: list[tuple[float, str, float]] = []  # (t_s, sample_id, value), at most TAIL_POINTS
        self.cum: list[float] = []  # cum[i]: the series' total from its first sample ever up to points[i]
        self.total = 0.0  # cum[-1]
        self.ids: set[str] = set()  # ids of `points` only
        self.trimmed = False  # older points were dropped: nothing may go before points[0] any more

    def _piece(self, a: tuple[float, str, float], b: tuple[float, str, float]) -> float:
        if self.instant:
            return 0.5 * (a[2] + b[2]) * (b[0] - a[0])  # trapezoid rule
        return counter_increment(a[2], b[2], self.wrap)

    def _recompute(self, start: int) -> None:
        """cum from `start` on, left to right as the in-order path adds: the same floats whatever the order."""
        points, cum = self.points, self.cum
        for i in range(max(start, 1), len(points)):
            cum[i] = cum[i - 1] + self._piece(points[i - 1], points[i])

    def add(self, t: float, sample_id: str, value: float) -> AddResult:
        if sample_id in self.ids:
            return _DUPLICATE
        point = (t, sample_id, value)
        points, cum = self.points, self.cum
        if not points:
            cum.append(0.0)
            points.append(point)
        elif (t, sample_id) >= points[-1][:2]:
            cum.append(cum[-1] + self._piece(points[-1], point))
            points.append(point)
        else:  # late arrival: insert in order and recompute the totals after it
            if self.trimmed and (t, sample_id) < points[0][:2]:
                return _REJECTED  # late: before the kept tail, whose cum[0] already folds its interval in
            i = bisect.bisect(points, point)
            points.insert(i, point)
            cum.insert(i, 0.0)
            self._recompute(i)
        self.ids.add(sample_id)
        if len(points) > TAIL_POINTS:  # one point more than the tail: fold the oldest in (cum[0] carries it)
            self.ids.discard(points.pop(0)[1])
            del cum[0]
            self.trimmed = True
        self.total = cum[-1]
        return _ADDED

    def to_dict(self, source: str) -> dict[str, Any]:
        return {
            "source": source,
            "metric": self.metric.value,
            "wrap": self.wrap,
            "points": list(self.points),
            "prefix": self.cum[0] if self.cum else 0.0,
            "trimmed": self.trimmed,
        }

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> _Series:
        """The series `to_dict` wrote: the same points, and the same totals (recomputed from the folded prefix)."""
        series = cls(Metric(entry["metric"]), entry["wrap"])
        series.points = [(float(t), str(sid), float(v)) for t, sid, v in entry["points"]]
        series.ids = {p[1] for p in series.points}
        series.cum = [0.0] * len(series.points)
        if series.cum:
            series.cum[0] = float(entry["prefix"])
            series._recompute(1)
        series.total = series.cum[-1] if series.cum else 0.0
        series.trimmed = bool(entry["trimmed"])
        return series


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
        self._offline_s = 0.0
        """Time the job was gone between its samples (interrupted or lost, until resumed): not its wall hours."""
        self.n_added = 0
        self.n_duplicates = 0
        self.n_rejected = 0
        self.n_late = 0
        """Of `n_rejected`, the samples older than their series' kept tail (`TAIL_POINTS`)."""

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
        result = series.add(t, sample.sample_id, value)
        if result is _DUPLICATE:
            self.n_duplicates += 1
            return result
        if result is _REJECTED:  # older than the series' kept tail
            self.n_rejected += 1
            self.n_late += 1
            return result
        self.n_added += 1
        if self._t_min is None or t < self._t_min:
            self._t_min = t
        if self._t_max is None or t > self._t_max:
            self._t_max = t
        return _ADDED

    def went_offline(self, until_t: float) -> None:
        """The job was gone from its newest sample until `until_t` (its resume): that span is no wall hour of its."""
        if self._t_max is not None and until_t > self._t_max:
            self._offline_s += until_t - self._t_max

    def add_many(self, samples: list[TelemetrySample]) -> dict[AddResult, int]:
        counts = dict.fromkeys(_RESULTS, 0)
        for sample in samples:
            counts[self.add(sample)] += 1
        return counts

    def energy_j_by_source(self) -> dict[str, float]:
        """Energy per source: its counter where it has one, else its integrated power."""
        counters: dict[str, float] = {}
        powers: dict[str, float] = {}
        for (src, m), s in self._series.items():
            if m is _ENERGY_J:
                counters[src] = s.total
            elif m is _POWER_W:
                powers[src] = s.total
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
            out[ResourceKind.WALL_HOURS] = max(0.0, self._t_max - self._t_min - self._offline_s) / S_PER_HOUR
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
            "series": [s.to_dict(src) for (src, _), s in self._series.items()],
            "t_range": [self._t_min, self._t_max],
            "reported": {k.value: v for k, v in self._reported.items()},
            "counts": [self.n_added, self.n_duplicates, self.n_rejected, self.n_late],
            **({"offline_s": self._offline_s} if self._offline_s else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourceLedger:
        """The ledger `to_dict` wrote; a state from before the bounded tail (every point, no prefix) is replayed."""
        fm = data["flops_model"]
        ledger = cls(
            flops_model=FlopsModel(**fm) if fm else None,
            carbon_intensity_kg_per_kwh=data["carbon_intensity_kg_per_kwh"],
        )
        for entry in data["series"]:
            metric = Metric(entry["metric"])
            if "prefix" in entry:
                ledger._series[(entry["source"], metric)] = _Series.from_dict(entry)
                continue
            for t, sid, value in entry["points"]:  # the older format: every point ever, replayed in order
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
        if "t_range" in data:
            ledger._t_min, ledger._t_max = data["t_range"]
        ledger._reported = {ResourceKind(k): v for k, v in data["reported"].items()}
        ledger._offline_s = float(data.get("offline_s", 0.0))
        counts = list(data["counts"])
        ledger.n_added, ledger.n_duplicates, ledger.n_rejected = counts[:3]
        ledger.n_late = counts[3] if len(counts) > 3 else 0
        return ledger
