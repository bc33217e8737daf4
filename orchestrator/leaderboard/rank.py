"""The leaderboard's ranking, pure: plain run records in, ranked rows out (no MLflow, no engine).

CPR = (Ψ − Ψ_baseline)/Γ_by: the capability a run gained per unit of one resource kind (Ψ is higher-is-better).
Runs are ranked against each other only on the same Ψ: the same Ψ name and units and the same evaluation set
(its fingerprint, param `cpr.eval_set`); each such group is one ranked block (docs/leaderboard.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from orchestrator.core.resources import ResourceKind
from orchestrator.errors import InputError

DEFAULT_BY = (ResourceKind.ENERGY_KWH.value, ResourceKind.TOKENS.value)
"""`--by` when not given: energy where any run measured it, else tokens (a job with telemetry off)."""


@dataclass(frozen=True, kw_only=True)
class CarbonCard:
    """How much a run used and how each figure was obtained (the paper's carbon disclosure, §6)."""

    energy_kwh: float | None = None
    energy_method: str = "not measured"
    """e.g. "NVML counter", "RAPL", "codecarbon TDP estimate"; several joined with " + "."""
    co2_kg: float | None = None
    co2_method: str = "not measured"
    grid_g_per_kwh: float | None = None
    grid_source: str = "not recorded"
    hardware: tuple[str, ...] = ()
    ranks: int | None = None
    wall_hours: float | None = None
    estimates: tuple[str, ...] = ()
    """What of it is an estimate, in words (from the run's tags `cpr.fallbacks`, `cpr.absent_sources`, …)."""


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One run as the ranking needs it."""

    run_id: str
    job_id: str
    state: str = ""
    kind: str | None = None
    """Tag `cpr.kind` (e.g. "select"): not a training run, set apart; None for a training run."""
    psi_name: str = "-val_loss"
    psi_units: str = "nats/token"
    eval_set: str | None = None
    """The evaluation set's fingerprint (param `cpr.eval_set`); None for a run from before it was recorded."""
    psi: float | None = None
    """Final Ψ (the last check's)."""
    psi_initial: float | None = None
    """Ψ of the model as it started, at step 0 before any update (metric cpr/psi_initial)."""
    psi_untrained_estimate: float | None = None
    """Ψ an untrained model would score, estimated (−ln V for a loss-type Ψ: uniform prediction); None if unknown."""
    gamma: dict[str, float] = field(default_factory=dict)
    gamma_saved: dict[str, float] = field(default_factory=dict)
    """Γ the stop left unspent, by kind: projected at the token budget − used (empty without a STOP)."""
    stop_reason: str | None = None
    rule_kind: str | None = None
    """The Γ kind the run's stop rule used."""
    card: CarbonCard = field(default_factory=CarbonCard)


@dataclass(frozen=True, kw_only=True)
class Row:
    """One ranked line."""

    rank: int | None
    """1 = best CPR in its group; None: not ranked (no baseline, or Γ_by not measured)."""
    entry: Entry
    baseline: float | None
    baseline_source: str
    gamma_by: float | None
    cpr: float | None
    saved_by: float | None
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Group:
    """Runs compared on the same Ψ, ranked."""

    psi_name: str
    psi_units: str
    eval_set: str | None
    rows: tuple[Row, ...]

    @property
    def why(self) -> str:
        """The sentence saying why these runs are compared with each other."""
        psi = f"Ψ = {self.psi_name} [{self.psi_units}]"
        if self.eval_set is None:
            return f"{psi}; evaluation set not recorded (runs from before cpr.eval_set): compared on Ψ's name alone"
        return f"{psi} on evaluation set {self.eval_set}: the same Ψ of the same held-out tokens, so comparable"


@dataclass(frozen=True, kw_only=True)
class Board:
    by: str
    groups: tuple[Group, ...]
    set_apart: tuple[Entry, ...] = ()
    """Runs that are not training runs (tag `cpr.kind`): listed, not ranked."""
    baseline_run: str | None = None


def measured(entries: Sequence[Entry], kind: str) -> bool:
    return any(kind in e.gamma for e in entries if e.kind is None)


def choose_by(entries: Sequence[Entry], by: str | None) -> str:
    """`--by` checked: a known kind some training run measured (InputError on --by otherwise)."""
    if by is None:
        return next((k for k in DEFAULT_BY if measured(entries, k)), DEFAULT_BY[0])
    kind = ResourceKind.parse(by, field="--by").value
    if entries and not measured(entries, kind):
        have = sorted({k for e in entries if e.kind is None for k in e.gamma})
        raise InputError(
            "--by", f"no run selected measured {kind}", f"use one they did: {', '.join(have) or 'none measured any'}"
        )
    return kind


def _default_baseline(e: Entry) -> tuple[float | None, str]:
    if e.psi_initial is not None and math.isfinite(e.psi_initial):
        return e.psi_initial, "Ψ at step 0"
    if e.psi_untrained_estimate is not None:
        return e.psi_untrained_estimate, "untrained estimate −ln V"
    return None, "none"


def _row(e: Entry, by: str, baseline: tuple[float | None, str]) -> Row:
    base, source = baseline
    g = e.gamma.get(by)
    cpr, note = None, ""
    if e.psi is None or not math.isfinite(e.psi):
        note = "no finite Ψ"
    elif base is None:
        note = "no baseline: give --baseline RUN"
    elif g is None or g <= 0:
        note = f"{by} not measured" if g is None else f"{by} is 0"
    else:
        cpr = (e.psi - base) / g
    return Row(
        rank=None,
        entry=e,
        baseline=base,
        baseline_source=source,
        gamma_by=g,
        cpr=cpr,
        saved_by=e.gamma_saved.get(by),
        note=note,
    )


def _order(r: Row) -> tuple[float, float, str]:
    return (-(r.cpr or 0.0), -(r.entry.psi or 0.0), r.entry.job_id)


def rank(entries: Sequence[Entry], *, by: str | None = None, baseline: Entry | None = None) -> Board:
    """The leaderboard: training runs grouped by (Ψ name, units, evaluation set), each group ranked by CPR
    descending (ties: higher Ψ, then job id); runs without a CPR follow, unranked, with a note saying why.
    `baseline`: a run whose final Ψ is Ψ_baseline for every run of its group (other groups keep their own)."""
    kind = choose_by(entries, by)
    training = [e for e in entries if e.kind is None]
    keys: dict[tuple[str, str, str | None], list[Entry]] = {}
    for e in training:
        keys.setdefault((e.psi_name, e.psi_units, e.eval_set), []).append(e)
    base_key = None if baseline is None else (baseline.psi_name, baseline.psi_units, baseline.eval_set)
    if baseline is not None and (baseline.psi is None or not math.isfinite(baseline.psi)):
        raise InputError("--baseline", f"run {baseline.job_id} has no finite final Ψ", "give a run that evaluated")
    groups = []
    for key, members in keys.items():
        rows = []
        for e in members:
            if key == base_key and baseline is not None:
                named: tuple[float | None, str] = (baseline.psi, f"run {baseline.job_id}")
                rows.append(_row(e, kind, named))
            else:
                rows.append(_row(e, kind, _default_baseline(e)))
        ranked = sorted((r for r in rows if r.cpr is not None), key=_order)
        rest = sorted((r for r in rows if r.cpr is None), key=lambda r: r.entry.job_id)
        out = [replace(r, rank=i) for i, r in enumerate(ranked, 1)] + rest
        groups.append(Group(psi_name=key[0], psi_units=key[1], eval_set=key[2], rows=tuple(out)))
    groups.sort(key=lambda g: (-len(g.rows), g.psi_name, g.eval_set or ""))
    apart = tuple(sorted((e for e in entries if e.kind is not None), key=lambda e: e.job_id))
    return Board(
        by=kind, groups=tuple(groups), set_apart=apart, baseline_run=None if baseline is None else baseline.job_id
    )
