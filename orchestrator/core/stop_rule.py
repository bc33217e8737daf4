"""The marginal-return stop rule (§3): stop when the windowed ΔΨ/ΔΓ stays below η for P successive checks.

At each evaluation check t the rule takes (Ψ_t, Γ_t), keeps the last w finite points, and estimates the
ratio r_t = ΔΨ/ΔΓ over them (`slopes`). No marginal-return decision is taken during warm-up (fewer than
`min_checks` checks, or Γ below `min_fraction` of the budget). η takes one of three forms:

- **budget-aware (the default, `max_loss` = δ)**: η_t = δ′·G_t / (B − Γ_t), with G_t the Ψ gained since the first
  check and B the Γ at the run's budget (the `horizon` of each check: for a token budget, Γ projected from the
  run's own rate), δ′ = δ/(1 − δ). "Stop when the rest of the budget would buy less than δ of the run's gain."
  The test is made on an upper estimate of what is left (`gain_left`): the recent checks' upper-confidence slope times
  B − Γ_t, refined by the saturating forecast where its fit is good. The ratio the rule reports is that estimate
  per Γ unit left, the most the rest of the budget would pay on average, so ratio < η ⇔ left < δ′·G_t. Without a
  budget the horizon is 2·Γ_t: stop when as much again as spent so far would buy less than δ of the gain.
- **absolute** (`eta`): η in Ψ units per Γ unit.
- **relative** (`eta_rel` = ρ): η = ρ·r_ref, where r_ref is the first positive window ratio after warm-up.

Γ reaching the budget stops at once; `max_nonfinite` successive non-finite Ψ stop the run as diverged.
The rule's state is plain data that serialises to JSON and restores exactly, so a controller can restart
without losing or repeating a decision.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.core.decisions import Action, Decision, StopReason
from orchestrator.core.forecast import fit_forecast
from orchestrator.core.gain_left import GainLeft, below, gain_left
from orchestrator.core.numbers import is_finite_number
from orchestrator.core.resources import ResourceKind
from orchestrator.core.slopes import SlopeEstimator, window_slope
from orchestrator.errors import InputError

HISTORY_MAX = 1024
"""The (Γ, Ψ) history kept for the forecast is thinned to at most this many points (bounded memory)."""

STATE_FORMAT = 1

DEFAULT_MAX_LOSS = 0.01
"""δ used when no threshold is given: stop when the rest of the budget would buy less than 1 % of the run's gain.
The one default of `cpr submit` and `cpr replay`; `benchmarks/stopping` measures it on real public curves."""
DEFAULT_WINDOW = 5
DEFAULT_PATIENCE = 3
DEFAULT_MIN_CHECKS = 8
"""No decision before the 8th check: a window of 5 needs 5, and the first checks follow the initialisation."""
MAX_LOSS_RANGE = (0.0, 0.5)


def _require(name: str, value: Any, ok: Callable[[Any], bool], requirement: str, fix: str) -> None:
    if not ok(value):
        raise InputError(f"stop.{name}", f"{requirement}, got {value!r}", fix)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True, kw_only=True)
class StopRuleConfig:
    """Settings of the stop rule; validated on construction (one InputError naming the field)."""

    resource: ResourceKind = ResourceKind.ENERGY_KWH
    """Which kind of Γ the rule divides by."""
    window: int = DEFAULT_WINDOW
    """w: evaluation checks (points) in the moving window; at least 2."""
    patience: int = DEFAULT_PATIENCE
    """P: successive checks with ratio < η before stopping."""
    max_loss: float | None = None
    """δ in (0, 0.5]: the budget-aware η, the share of the run's gain one accepts to give up. At most one of
    `max_loss`, `eta` and `eta_rel` is set; when none is, δ = DEFAULT_MAX_LOSS."""
    eta: float | None = None
    """Absolute threshold η in Ψ units per Γ unit (≥ 0)."""
    eta_rel: float | None = None
    """ρ in (0, 1]: η = ρ·r_ref, relative to the first positive window ratio after warm-up."""
    min_checks: int = DEFAULT_MIN_CHECKS
    """Warm-up: no marginal-return decision before this many checks."""
    min_fraction: float = 0.0
    """Warm-up: no marginal-return decision before Γ reaches this fraction of the budget (needs `budget`)."""
    budget: float | None = None
    """Budget cap on Γ: reaching it stops the run. None: no cap."""
    estimator: SlopeEstimator = SlopeEstimator.LSTSQ
    """How the window slope is estimated: endpoint, lstsq or theil-sen."""
    max_nonfinite: int = 3
    """Successive non-finite Ψ (NaN/Inf loss) that stop the run as `diverged`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "resource", ResourceKind.parse(str(self.resource), field="stop.resource"))
        try:
            object.__setattr__(self, "estimator", SlopeEstimator(self.estimator))
        except ValueError:
            valid = ", ".join(e.value for e in SlopeEstimator)
            raise InputError(
                "stop.estimator", f"unknown estimator {self.estimator!r}", f"use one of: {valid}"
            ) from None
        _require(
            "window",
            self.window,
            lambda v: _is_int(v) and v >= 2,
            "must be an integer ≥ 2",
            "a slope needs at least two checks; use 2 or more",
        )
        _require(
            "patience",
            self.patience,
            lambda v: _is_int(v) and v >= 1,
            "must be an integer ≥ 1",
            "use 1 to stop at the first check below η",
        )
        _require(
            "min_checks",
            self.min_checks,
            lambda v: _is_int(v) and v >= 0,
            "must be an integer ≥ 0",
            "use 0 for no warm-up by count",
        )
        _require(
            "max_nonfinite",
            self.max_nonfinite,
            lambda v: _is_int(v) and v >= 1,
            "must be an integer ≥ 1",
            "use 1 to stop at the first non-finite evaluation",
        )
        given = [n for n in ("max_loss", "eta", "eta_rel") if getattr(self, n) is not None]
        if len(given) > 1:
            raise InputError(
                f"stop.{given[0]}",
                f"set only one of max_loss (budget-aware δ), eta (absolute) and eta_rel (relative ρ), got {given}",
                "e.g. stop.max_loss=0.01 alone, or stop.eta_rel=0.05 alone",
            )
        if not given:
            object.__setattr__(self, "max_loss", DEFAULT_MAX_LOSS)
        if self.max_loss is not None:
            lo, hi = MAX_LOSS_RANGE
            _require(
                "max_loss",
                self.max_loss,
                lambda v: is_finite_number(v) and lo < v <= hi,
                f"must be in ({lo:g}, {hi:g}]",
                "δ is the share of the run's gain you accept to give up, e.g. 0.01 for 1 %",
            )
        if self.eta is not None:
            _require(
                "eta",
                self.eta,
                lambda v: is_finite_number(v) and v >= 0,
                "must be a finite number ≥ 0",
                "η is the smallest ΔΨ/ΔΓ worth paying for",
            )
        if self.eta_rel is not None:
            _require(
                "eta_rel",
                self.eta_rel,
                lambda v: is_finite_number(v) and 0 < v <= 1,
                "must be in (0, 1]",
                "ρ is a fraction of the early reference ratio, e.g. 0.05",
            )
        if self.budget is not None:
            _require(
                "budget",
                self.budget,
                lambda v: is_finite_number(v) and v > 0,
                "must be a finite number > 0",
                "the budget is a cap on Γ in the resource's units; omit it for no cap",
            )
        _require(
            "min_fraction",
            self.min_fraction,
            lambda v: is_finite_number(v) and 0 <= v < 1,
            "must be in [0, 1)",
            "a fraction of the budget, e.g. 0.1",
        )
        if self.min_fraction > 0 and self.budget is None:
            raise InputError("stop.min_fraction", "needs a budget", "set stop.budget, or min_fraction=0")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["resource"] = self.resource.value
        data["estimator"] = self.estimator.value
        return data


