"""Our stop rule against the stoppers users pick today, replayed on the same recorded curve.

The anchors are the real classes, driven as their frameworks drive them, one evaluation at a time:
- Ray Tune's `ray.tune.stopper.TrialPlateauStopper` (called with each result dict; stops when the std of the last
  `num_results` values falls below `std` after `grace_period` results);
- transformers' `EarlyStoppingCallback` (its `on_evaluate` with the eval metrics, then the Trainer's own update of
  `state.best_metric`, as `Trainer._determine_best_metric` does after the callbacks run).
Both watch the curve's own metric: validation loss (lower is better) or Ψ (higher is better).

Figures per stopper: the stop check, Γ saved, and the share of the run's gain given up, where the gain is
Ψ_final − Ψ at the first check after step 0. The hindsight oracle at a tolerance τ stops at the earliest check whose
Ψ is within τ of that gain from the final Ψ: the most any stopper could save while giving up at most τ.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.replay import Curve, replay

PLATEAU_DEFAULTS: dict[str, Any] = {"std": 0.01, "num_results": 4, "grace_period": 4}
"""`TrialPlateauStopper`'s own defaults (ray.tune.stopper.trial_plateau)."""
PATIENCE_DEFAULTS: dict[str, Any] = {"early_stopping_patience": 1, "early_stopping_threshold": 0.0}
"""`EarlyStoppingCallback`'s own defaults (transformers.trainer_callback)."""
PLATEAU_GRID = [
    {"std": s, "num_results": n, "grace_period": n} for s in (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1) for n in (4, 8, 16)
]
PATIENCE_GRID = [
    {"early_stopping_patience": p, "early_stopping_threshold": t}
    for p in (1, 2, 3, 5, 10, 20)
    for t in (0.0, 0.0003, 0.001, 0.003, 0.01)
]


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
    psi_first: float
    """Ψ at the first check after step 0: the run's gain counts from it."""
    psi_is_loss: bool = True

    @property
    def gamma_saved_fraction(self) -> float:
        return 1.0 - self.gamma_at_stop / self.gamma_final if self.gamma_final > 0 else 0.0

    @property
    def psi_lost(self) -> float:
        return self.psi_final - self.psi_at_stop

    @property
    def gain_lost_fraction(self) -> float:
        """(Ψ_final − Ψ_stop) / (Ψ_final − Ψ_first): the share of the run's gain the stop gave up."""
        gain = self.psi_final - self.psi_first
        return self.psi_lost / gain if gain > 0 else math.nan

    @property
    def loss_increase_fraction(self) -> float:
        """(loss at stop − final loss) / final loss, with Ψ = −loss (NaN for a Ψ that is not a loss)."""
        if not self.psi_is_loss or not self.psi_final:
            return math.nan
        return (self.psi_final - self.psi_at_stop) / -self.psi_final

    @property
    def stop_fraction(self) -> float:
        """Γ at the stop as a share of the run's Γ."""
        return 1.0 - self.gamma_saved_fraction


def first_index(curve: Curve) -> int:
    """The first check after step 0 with a finite Ψ: the run's gain counts from there (the first check if none is)."""
    pairs = enumerate(zip(curve.steps, curve.psi, strict=True))
    return next((i for i, (s, p) in pairs if s > 0 and math.isfinite(p)), 0)


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
        psi_first=curve.psi[first_index(curve)],
        psi_is_loss=curve.psi_from_loss,
    )


def _metric(curve: Curve) -> list[float]:
    """The values the anchors watch: the loss itself for a loss curve, else Ψ."""
    return [-p for p in curve.psi] if curve.psi_from_loss else list(curve.psi)


def plateau(curve: Curve, kind: ResourceKind, **settings: Any) -> StopperOutcome:
    """Ray Tune's `TrialPlateauStopper` over the curve, one result per check (settings not given: its defaults)."""
    from ray.tune.stopper import TrialPlateauStopper

    settings = {**PLATEAU_DEFAULTS, **settings}
    stopper = TrialPlateauStopper(metric="m", mode="min" if curve.psi_from_loss else "max", **settings)
    index = next((i for i, v in enumerate(_metric(curve)) if stopper("trial", {"m": v})), None)
    setting = f"std={settings['std']:g} num_results={settings['num_results']} grace={settings['grace_period']}"
    return _outcome("Ray Tune TrialPlateauStopper", setting, curve, kind, index)


