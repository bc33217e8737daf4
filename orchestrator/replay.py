"""Replay the stop rule over a recorded curve: where it would have stopped, and what that would have saved.

A curve is a CSV file with a `step` column, then `psi` (higher is better) or `loss` (Ψ = −loss), then one
column per resource kind (`tokens`, `flops`, `energy_kwh`, ...), each cumulative. Every check of the CSV is
fed to `StopRule` in order, as the controller feeds live evaluations.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.decisions import Decision, StopReason
from orchestrator.core.forecast import Forecast, fit_forecast
from orchestrator.core.resources import ResourceKind, projected_to_budget
from orchestrator.core.stop_rule import StopRule, StopRuleConfig
from orchestrator.errors import InputError

MAX_CURVE_BYTES = 64 * 1024 * 1024
MAX_MAGNITUDE = 1e30  # beyond any real loss or resource total; squares and sums of such values stay finite
PSI_COLUMNS = ("psi", "loss")
PREFERRED_RESOURCES = (ResourceKind.ENERGY_KWH, ResourceKind.GPU_HOURS, ResourceKind.FLOPS, ResourceKind.TOKENS)


@dataclass(frozen=True, kw_only=True)
class Curve:
    """A recorded run: Ψ and cumulative Γ of each kind at every evaluation check."""

    source: str
    steps: tuple[int, ...]
    psi: tuple[float, ...]
    psi_from_loss: bool
    """True when the file had `loss` and Ψ = −loss."""
    resources: dict[ResourceKind, tuple[float, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.steps)

    def default_resource(self) -> ResourceKind:
        """energy_kwh when the curve has it, else the first of gpu_hours, flops, tokens, else the first column."""
        for kind in PREFERRED_RESOURCES:
            if kind in self.resources:
                return kind
        return next(iter(self.resources))


def _number(text: str, where: str, *, integer: bool = False) -> float:
    shown = repr(text.strip()[:40])
    try:
        value = float(text)
    except ValueError:
        raise InputError(where, f"{shown} is not a number", "every cell must be numeric") from None
    if math.isfinite(value) and abs(value) > MAX_MAGNITUDE:
        raise InputError(where, f"{shown} is beyond ±{MAX_MAGNITUDE:g}", "losses, Ψ and resources of a real run")
    if integer:
        if not value.is_integer():
            raise InputError(where, f"{shown} is not an integer", "steps are whole optimizer steps")
        if value < 0:
            raise InputError(where, f"{shown} is negative", "steps count optimizer steps from 0")
        return int(value)
    return value


def read_curve(path: str | Path) -> Curve:
    """Read and check a curve CSV; every problem is an InputError naming the file, row and column."""
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise InputError(name, f"cannot read the curve: {err.strerror}", "pass the path of a CSV file") from None
    if path.is_dir():
        raise InputError(name, "is a directory", "pass the path of a CSV file")
    if size > MAX_CURVE_BYTES:
        raise InputError(name, f"is {size} bytes, over the {MAX_CURVE_BYTES} byte cap", "thin the curve first")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's byte-order mark
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(name, f"is not a UTF-8 CSV file ({err})", "save it as comma-separated UTF-8 text") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise InputError(name, "is empty", "the first line names the columns: step, psi or loss, resources")
    header = [h.strip() for h in rows[0]]
    valid = ", ".join(k.value for k in ResourceKind)
    if "step" not in header:
        raise InputError(f"{name}: column 'step'", "is missing", "the first column is the optimizer step")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise InputError(f"{name}: column {dup!r}", "appears twice", "name each column once")
    psi_cols = [h for h in header if h in PSI_COLUMNS]
    if len(psi_cols) != 1:
        problem = "is missing" if not psi_cols else "both psi and loss given"
        raise InputError(f"{name}: column 'psi' or 'loss'", problem, "give exactly one: psi, or loss (Ψ = −loss)")
    resource_cols: list[ResourceKind] = []
    for h in header:
        if h == "step" or h in PSI_COLUMNS:
            continue
        try:
            resource_cols.append(ResourceKind(h))
        except ValueError:
            raise InputError(
                f"{name}: column {h!r}", "is not a known column", f"columns are step, psi or loss, and: {valid}"
            ) from None
    if not resource_cols:
        raise InputError(name, "has no resource column", f"add at least one cumulative column of: {valid}")

    steps: list[int] = []
    psi: list[float] = []
    res: dict[ResourceKind, list[float]] = {k: [] for k in resource_cols}
    from_loss = psi_cols[0] == "loss"
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(
                f"{name}: line {lineno}",
                f"has {len(row)} cells, the header has {len(header)}",
                "every row needs one value per column",
            )
        for col, cell in zip(header, row, strict=True):
            where = f"{name}: line {lineno}, column {col!r}"
            if col == "step":
                step = int(_number(cell, where, integer=True))
                if steps and step <= steps[-1]:
                    raise InputError(
                        where,
                        f"step {step} does not increase (previous {steps[-1]})",
                        "rows must be in step order, one per evaluation",
                    )
                steps.append(step)
            elif col in PSI_COLUMNS:
                value = _number(cell, where)  # NaN/Inf allowed: a diverged evaluation
                psi.append(-value if from_loss else value)
            else:
                kind = ResourceKind(col)
                value = _number(cell, where)
                if not math.isfinite(value) or value < 0:
                    raise InputError(
                        where, f"{cell.strip()!r} is not a finite number ≥ 0", "resources are cumulative amounts"
                    )
                if res[kind] and value < res[kind][-1]:
                    raise InputError(
                        where,
                        f"Γ decreases from {res[kind][-1]!r} to {value!r}",
                        "resource columns are cumulative and never decrease",
                    )
                res[kind].append(value)
    if not steps:
        raise InputError(name, "has a header but no rows", "add one row per evaluation check")
    return Curve(
        source=name,
        steps=tuple(steps),
        psi=tuple(psi),
        psi_from_loss=from_loss,
        resources={k: tuple(v) for k, v in res.items()},
    )


@dataclass(frozen=True, kw_only=True)
class ReplayResult:
    """Where the rule stopped on a curve, compared with running it to its end."""

    source: str
    resource: ResourceKind
    config: StopRuleConfig
    stopped: bool
    reason: str | None
    stop_step: int | None
    psi_at_stop: float | None
    gamma_at_stop: float | None
    psi_final: float
    gamma_final: float
    gamma_saved_fraction: float
    """(Γ_final − Γ_stop) / Γ_final for the rule's resource; 0 when it did not stop."""
    psi_lost: float
    """Ψ_final − Ψ_stop: what stopping gave up (negative when Ψ was higher at the stop)."""
    saved_fraction_by_kind: dict[str, float]
    ratio_at_stop: float | None
    eta: float | None
    n_checks: int
    decisions: tuple[Decision, ...]
    psi_from_loss: bool
    forecast: Forecast | None
    """The STOP's forecast; without a budget, the curve's last Γ stands in for it (what the run really spent)."""

    @property
    def last(self) -> Decision:
        return self.decisions[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "resource": self.resource.value,
            "stopped": self.stopped,
            "reason": self.reason,
            "stop_step": self.stop_step,
            "psi_at_stop": self.psi_at_stop,
            "gamma_at_stop": self.gamma_at_stop,
            "psi_final": self.psi_final,
            "gamma_final": self.gamma_final,
            "gamma_saved_fraction": self.gamma_saved_fraction,
            "psi_lost": self.psi_lost,
            "saved_fraction_by_kind": self.saved_fraction_by_kind,
            "ratio_at_stop": self.ratio_at_stop,
            "eta": self.eta,
            "checks": self.n_checks,
            "checks_run": len(self.decisions),
            "psi_is_negative_loss": self.psi_from_loss,
            "forecast": self.forecast.to_dict() if self.forecast else None,
            "config": self.config.to_dict(),
        }