@dataclass(kw_only=True)
class StopRuleState:
    """Everything the rule remembers between checks; plain data for JSON."""

    checks: int = 0
    window_gamma: list[float] = field(default_factory=list)
    window_psi: list[float] = field(default_factory=list)
    checks_below: int = 0
    nonfinite_run: int = 0
    r_ref: float | None = None
    eta: float | None = None
    last_gamma: float | None = None
    psi_first: float | None = None
    """Ψ at the first check after the start (step > 0, Γ > 0): the budget-aware rule's gain counts from it."""
    gamma_first: float | None = None
    history_gamma: list[float] = field(default_factory=list)
    history_psi: list[float] = field(default_factory=list)
    stopped: Decision | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stopped"] = self.stopped.to_dict() if self.stopped else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StopRuleState:
        data = dict(data)
        stopped = data.pop("stopped")
        return cls(**data, stopped=Decision.from_dict(stopped) if stopped else None)


class StopRule:
    """Feeds (Ψ, Γ) checks one at a time and returns a Decision for each."""

    def __init__(self, config: StopRuleConfig, state: StopRuleState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else StopRuleState()
        if self.config.eta is not None and self.state.eta is None:
            self.state.eta = float(self.config.eta)

    @property
    def eta(self) -> float | None:
        """η in force: the absolute threshold, or ρ·r_ref once the reference ratio is known."""
        return self.state.eta

    @property
    def stopped(self) -> Decision | None:
        return self.state.stopped

    def observe(self, *, psi: float, gamma: float, step: int | None = None, horizon: float | None = None) -> Decision:
        """Take one evaluation check: Ψ (higher is better) and cumulative Γ of the rule's resource kind.

        `horizon`: the Γ the run will have spent at its budget, for the budget-aware η (a job with a token budget
        and Γ = energy projects it from its own rate at every check); None: `budget`, else 2·Γ (no budget)."""
        s, c = self.state, self.config
        if s.stopped is not None:
            raise RuntimeError(f"the rule already stopped at check {s.stopped.check} ({s.stopped.reason})")
        gamma = float(gamma)
        psi = float(psi)
        if not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"Γ must be finite and ≥ 0, got {gamma!r}")
        if s.last_gamma is not None and gamma < s.last_gamma:
            raise ValueError(f"Γ decreased from {s.last_gamma!r} to {gamma!r}: cumulative resources never do")
        s.checks += 1
        s.last_gamma = gamma
        warmup = s.checks < c.min_checks or (c.budget is not None and gamma < c.min_fraction * c.budget)

        evidence: GainLeft | None = None

        def decide(action: Action, reason: StopReason | None, ratio: float | None) -> Decision:
            forecast = None
            if action is Action.STOP and reason in (StopReason.MARGINAL_RETURN, StopReason.BUDGET):
                if c.max_loss is not None and evidence is not None:
                    forecast = evidence.forecast  # the fit the budget-aware test used, or none it could use
                else:
                    forecast = fit_forecast(s.history_gamma, s.history_psi, eta=s.eta, budget=c.budget)
            decision = Decision(
                check=s.checks,
                step=step,
                action=action,
                reason=reason,
                psi=psi,
                gamma=gamma,
                ratio=ratio,
                eta=s.eta,
                checks_below=s.checks_below,
                warmup=warmup,
                forecast=forecast,
                evidence=evidence,
            )
            if action is Action.STOP:
                s.stopped = decision
            return decision

        if not math.isfinite(psi):
            s.nonfinite_run += 1
            if s.nonfinite_run >= c.max_nonfinite:
                return decide(Action.STOP, StopReason.DIVERGED, None)
            return decide(Action.CONTINUE, None, None)
        s.nonfinite_run = 0
        self._remember(gamma, psi)
        if s.psi_first is None and gamma > 0 and (step is None or step > 0):
            s.psi_first, s.gamma_first = psi, gamma

        if c.budget is not None and gamma >= c.budget:
            return decide(Action.STOP, StopReason.BUDGET, self._ratio())
        ratio = self._ratio()
        if warmup or ratio is None:
            return decide(Action.CONTINUE, None, ratio)
        if c.max_loss is not None:
            evidence = self._gain_left(gamma, horizon)
            if evidence is None:
                return decide(Action.CONTINUE, None, ratio)
            # In ratio terms: the mean return the rest of the budget would pay at most, against η_t = δ′·G_t/(B − Γ_t).
            share = c.max_loss / (1.0 - c.max_loss)  # left ≤ δ′·gain ⇔ left / (gain + left) ≤ δ
            rest = evidence.horizon - gamma
            if rest > 0:
                s.eta = share * max(0.0, evidence.gain) / rest
                ratio = evidence.left / rest
            s.checks_below = s.checks_below + 1 if below(evidence, share) else 0
            if s.checks_below >= c.patience:
                return decide(Action.STOP, StopReason.MARGINAL_RETURN, ratio)
            return decide(Action.CONTINUE, None, ratio)
        if s.eta is None:  # relative η: the first positive ratio after warm-up is the reference (§3, η = ρ·r_ref)
            if ratio <= 0:
                return decide(Action.CONTINUE, None, ratio)
            s.r_ref = ratio
            s.eta = float(c.eta_rel) * ratio  # type: ignore[operator]
        s.checks_below = s.checks_below + 1 if ratio < s.eta else 0
        if s.checks_below >= c.patience:
            return decide(Action.STOP, StopReason.MARGINAL_RETURN, ratio)
        return decide(Action.CONTINUE, None, ratio)

    def user_stop(self, *, step: int | None = None, reason: StopReason = StopReason.USER) -> Decision:
        """A STOP from outside the rule (a person, a script, the scheduler), with the last check's figures."""
        if self.state.stopped is not None:
            return self.state.stopped
        self.state.stopped = self.stop_decision(reason, step=step)
        return self.state.stopped

    def stop_decision(self, reason: StopReason, *, step: int | None, psi: float | None = None) -> Decision:
        """A STOP for a reason outside the rule (user, token budget) with the last check's figures; state unchanged.

        `psi` overrides the window's last Ψ, e.g. with a later check seen after a shadow-mode STOP.
        """
        s = self.state
        if psi is None:
            psi = s.window_psi[-1] if s.window_psi else math.nan
        return Decision(
            check=s.checks,
            step=step,
            action=Action.STOP,
            reason=reason,
            psi=psi,
            gamma=s.last_gamma or 0.0,
            ratio=self._ratio(),
            eta=s.eta,
            checks_below=s.checks_below,
            warmup=False,
        )

    def _gain_left(self, gamma: float, horizon: float | None) -> GainLeft | None:
        """The budget-aware evidence at this check, from the checks since the first one after the start."""
        s, c = self.state, self.config
        if s.psi_first is None or s.gamma_first is None:
            return None
        if horizon is None:
            horizon = c.budget if c.budget is not None else 2.0 * gamma
        start = bisect.bisect_left(s.history_gamma, s.gamma_first)  # Γ never decreases: the history is sorted
        if len(s.history_gamma) - start < c.window:
            return None
        return gain_left(
            s.history_gamma[start:],
            s.history_psi[start:],
            psi_first=s.psi_first,
            horizon=max(horizon, gamma),
            window=c.window,
        )

    def _ratio(self) -> float | None:
        s = self.state
        if len(s.window_gamma) < self.config.window:
            return None
        return window_slope(s.window_gamma, s.window_psi, self.config.estimator)

    def _remember(self, gamma: float, psi: float) -> None:
        s, w = self.state, self.config.window
        s.window_gamma = [*s.window_gamma, gamma][-w:]
        s.window_psi = [*s.window_psi, psi][-w:]
        s.history_gamma.append(gamma)
        s.history_psi.append(psi)
        if len(s.history_gamma) > HISTORY_MAX:
            # Keep every other point of the history (newest kept): memory stays bounded, shape stays.
            s.history_gamma = s.history_gamma[::-1][::2][::-1]
            s.history_psi = s.history_psi[::-1][::2][::-1]

    def to_json(self) -> str:
        """Config and state as JSON; `from_json` restores a rule that decides exactly as this one would."""
        return json.dumps(
            {"format": STATE_FORMAT, "config": self.config.to_dict(), "state": self.state.to_dict()}, allow_nan=False
        )

    @classmethod
    def from_json(cls, text: str) -> StopRule:
        data = json.loads(text)
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown stop-rule state format {data.get('format')!r}")
        return cls(StopRuleConfig(**data["config"]), StopRuleState.from_dict(data["state"]))