def patience(curve: Curve, kind: ResourceKind, **settings: Any) -> StopperOutcome:
    """transformers' `EarlyStoppingCallback` over the curve, with the Trainer's best-metric bookkeeping (settings not
    given: its defaults)."""
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

    settings = {**PATIENCE_DEFAULTS, **settings}
    callback = EarlyStoppingCallback(**settings)
    greater = not curve.psi_from_loss
    args = SimpleNamespace(metric_for_best_model="m", greater_is_better=greater)
    state, control = TrainerState(), TrainerControl()
    index = None
    for i, value in enumerate(_metric(curve)):
        callback.on_evaluate(args, state, control, metrics={"eval_m": value})
        if state.best_metric is None or (value > state.best_metric if greater else value < state.best_metric):
            state.best_metric = value  # Trainer._determine_best_metric, after the callbacks
        if control.should_training_stop:
            index = i
            break
    setting = f"patience={settings['early_stopping_patience']} threshold={settings['early_stopping_threshold']:g}"
    return _outcome("HF EarlyStoppingCallback", setting, curve, kind, index)


def ours(curve: Curve, config: StopRuleConfig) -> StopperOutcome:
    result = replay(curve, config)
    index = len(result.decisions) - 1 if result.stopped else None
    return _outcome("cpr", rule_setting(config), curve, config.resource, index)


def rule_setting(config: StopRuleConfig) -> str:
    if config.max_loss is not None:
        eta = f"max_loss={config.max_loss:g}"
    elif config.eta is not None:
        eta = f"eta={config.eta:g}"
    else:
        eta = f"eta_rel={config.eta_rel:g}"
    return f"{eta} window={config.window} patience={config.patience}"


def oracle(curve: Curve, kind: ResourceKind, tau: float) -> StopperOutcome:
    """The earliest check whose Ψ is within τ of the gain from the final Ψ (hindsight: it knows the end)."""
    first = first_index(curve)
    final = next((p for p in reversed(curve.psi) if math.isfinite(p)), math.nan)
    floor = final - tau * (final - curve.psi[first])
    index = next(
        (i for i in range(first, len(curve)) if math.isfinite(curve.psi[i]) and curve.psi[i] >= floor), len(curve) - 1
    )
    return _outcome(f"oracle at τ = {tau:g}", "hindsight", curve, kind, index)


def best_at_equal_loss(outcomes: list[StopperOutcome], psi_lost_max: float) -> StopperOutcome | None:
    """The setting that saves the most Γ while losing no more Ψ than `psi_lost_max` (None if no setting does)."""
    fair = [o for o in outcomes if o.psi_lost <= psi_lost_max + 1e-12]
    return max(fair, key=lambda o: o.gamma_saved_fraction, default=None)


def compare_stoppers(curve: Curve, rule: StopRuleConfig, *, tau: float | None = None) -> list[StopperOutcome]:
    """Full budget, ours, (the oracle at τ,) and each anchor at its defaults and at its best setting with Ψ lost
    ≤ ours."""
    kind = rule.resource
    mine = ours(curve, rule)
    rows = [_outcome("full budget", "", curve, kind, None), mine]
    if tau is not None:
        rows.append(oracle(curve, kind, tau))
    for run, defaults, grid in (
        (plateau, PLATEAU_DEFAULTS, PLATEAU_GRID),
        (patience, PATIENCE_DEFAULTS, PATIENCE_GRID),
    ):
        at_defaults = run(curve, kind, **defaults)
        rows.append(replace(at_defaults, name=at_defaults.name + ", defaults"))
        best = best_at_equal_loss([run(curve, kind, **c) for c in grid], mine.psi_lost)
        if best is not None:
            rows.append(replace(best, name=best.name + ", best at Ψ lost ≤ ours"))
    return rows


def format_table(outcomes: list[StopperOutcome]) -> str:
    head = ("stopper", "setting", "stop step", "Γ saved", "gain lost", "Ψ lost", "loss +%")
    rows = [
        (
            o.name,
            o.setting,
            str(o.stop_step) if o.stopped else "–",
            f"{o.gamma_saved_fraction:.1%}",
            f"{o.gain_lost_fraction:.2%}",
            f"{o.psi_lost:.4f}",
            "–" if math.isnan(o.loss_increase_fraction) else f"{o.loss_increase_fraction:.2%}",
        )
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in itertools.chain([head], rows)) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in [head, *rows])
