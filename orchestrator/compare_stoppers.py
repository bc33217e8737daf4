"""Our stop rule against the anchors on one recorded curve: Γ saved and Ψ lost by each (pure replay)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from orchestrator.core.baselines import PatienceConfig, PatienceStopper, PlateauConfig, PlateauStopper
from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.replay import Curve, replay

PLATEAU_GRID = [PlateauConfig(std=s, num_results=n, grace_period=n) for s in (0.001, 0.003, 0.01, 0.03) for n in (4, 8)]
PATIENCE_GRID = [PatienceConfig(patience=p, threshold=t) for p in (1, 3, 5, 10) for t in (0.0, 0.001, 0.01)]


@dataclass(frozen=True, kw_only=True)
class StopperOutcome:
    name: str
    setting: str
    stopped: bool
    stop_step: int
    stop_index: int
    gamma_at_stop: float
    gamma_final: float
    psi_at_stop: float
    psi_final: float

    @property
    def gamma_saved_fraction(self) -> float:
        return 1.0 - self.gamma_at_stop / self.gamma_final if self.gamma_final > 0 else 0.0

    @property
    def psi_lost(self) -> float:
        return self.psi_final - self.psi_at_stop

    @property
    def loss_increase_fraction(self) -> float:
        """(loss at stop − final loss) / final loss, with Ψ = −loss."""
        return (self.psi_final - self.psi_at_stop) / -self.psi_final if self.psi_final else math.nan


def _outcome(name: str, setting: str, curve: Curve, kind: ResourceKind, index: int | None) -> StopperOutcome:
    last = len(curve) - 1
    i = last if index is None else index
    gam = curve.resources[kind]
    return StopperOutcome(
        name=name,
        setting=setting,
        stopped=index is not None,
        stop_step=int(curve.steps[i]),
        stop_index=i,
        gamma_at_stop=gam[i],
        gamma_final=gam[last],
        psi_at_stop=curve.psi[i],
        psi_final=curve.psi[last],
    )


def _first_stop(stopper: PlateauStopper | PatienceStopper, losses: list[float]) -> int | None:
    return next((i for i, loss in enumerate(losses) if stopper.observe(loss)), None)


def plateau(curve: Curve, config: PlateauConfig, kind: ResourceKind) -> StopperOutcome:
    losses = [-p for p in curve.psi]
    setting = f"std={config.std:g} num_results={config.num_results} grace={config.grace_period}"
    return _outcome(
        "plateau (Ray Tune TrialPlateauStopper)", setting, curve, kind, _first_stop(PlateauStopper(config), losses)
    )


def patience(curve: Curve, config: PatienceConfig, kind: ResourceKind) -> StopperOutcome:
    losses = [-p for p in curve.psi]
    setting = f"patience={config.patience} threshold={config.threshold:g}"
    return _outcome(
        "patience (HF EarlyStoppingCallback)", setting, curve, kind, _first_stop(PatienceStopper(config), losses)
    )


def ours(curve: Curve, config: StopRuleConfig) -> StopperOutcome:
    result = replay(curve, config)
    index = len(result.decisions) - 1 if result.stopped else None
    eta = f"eta={config.eta:g}" if config.eta is not None else f"eta_rel={config.eta_rel:g}"
    setting = f"{eta} window={config.window} patience={config.patience} {config.estimator.value}"
    return _outcome("cpr (ΔΨ/ΔΓ < η)", setting, curve, config.resource, index)


def best_at_equal_loss(outcomes: list[StopperOutcome], psi_lost_max: float) -> StopperOutcome | None:
    """The setting that saves the most Γ while losing no more Ψ than `psi_lost_max` (None if no setting does)."""
    fair = [o for o in outcomes if o.psi_lost <= psi_lost_max + 1e-12]
    return max(fair, key=lambda o: o.gamma_saved_fraction, default=None)


def compare_stoppers(curve: Curve, rule: StopRuleConfig) -> list[StopperOutcome]:
    """Full budget, ours, and each anchor with its defaults and with its best setting at Ψ lost ≤ ours."""
    kind = rule.resource
    mine = ours(curve, rule)
    rows = [_outcome("full budget", "", curve, kind, None), mine]
    for run, defaults, grid in ((plateau, PlateauConfig(), PLATEAU_GRID), (patience, PatienceConfig(), PATIENCE_GRID)):
        rows.append(run(curve, defaults, kind))
        best = best_at_equal_loss([run(curve, c, kind) for c in grid], mine.psi_lost)
        if best is not None:
            rows.append(StopperOutcome(**{**best.__dict__, "name": best.name + ", best at Ψ lost ≤ ours"}))
    return rows


def format_table(outcomes: list[StopperOutcome]) -> str:
    head = ("stopper", "setting", "stop step", "Γ saved", "Ψ lost", "loss +%")
    rows = [
        (
            o.name,
            o.setting,
            str(o.stop_step) if o.stopped else "–",
            f"{o.gamma_saved_fraction:.1%}",
            f"{o.psi_lost:.4f}",
            f"{o.loss_increase_fraction:.2%}",
        )
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in itertools.chain([head], rows)) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in [head, *rows])
