"""One job's decision state in the controller: ledger Γ, stop rule, decisions and the Ψ–Γ curve.

Pure and serialisable: the controller actor feeds it worker reports and telemetry, writes what it returns to
MLflow, and persists `to_dict()` after every check so a restarted controller continues without loss.

Its memory does not grow with the number of steps: the ledger keeps a bounded tail per series, the rule's history
is thinned (`stop_rule.HISTORY_MAX`), `decisions` keeps the last `DECISIONS_KEPT` plus the rule's own STOP (the
full log is the controller's append-only decisions.jsonl), and the Ψ–Γ curve is thinned to at most `CURVE_MAX`
rows, always with its first and latest row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from orchestrator.core import names
from orchestrator.core.cooldown import OFF, Cooldown, CooldownPlan
from orchestrator.core.decisions import Action, Decision, StopReason
from orchestrator.core.flops import FlopsModel
from orchestrator.core.forecast import OPTIMISTIC_WINDOW, fit_forecast, optimistic_psi_at
from orchestrator.core.gain_left import explain
from orchestrator.core.ledger import J_PER_KWH, AddResult, Metric, ResourceLedger, TelemetrySample
from orchestrator.core.psi import PsiSpec
from orchestrator.core.reports import EvalReport, TrainReport
from orchestrator.core.resources import ResourceKind, projected_to_budget
from orchestrator.core.stop_rule import StopRule, StopRuleConfig

TOKENS_SOURCE = "job/tokens"
CURVE_KINDS = tuple(ResourceKind)
DECISIONS_KEPT = 64
"""Decision records kept in memory, the newest, plus the first STOP, which is never dropped (at most one more)."""
CURVE_MAX = 1024
"""Rows of the Ψ–Γ curve kept: beyond it every other row is dropped (first and latest kept), so curve.csv and
`cpr replay` of it are exact for runs of up to this many checks and a thinned curve after."""


# Enum values looked up once: `.value` costs ~0.1 µs a read, and these run per sample and per check for every job.
_NAMES: dict[Any, str] = {k: k.value for k in (*ResourceKind, *AddResult)}
_GAMMA_KEYS = {k: names.gamma(k.value) for k in ResourceKind}
_STOP = Action.STOP.value


def _psi_of(row: dict[str, float]) -> float:
    """Ψ of a curve row (a row saved before `psi=` existed has only the loss: Ψ = −loss then)."""
    return row["psi"] if "psi" in row else -row["loss"]


def _thinned(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Half the rows: the first, and every other one counted back from the newest (as the rule's history)."""
    return [rows[0], *rows[-1:0:-2][::-1]]


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    """What one evaluation check produced: the rule's decision and the metrics to log at its step."""

    decision: Decision | None
    """None after a shadow-mode STOP: the job runs on, the rule has had its say."""
    metrics: dict[str, float]
    halt: bool
    """True when the workers must checkpoint and end now."""


