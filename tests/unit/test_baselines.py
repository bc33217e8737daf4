"""The anchors behave as the code they mirror (Ray Tune TrialPlateauStopper, HF EarlyStoppingCallback)."""

from __future__ import annotations

import pytest

from orchestrator.compare_stoppers import compare_stoppers, format_table
from orchestrator.core.baselines import PatienceConfig, PatienceStopper, PlateauConfig, PlateauStopper
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.errors import InputError
from orchestrator.replay import read_curve

CURVE = "orchestrator/examples/tiny_llama_stdlib.csv"


def first_stop(stopper, values) -> int | None:
    return next((i for i, v in enumerate(values) if stopper.observe(v)), None)


def test_plateau_waits_for_grace_and_a_full_window_then_stops_on_small_std() -> None:
    flat = [1.0] * 10
    assert first_stop(PlateauStopper(PlateauConfig(std=0.01, num_results=4, grace_period=6)), flat) == 5
    assert first_stop(PlateauStopper(PlateauConfig(std=0.01, num_results=4, grace_period=0)), flat) == 3


def test_plateau_does_not_stop_while_values_still_move() -> None:
    falling = [5.0 - 0.1 * i for i in range(30)]  # std of 4 values 0.1 apart is 0.112
    assert first_stop(PlateauStopper(PlateauConfig(std=0.1)), falling) is None
    assert first_stop(PlateauStopper(PlateauConfig(std=0.2)), falling) == 3


def test_plateau_metric_threshold_holds_the_stop() -> None:
    stopper = PlateauStopper(PlateauConfig(std=0.01, grace_period=0, metric_threshold=0.5, mode="min"))
    assert first_stop(stopper, [1.0] * 6 + [0.4] * 4) == 9


def test_patience_counts_checks_without_improvement_and_resets_on_one() -> None:
    losses = [3.0, 2.9, 2.95, 2.96, 2.8, 2.85, 2.86, 2.87]
    assert first_stop(PatienceStopper(PatienceConfig(patience=3)), losses) == 7
    assert first_stop(PatienceStopper(PatienceConfig(patience=2)), losses) == 3


def test_patience_threshold_is_absolute() -> None:
    losses = [3.0, 2.995, 2.99, 2.985]  # improvements of 0.005 < threshold 0.01 do not count
    assert first_stop(PatienceStopper(PatienceConfig(patience=2, threshold=0.01)), losses) == 2
    assert first_stop(PatienceStopper(PatienceConfig(patience=2, threshold=0.0)), losses) is None


@pytest.mark.parametrize("bad", [{"std": 0}, {"num_results": 1}, {"grace_period": -1}, {"mode": "up"}])
def test_bad_plateau_settings(bad) -> None:
    with pytest.raises(InputError):
        PlateauConfig(**bad)


def test_compare_on_the_shipped_curve() -> None:
    rows = compare_stoppers(read_curve(CURVE), StopRuleConfig())
    by = {r.name: r for r in rows}
    ours = by["cpr (ΔΨ/ΔΓ < η)"]
    assert ours.stop_step == 1920 and round(ours.gamma_saved_fraction, 3) == 0.240
    assert by["full budget"].gamma_saved_fraction == 0 and not by["full budget"].stopped
    for r in rows:
        assert r.gamma_saved_fraction == pytest.approx(1 - r.gamma_at_stop / r.gamma_final)
        if "best at" in r.name:
            assert r.psi_lost <= ours.psi_lost + 1e-12
    table = format_table(rows)
    assert all(r.name in table for r in rows)
