"""Ψ as the job defines it (`psi=`): the pure definitions, and the controller's tracker and stop rule fed a user's
rising task score instead of −validation loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.core import names
from orchestrator.core.decisions import StopReason
from orchestrator.core.job_tracker import JobTracker
from orchestrator.core.psi import PsiKind, PsiSpec, domain_mix, normalised
from orchestrator.core.reports import EvalReport
from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.errors import InputError
from orchestrator.replay import read_curve, replay

T0 = 1_000.0
ACCURACY = PsiSpec(kind=PsiKind.fn, name="accuracy", units="fraction", fn="pkg.evals:accuracy")


def score_tracker(psi: PsiSpec | None = ACCURACY) -> JobTracker:
    return JobTracker(
        job_id="j",
        rule_config=StopRuleConfig(resource=ResourceKind.TOKENS),
        enforce=True,
        max_tokens=100_000,  # 100 checks of 1,000 tokens
        start_t=T0,
        psi=psi,
    )


def accuracy(i: int, noise: float) -> float:
    """A task score in [0, 1] that rises and saturates at 0.8."""
    return 0.8 - 0.7 * math.exp(-i / 8.0) + noise


def test_a_rising_task_score_in_0_1_drives_the_stop_rule_and_replays_from_its_curve(tmp_path) -> None:
    """Ψ = a score in [0, 1] (never ≤ 0, never −loss), while the validation loss rises (overfitting): the budget-aware
    rule still stops on Ψ's flat part, logs Ψ as the score, and `cpr replay` of the curve (a `psi` column) agrees."""
    t = score_tracker()
    noise = np.random.default_rng(0).normal(0.0, 0.0005, 100)
    stop = None
    for i in range(1, 101):
        val_loss = 3.0 + 0.01 * i  # rising: a Ψ = −val_loss rule would never see a gain
        report = EvalReport(step=10 * i, tokens=1000 * i, val_loss=val_loss, t_s=T0 + i, psi=accuracy(i, noise[i - 1]))
        out = t.on_eval(report)
        assert out.metrics[names.PSI] == report.psi and out.metrics[names.VAL_LOSS] == val_loss
        if out.halt:
            stop = out.decision
            break
    assert stop is not None and stop.reason is StopReason.MARGINAL_RETURN
    assert 20 <= stop.check <= 80 and 0 < stop.psi < 1
    assert stop.evidence is not None and stop.evidence.gain > 0.5  # the score's gain, not the loss's
    summary = t.summary()
    assert summary["psi_definition"]["name"] == "accuracy" and summary["psi_definition"]["units"] == "fraction"
    assert "validation loss" not in summary["why"]  # no "share of the loss" where Ψ is not one
    csv = tmp_path / "curve.csv"
    csv.write_text(t.curve_csv())
    assert csv.read_text().startswith("step,psi,")
    again = replay(read_curve(csv), t.rule.config, max_tokens=t.max_tokens)
    assert again.stopped and again.stop_step == stop.step


def test_the_divergence_guard_reads_the_validation_loss_whatever_psi_is() -> None:
    """A score can stay finite on NaN weights: non-finite validation losses still stop the job as diverged."""
    t = score_tracker()
    outcomes = [
        t.on_eval(EvalReport(step=i, tokens=1000 * i, val_loss=math.nan, t_s=T0 + i, psi=0.5)) for i in range(1, 4)
    ]
    assert outcomes[-1].halt and outcomes[-1].decision.reason is StopReason.DIVERGED


def test_domain_mix_metrics_and_the_default_psi_is_minus_the_validation_loss() -> None:
    t = score_tracker(PsiSpec(kind=PsiKind.domains, name="-mix", weights={"general": 0.25, "code": 0.75}))
    losses = {"general": 2.0, "code": 4.0}
    report = EvalReport(
        step=1,
        tokens=1000,
        val_loss=2.0,
        t_s=T0,
        psi=domain_mix(losses, {"general": 0.25, "code": 0.75}),
        domain_losses=losses,
    )
    metrics = t.on_eval(report).metrics
    assert metrics[names.PSI] == -3.5
    assert metrics[names.domain_loss("code")] == 4.0 and metrics[names.domain_loss("general")] == 2.0
    plain = EvalReport(step=1, tokens=1, val_loss=2.5, t_s=T0)
    assert plain.psi == -2.5 and plain.psi_name == "-val_loss"
    assert EvalReport.from_dict({"step": 1, "tokens": 1, "val_loss": 2.5, "t_s": T0}).psi == -2.5  # an older report


def test_the_tracker_keeps_its_psi_through_json_and_an_older_state_reads_as_val_loss() -> None:
    t = score_tracker()
    assert JobTracker.from_dict(t.to_dict()).psi == ACCURACY
    old = t.to_dict()
    del old["psi"]
    assert JobTracker.from_dict(old).psi == PsiSpec()


def test_weights_are_normalised_and_checked() -> None:
    assert normalised({"general": 1, "code": 3}) == {"general": 0.25, "code": 0.75}
    assert domain_mix({"general": 2.0, "code": 4.0, "unused": 9.0}, {"general": 0.5, "code": 0.5}) == -3.0
    assert math.isnan(domain_mix({"general": math.nan}, {"general": 1.0}))
    with pytest.raises(InputError, match=r"psi.weights.code: must be a finite number ≥ 0"):
        normalised({"general": 1, "code": -1})
    with pytest.raises(InputError, match=r"psi.weights: are all 0"):
        normalised({"general": 0})


def test_the_run_records_what_its_psi_is() -> None:
    """The params a leaderboard groups runs by: the same Ψ (name, units, direction) or not comparable."""
    assert PsiSpec().params() == {
        "psi.kind": "val_loss",
        "psi.name": "-val_loss",
        "psi.units": "nats/token",
        "psi.higher_is_better": "true",
    }
    assert ACCURACY.params()["psi.fn"] == "pkg.evals:accuracy" and ACCURACY.label() == "Ψ = accuracy [fraction]"