def horizons(curve: Curve, kind: ResourceKind, max_tokens: float | None = None) -> list[float | None]:
    """The Γ at the run's budget as the live job would have known it at each check (the budget-aware η's B).

    With a `tokens` column the budget is `max_tokens` (default: the curve's last tokens, the run as recorded spent its
    budget) and Γ is projected to it from the run's rate so far, as the controller does; without one, the curve's
    last Γ."""
    gammas = curve.resources[kind]
    tokens = curve.resources.get(ResourceKind.TOKENS)
    if tokens is None:
        return [gammas[-1]] * len(curve)
    budget = float(max_tokens) if max_tokens is not None else tokens[-1]
    return [projected_to_budget(g, t, budget) for g, t in zip(gammas, tokens, strict=True)]


def replay(curve: Curve, config: StopRuleConfig, *, max_tokens: float | None = None) -> ReplayResult:
    """Run the stop rule over the curve's checks in order until it stops or the curve ends."""
    kind = config.resource
    if kind not in curve.resources:
        have = ", ".join(k.value for k in curve.resources)
        raise InputError("--resource", f"the curve has no {kind.value!r} column", f"use one of its columns: {have}")
    if len(curve) < config.window:
        raise InputError(
            curve.source,
            f"has {len(curve)} rows, fewer than the window ({config.window})",
            "use a smaller --window or a longer curve",
        )
    gammas = curve.resources[kind]
    ends = horizons(curve, kind, max_tokens) if config.budget is None else [None] * len(curve)
    rule = StopRule(config)
    decisions: list[Decision] = []
    for step, psi, gamma, end in zip(curve.steps, curve.psi, gammas, ends, strict=True):
        decision = rule.observe(psi=psi, gamma=gamma, step=step, horizon=end)
        decisions.append(decision)
        if decision.stopped:
            break
    last = decisions[-1]
    stopped = last.stopped
    i = len(decisions) - 1
    final_psi = next((p for p in reversed(curve.psi) if math.isfinite(p)), math.nan)
    saved = {
        k.value: (col[-1] - col[i]) / col[-1] if stopped and col[-1] > 0 else 0.0 for k, col in curve.resources.items()
    }
    forecast = last.forecast
    if stopped and last.reason is StopReason.MARGINAL_RETURN and config.budget is None and config.max_loss is None:
        s = rule.state
        forecast = fit_forecast(s.history_gamma, s.history_psi, eta=rule.eta, budget=gammas[-1])
    return ReplayResult(
        source=curve.source,
        resource=kind,
        config=config,
        stopped=stopped,
        reason=last.reason.value if last.reason else None,
        stop_step=last.step if stopped else None,
        psi_at_stop=last.psi if stopped and math.isfinite(last.psi) else None,
        gamma_at_stop=last.gamma if stopped else None,
        psi_final=final_psi,
        gamma_final=gammas[-1],
        gamma_saved_fraction=saved[kind.value],
        psi_lost=final_psi - last.psi if stopped and math.isfinite(last.psi) else 0.0,
        saved_fraction_by_kind=saved,
        ratio_at_stop=last.ratio if stopped else None,
        eta=rule.eta,
        n_checks=len(curve),
        decisions=tuple(decisions),
        psi_from_loss=curve.psi_from_loss,
        forecast=forecast,
    )
