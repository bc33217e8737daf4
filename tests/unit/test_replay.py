"""Replay over CSV curves: reading, checking, and the figures of a stop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.errors import InputError
from orchestrator.replay import read_curve, replay


def write_curve(path, n=60, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1) * 10
    tokens = steps * 1000.0
    loss = 2.0 + 5.0 * (tokens / 1e4) ** -0.4 + rng.normal(0, noise, n)
    lines = ["step,loss,tokens,energy_kwh"]
    lines += [f"{s},{float(v)!r},{float(t)!r},{float(t) * 1e-8!r}" for s, v, t in zip(steps, loss, tokens, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_loss_as_negative_psi(tmp_path):
    curve = read_curve(write_curve(tmp_path / "c.csv", n=10))
    assert curve.psi_from_loss and all(p < 0 for p in curve.psi)
    assert set(curve.resources) == {ResourceKind.TOKENS, ResourceKind.ENERGY_KWH}
    assert curve.default_resource() is ResourceKind.ENERGY_KWH


def test_stop_figures_are_consistent(tmp_path):
    curve = read_curve(write_curve(tmp_path / "c.csv"))
    r = replay(curve, StopRuleConfig(resource=ResourceKind.TOKENS, eta_rel=0.1, window=4, patience=2))
    assert r.stopped and r.reason == "marginal_return"
    i = curve.steps.index(r.stop_step)
    assert r.psi_at_stop == curve.psi[i] and r.gamma_at_stop == curve.resources[ResourceKind.TOKENS][i]
    assert r.gamma_saved_fraction == pytest.approx(1 - r.gamma_at_stop / r.gamma_final)
    assert r.psi_lost == pytest.approx(curve.psi[-1] - curve.psi[i])
    assert r.saved_fraction_by_kind["energy_kwh"] == pytest.approx(r.gamma_saved_fraction)
    # The forecast of the gain left to the end of the curve is close to what the rest of the curve really gave.
    assert r.forecast.ok
    assert r.forecast.psi_gain_to_budget == pytest.approx(r.psi_lost, rel=0.05)
    d = r.to_dict()
    for key in (
        "stopped",
        "stop_step",
        "psi_at_stop",
        "gamma_at_stop",
        "psi_final",
        "gamma_final",
        "gamma_saved_fraction",
        "psi_lost",
        "reason",
        "forecast",
    ):
        assert key in d


def test_no_stop_means_nothing_saved(tmp_path):
    curve = read_curve(write_curve(tmp_path / "c.csv", n=20))
    r = replay(curve, StopRuleConfig(resource=ResourceKind.TOKENS, eta=0.0))
    assert not r.stopped and r.gamma_saved_fraction == 0.0 and r.psi_lost == 0.0 and r.forecast is None


def test_diverged_curve(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("step,loss,tokens\n1,3.0,10\n2,2.5,20\n3,nan,30\n4,inf,40\n")
    r = replay(read_curve(path), StopRuleConfig(resource=ResourceKind.TOKENS, eta=0.0, window=2, max_nonfinite=2))
    assert r.stopped and r.reason == "diverged" and r.stop_step == 4 and r.psi_final == -2.5


@pytest.mark.parametrize(
    ("text", "field_part"),
    [
        ("loss,tokens\n1,2\n", "'step'"),
        ("step,tokens\n1,2\n", "'psi' or 'loss'"),
        ("step,psi,loss,tokens\n1,2,3,4\n", "'psi' or 'loss'"),
        ("step,loss,tokens,joules\n1,2,3,4\n", "'joules'"),
        ("step,loss\n1,2\n", "no resource column"),
        ("step,loss,tokens\n1,abc,3\n", "column 'loss'"),
        ("step,loss,tokens\n1.5,2,3\n", "column 'step'"),
        ("step,loss,tokens\n1,2,5\n2,2,4\n", "column 'tokens'"),
        ("step,loss,tokens\n1,2,-5\n", "column 'tokens'"),
        ("step,loss,tokens\n1,2,inf\n", "column 'tokens'"),
        ("step,loss,tokens\n2,2,1\n1,2,3\n", "column 'step'"),
        ("step,loss,tokens\n1,2\n", "line 2"),
        ("step,loss,tokens,tokens\n1,2,3,3\n", "'tokens'"),
        ("", "is empty"),
        ("step,loss,tokens\n", "no rows"),
    ],
)
def test_bad_csv_names_the_field(tmp_path, text, field_part):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_curve(path)
    assert field_part in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_short_curve_and_absent_resource(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_curve(tmp_path / "nope.csv")
    curve = read_curve(write_curve(tmp_path / "c.csv", n=3))
    with pytest.raises(InputError, match="fewer than the window"):
        replay(curve, StopRuleConfig(resource=ResourceKind.TOKENS, window=5))
    with pytest.raises(InputError, match="no 'flops' column"):
        replay(curve, StopRuleConfig(resource=ResourceKind.FLOPS, window=2))


def test_json_of_a_result_is_strict(tmp_path):
    import json

    path = tmp_path / "c.csv"
    path.write_text("step,loss,tokens\n1,nan,10\n2,nan,20\n3,nan,30\n")
    r = replay(read_curve(path), StopRuleConfig(resource=ResourceKind.TOKENS, eta=0.0, window=2))
    assert math.isnan(r.psi_final)
    from orchestrator.core.numbers import json_safe

    assert json.loads(json.dumps(json_safe(r.to_dict()), allow_nan=False))["psi_final"] is None