class JobTracker:
    """Ledger + stop rule + decision log of one job."""

    def __init__(
        self,
        *,
        job_id: str,
        rule_config: StopRuleConfig,
        enforce: bool = True,
        max_tokens: int,
        flops_model: FlopsModel | None = None,
        carbon_intensity_kg_per_kwh: float | None = None,
        start_t: float | None,
        psi: PsiSpec | None = None,
        cooldown: CooldownPlan | None = None,
    ) -> None:
        """`start_t`: when its ranks started; None for a job still waiting in the queue (see `started`).
        `psi`: what Ψ is (None: −validation loss). `cooldown`: its STOP's cool-down settings (None: it halts)."""
        self.job_id = job_id
        self.plan = cooldown or OFF
        self.cooldown: Cooldown | None = None
        """Its STOP's cool-down, once one was decided."""
        self.psi = psi or PsiSpec()
        self.enforce = enforce
        self.max_tokens = int(max_tokens)
        self.rule = StopRule(rule_config)
        self.ledger = ResourceLedger(flops_model=flops_model, carbon_intensity_kg_per_kwh=carbon_intensity_kg_per_kwh)
        self.start_t: float | None = None
        if start_t is not None:
            self.started(start_t)
        self.decisions: list[dict[str, Any]] = []
        self.curve: list[dict[str, float]] = []
        self.stop: Decision | None = None
        self.last_train: TrainReport | None = None
        self.last_eval: EvalReport | None = None
        self.nonfinite_train = 0
        """Successive training reports with a NaN/Inf loss."""
        self._power_mark: tuple[float, dict[str, float]] | None = None

    # -- inputs ---------------------------------------------------------------------------------------------
    def started(self, t_s: float) -> None:
        """Its ranks started (the first time): the token counter's baseline, 0 tokens then, so wall hours count
        from here and not from its time in the queue. Later calls (a restart) change nothing."""
        if self.start_t is not None:
            return
        self.ledger.add(
            TelemetrySample(sample_id="tokens/0", source=TOKENS_SOURCE, metric=Metric.TOKENS, t_s=t_s, value=0.0)
        )
        self.start_t = t_s

    def on_telemetry(self, samples: list[TelemetrySample]) -> dict[str, int]:
        counts = self.ledger.add_many(samples)
        return {_NAMES[k]: v for k, v in counts.items()}

    def _tokens(self, step: int, tokens: int, t_s: float) -> None:
        self.ledger.add(
            TelemetrySample(
                sample_id=f"tokens/{step}", source=TOKENS_SOURCE, metric=Metric.TOKENS, t_s=t_s, value=tokens
            )
        )

    def on_train(self, report: TrainReport) -> dict[str, float]:
        """Metrics to log at the report's step."""
        self._tokens(report.step, report.tokens, report.t_s)
        if self.last_train is None or report.step >= self.last_train.step:  # retries may arrive out of order
            self.last_train = report
        self.nonfinite_train = 0 if math.isfinite(report.loss) else self.nonfinite_train + 1
        return {
            names.TRAIN_LOSS: report.loss,
            names.TRAIN_LR: report.lr,
            "throughput/tokens_per_s": report.tokens_per_s,
            "progress/tokens": float(report.tokens),
            "progress/fraction": report.tokens / self.max_tokens,
        }

    def resource_metrics(self, now_t: float) -> dict[str, float]:
        """energy/* (cumulative kWh, per source and total) and power/* (mean W since the previous call)."""
        by_source = self.ledger.energy_j_by_source()
        out: dict[str, float] = {}
        if not by_source:
            return out
        total = math.fsum(by_source.values())
        out["energy/total_kwh"] = total / J_PER_KWH
        for source, joules in by_source.items():
            out[f"energy/{source}_kwh"] = joules / J_PER_KWH
        if self._power_mark is not None:
            t0, before = self._power_mark
            dt = now_t - t0
            if dt > 0:
                out["power/total_w"] = max(0.0, (total - math.fsum(before.values())) / dt)
                for source, joules in by_source.items():
                    out[f"power/{source}_w"] = max(0.0, (joules - before.get(source, joules)) / dt)
        self._power_mark = (now_t, dict(by_source))
        return out

    def on_eval(self, report: EvalReport) -> CheckOutcome:
        """One evaluation check: Γ of every kind now, the rule's decision, the curve row."""
        self._tokens(report.step, report.tokens, report.t_s)
        self.last_eval = report
        totals = self.ledger.totals()
        kind = self.rule.config.resource
        row = {"step": float(report.step), "loss": report.val_loss, "psi": report.psi}
        row.update({_NAMES[k]: v for k, v in totals.items()})
        self._add_row(row)
        metrics: dict[str, float] = {names.VAL_LOSS: report.val_loss, names.PSI: report.psi}
        metrics.update({names.domain_loss(d): v for d, v in report.domain_losses.items()})
        metrics.update({_GAMMA_KEYS[k]: v for k, v in totals.items()})
        c = self.cooldown
        if c is not None and c.active:  # a cool-down's check: logged, never the rule's (its ratio is the stable LR's)
            figures = self._figures(report, totals)
            if c.pending:  # a STOP decided between checks cools from this one
                c.begin(report.step, self.plan.steps_at(report.step), figures)
            elif not math.isfinite(report.val_loss):
                c.cut, c.end = StopReason.DIVERGED.value, figures
            else:
                c.reached(figures)
            metrics[names.COOLING] = 0.0 if not c.active else 1.0
            return CheckOutcome(decision=None, metrics=metrics, halt=not c.active)
        if self.rule.stopped is not None:  # shadow mode after the rule's STOP: keep the curve, no more decisions
            return CheckOutcome(decision=None, metrics=metrics, halt=False)
        if not self.plan.stable(report.step) and math.isfinite(report.val_loss):
            return CheckOutcome(decision=None, metrics=metrics, halt=False)  # the budget's own decay: not the rule's
        if kind not in totals:
            raise KeyError(f"no telemetry source measures {kind.value} (measured: {', '.join(sorted(totals))})")
        horizon = projected_to_budget(totals[kind], totals.get(ResourceKind.TOKENS, 0.0), self.max_tokens)
        # The divergence guard reads the validation loss whatever Ψ is: a user's score may stay finite on NaN weights.
        psi = report.psi if math.isfinite(report.val_loss) else math.nan
        decision = self.rule.observe(psi=psi, gamma=totals[kind], step=report.step, horizon=horizon)
        if decision.ratio is not None:
            metrics[names.RATIO] = decision.ratio
        if decision.eta is not None:
            metrics[names.ETA] = decision.eta
        metrics[names.CHECKS_BELOW] = float(decision.checks_below)
        if decision.evidence is not None:
            metrics[names.GAIN] = decision.evidence.gain
            metrics[names.LEFT] = decision.evidence.left
        halt = decision.stopped and (self.enforce or decision.reason is not StopReason.MARGINAL_RETURN)
        if halt and self.plan.cools(decision.reason, report.step):
            assert decision.reason is not None
            self.cooldown = Cooldown(reason=decision.reason.value, shape=self.plan.shape)
            self.cooldown.begin(report.step, self.plan.steps_at(report.step), self._figures(report, totals))
            metrics[names.COOLING] = 1.0
        self._record(decision, report.t_s)
        if decision.stopped and halt:
            self.stop = decision
        return CheckOutcome(decision=decision, metrics=metrics, halt=halt and not self.cooling)

    def train_diverged(self) -> Decision | None:
        """A STOP `diverged` once `max_nonfinite` training reports in a row had a non-finite loss (None otherwise, or
        when already stopped). The rule's own test sees only Ψ; a ZeRO optimizer that skips non-finite steps keeps
        the weights, and so Ψ, finite while every step is lost, which only the training loss shows."""
        if self.halted or self.nonfinite_train < self.rule.config.max_nonfinite:
            return None
        assert self.last_train is not None
        return self.user_stop(step=self.last_train.step, t_s=self.last_train.t_s, reason=StopReason.DIVERGED)

    def user_stop(
        self, *, step: int | None, t_s: float, reason: StopReason = StopReason.USER, cool: bool = True
    ) -> Decision:
        """A STOP from outside the rule: a person's or script's (`user`) or the scheduler's (`dominated`); the
        workers checkpoint and end. Under `stop.on_stop=cooldown` a `user` STOP cools from the next check (`cool`:
        False for a job with no ranks running to cool, one queued or paused); a STOP during a cool-down cuts it short
        (its ranks end at their next report)."""
        if self.stop is not None:
            if self.cooling:
                assert self.cooldown is not None
                self.cooldown.cut = reason.value
            return self.stop
        if self.rule.stopped is None:
            decision = self.rule.user_stop(step=step, reason=reason)
        else:  # after a shadow-mode STOP the rule is done; the curve has gone on
            decision = self.rule.stop_decision(reason, step=step, psi=self._last_psi())
        if cool and self.plan.cools(reason, step or 0):
            self.cooldown = Cooldown(reason=reason.value, shape=self.plan.shape)
        self._record(decision, t_s)
        self.stop = decision
        return decision

    def resume(self, t_s: float) -> None:
        """`cpr submit +resume` at `t_s`: the time it was gone is no wall hour of its, and an `interrupted` STOP is
        withdrawn (the rule's own state, window and decisions go on as persisted); any other STOP stands."""
        self.ledger.went_offline(t_s)
        if self.cooldown is not None and self.cooldown.cut == StopReason.INTERRUPTED.value:
            self.cooldown.cut = None  # it cools on from its checkpoint
        if self.stop is None or self.stop.reason is not StopReason.INTERRUPTED:
            return
        self.stop = None
        if self.rule.stopped is not None and self.rule.stopped.reason is StopReason.INTERRUPTED:
            self.rule.state.stopped = None

    def budget_reached(self, *, step: int, t_s: float) -> Decision:
        """The workers used the whole token budget (train.max_tokens) without a STOP: reason `budget`."""
        if self.stop is not None:
            return self.stop
        decision = self.rule.stop_decision(StopReason.BUDGET, step=step, psi=self._last_psi())
        self._record(decision, t_s)
        self.stop = decision
        return decision

    # -- outputs --------------------------------------------------------------------------------------------
    @property
    def halted(self) -> bool:
        """Its STOP is decided and its ranks end now (not while they cool down)."""
        return self.stop is not None and not self.cooling

    @property
    def cooling(self) -> bool:
        """Its STOP is decided and its ranks train a cool-down (or will from the next check) before they end."""
        return self.cooldown is not None and self.cooldown.active

    def cooldown_answer(self) -> list[int] | None:
        """[start step, steps] of a started cool-down, for the ranks' schedule (None: none, or not started yet)."""
        c = self.cooldown
        if c is None or c.start_step is None or c.cut is not None:
            return None
        return [c.start_step, c.steps]

    def _figures(self, report: EvalReport, totals: dict[ResourceKind, float]) -> dict[str, Any]:
        """Ψ, loss and Γ at a check: a cool-down's decision point and end."""
        return {
            "step": report.step,
            "tokens": report.tokens,
            "psi": report.psi,
            "val_loss": report.val_loss,
            "gamma": {_NAMES[k]: v for k, v in totals.items()},
        }

    def rule_decision(self) -> dict[str, Any] | None:
        """The rule's own STOP (also in shadow mode), as logged."""
        return next((d for d in self.decisions if d["action"] == Action.STOP.value), None)

    def view(self) -> dict[str, Any]:
        """A small snapshot for progress bars and `cpr status`."""
        last = self.decisions[-1] if self.decisions else None
        totals = self.ledger.totals()
        return {
            "job_id": self.job_id,
            "step": self.last_train.step if self.last_train else 0,
            "tokens": self.last_train.tokens if self.last_train else 0,
            "max_tokens": self.max_tokens,
            "loss": self.last_train.loss if self.last_train else None,
            "val_loss": self.last_eval.val_loss if self.last_eval else None,
            "psi": self.last_eval.psi if self.last_eval else None,
            "psi_name": self.psi.name,
            "resource": self.rule.config.resource.value,
            "gamma": {k.value: v for k, v in totals.items()},
            "ratio": last["ratio"] if last else None,
            "eta": last["eta"] if last else None,
            "checks": self.rule.state.checks,
            "decision": last["action"] if last else None,
            "reason": last["reason"] if last else None,
            "halted": self.halted,
            "cooldown_end": self.cooldown.end_step if self.cooling and self.cooldown is not None else None,
        }

    def summary(self) -> dict[str, Any]:
        """The run's closing figures (§3's report): Ψ, Γ of every kind with CO₂, last ratio, Γ saved, forecast."""
        totals = {k.value: v for k, v in self.ledger.totals().items()}
        tokens = totals.get(ResourceKind.TOKENS.value, 0.0)
        fraction_used = tokens / self.max_tokens if self.max_tokens else None
        # Γ the job would have used at its full token budget, projected linearly from its own rate so far.
        projected = {k: projected_to_budget(v, tokens, self.max_tokens) for k, v in totals.items()} if tokens else {}
        kind = self.rule.config.resource.value
        s = self.rule.state
        forecast = None
        rule_stop = self.rule.stopped
        if rule_stop is not None and (rule_stop.forecast is not None or rule_stop.evidence is not None):
            # the fit the STOP decided on, or none where the rule found none usable: the summary never contradicts it
            forecast = rule_stop.forecast.to_dict() if rule_stop.forecast else None
        elif s.history_gamma and projected.get(kind) is not None:
            fc = fit_forecast(
                s.history_gamma, s.history_psi, eta=s.eta, budget=max(projected[kind], s.history_gamma[-1])
            )
            forecast = fc.to_dict()
        stop = self.stop.to_dict() if self.stop else None
        return {
            "job_id": self.job_id,
            "stopped": self.stop is not None,
            "reason": self.stop.reason.value if self.stop and self.stop.reason else None,
            "decision": stop,
            "rule_decision": self.rule_decision(),
            "enforce": self.enforce,
            "psi": self.last_eval.psi if self.last_eval else None,
            "psi_definition": self.psi.to_dict(),
            "val_loss": self.last_eval.val_loss if self.last_eval else None,
            "step": self.last_eval.step if self.last_eval else None,
            "checks": s.checks,
            "resource": kind,
            "gamma": totals,
            "last_ratio": self._last_ratio(),
            "eta": s.eta,
            "r_ref": s.r_ref,
            "max_loss": self.rule.config.max_loss,
            "why": (self.rule_decision() or {}).get("why"),
            "tokens_budget": self.max_tokens,
            "budget_fraction_used": fraction_used,
            "gamma_projected_at_budget": projected,
            "gamma_saved_fraction": None if fraction_used is None else max(0.0, 1.0 - fraction_used),
            "forecast": forecast,
            "cooldown": self.cooldown.to_dict() if self.cooldown is not None else None,
            "energy_kwh_by_node": self.energy_kwh_by_node(),
            "ledger_counts": {
                "added": self.ledger.n_added,
                "duplicates": self.ledger.n_duplicates,
                "rejected": self.ledger.n_rejected,
                "late": self.ledger.n_late,
            },
        }

    def energy_kwh_by_node(self) -> dict[str, float]:
        """Energy per node (the first part of a source's name, `<node>/rank<r>/<meter>`), in kWh; their sum is the
        job's energy Γ as the ledger computes it now."""
        by_node: dict[str, list[float]] = {}
        for source, joules in self.ledger.energy_j_by_source().items():
            by_node.setdefault(source.split("/", 1)[0], []).append(joules)
        return {node: math.fsum(parts) / J_PER_KWH for node, parts in sorted(by_node.items())}

    def curve_csv(self) -> str:
        """The Ψ–Γ curve in `cpr replay`'s CSV format: step, then `loss` (psi=val_loss: Ψ = −loss) or `psi` (any
        other Ψ), then one cumulative column per kind measured."""
        kinds = [k.value for k in CURVE_KINDS if any(k.value in row for row in self.curve)]
        column = "loss" if self.psi.is_val_loss else "psi"
        lines = [",".join(["step", column, *kinds])]
        for row in self.curve:
            if not all(k in row for k in kinds):  # a kind that started late: the CSV needs full columns
                continue
            value = row["loss"] if self.psi.is_val_loss else _psi_of(row)
            cells = [str(int(row["step"])), repr(float(value)), *(repr(float(row[k])) for k in kinds)]
            lines.append(",".join(cells))
        return "\n".join(lines) + "\n"

    def _last_ratio(self) -> float | None:
        for d in reversed(self.decisions):
            if d.get("ratio") is not None:
                return d["ratio"]
        return None

    def _record(self, decision: Decision, t_s: float) -> None:
        record = {"job_id": self.job_id, "t_s": t_s, **decision.to_dict()}
        if decision.stopped and self.cooldown is not None and self.stop is None:  # the STOP that starts it
            record["cooldown"] = self.cooldown.span()
        max_loss = self.rule.config.max_loss
        if decision.stopped and decision.evidence is not None and max_loss is not None:
            loss = -decision.psi if self.psi.is_val_loss else None  # a share of the loss only where Ψ is one
            record["why"] = explain(decision.evidence, max_loss=max_loss, loss=loss)
        self.decisions.append(record)
        # Keep the newest DECISIONS_KEPT, and the first STOP before them (`rule_decision` must find that one).
        pinned = self.decisions[0]["action"] == _STOP
        if len(self.decisions) > DECISIONS_KEPT + pinned:
            del self.decisions[1 if pinned else 0]

    def _add_row(self, row: dict[str, float]) -> None:
        """Append a curve row; past CURVE_MAX keep the first row and every other one back from the newest."""
        self.curve.append(row)
        if len(self.curve) > CURVE_MAX:
            self.curve = _thinned(self.curve)  # a new list: a reader holding the old one sees it whole

    def psi_bound_at(self, step: int) -> float | None:
        """An optimistic Ψ at `step` (its last) from its recent checks, in steps rather than the rule's Γ: steps are
        tokens at a fixed global batch and, unlike measured energy, carry no start-up offset that would bend the
        curve in log scale (`forecast.optimistic_psi_at`; None while it has too few checks)."""
        rows = self.curve[-OPTIMISTIC_WINDOW:]
        return optimistic_psi_at([r["step"] for r in rows], [_psi_of(r) for r in rows], float(step))

    def _last_psi(self) -> float:
        return _psi_of(self.curve[-1]) if self.curve else math.nan

    # -- persistence ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "enforce": self.enforce,
            "max_tokens": self.max_tokens,
            "start_t": self.start_t,
            "psi": self.psi.to_dict(),
            "rule": self.rule.to_json(),
            "ledger": self.ledger.to_dict(),
            "decisions": self.decisions,
            "curve": self.curve,
            "stop": self.stop.to_dict() if self.stop else None,
            "last_train": self.last_train.to_dict() if self.last_train else None,
            "last_eval": self.last_eval.to_dict() if self.last_eval else None,
            "nonfinite_train": self.nonfinite_train,
            "plan": self.plan.to_dict(),
            "cooldown": self.cooldown.to_dict() if self.cooldown is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobTracker:
        rule = StopRule.from_json(data["rule"])
        tracker = cls.__new__(cls)
        tracker.job_id = data["job_id"]
        tracker.enforce = data["enforce"]
        tracker.max_tokens = data["max_tokens"]
        tracker.start_t = data["start_t"]
        tracker.psi = PsiSpec.from_dict(data["psi"]) if data.get("psi") else PsiSpec()
        tracker.rule = rule
        tracker.ledger = ResourceLedger.from_dict(data["ledger"])
        # A state saved before these bounds existed may hold more: bound it as the live path would have.
        decisions = list(data["decisions"])
        first_stop = next((d for d in decisions if d["action"] == Action.STOP.value), None)
        kept = decisions[-DECISIONS_KEPT:]
        pinned = first_stop is None or any(d is first_stop for d in kept)
        tracker.decisions = kept if pinned else [first_stop, *kept]
        tracker.curve = list(data["curve"])
        while len(tracker.curve) > CURVE_MAX:
            tracker.curve = _thinned(tracker.curve)
        tracker.stop = Decision.from_dict(data["stop"]) if data["stop"] else None
        tracker.last_train = TrainReport.from_dict(data["last_train"]) if data["last_train"] else None
        tracker.last_eval = EvalReport.from_dict(data["last_eval"]) if data["last_eval"] else None
        tracker.nonfinite_train = int(data.get("nonfinite_train", 0))
        tracker.plan = CooldownPlan.from_dict(data["plan"]) if data.get("plan") else OFF
        tracker.cooldown = Cooldown.from_dict(data["cooldown"]) if data.get("cooldown") else None
        tracker._power_mark = None
        return tracker
