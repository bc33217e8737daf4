"""benchmarks/cooldown: the three-run table and its goal line from synthetic summaries, and the replay of a WSD curve
(stop cold at the decay's start vs cooled to the end, against an uncooled companion) on synthetic curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.cooldown import (
    LossCurve,
    format_legs,
    format_replay,
    legs_from_summaries,
    log_trend,
    loss_at,
    replay_corpus,
    replay_row,
    run_replay,
    verdict,
)


def summary(step: int, loss: float, kwh: float, tokens: float, reason: str, cooldown: dict | None = None) -> dict:
    return {
        "step": step,
        "val_loss": loss,
        "psi": -loss,
        "gamma": {"energy_kwh": kwh, "tokens": tokens, "wall_hours": 0.1},
        "reason": reason,
        "decision": {"step": 600, "val_loss": 3.10} if reason != "budget" else None,
        "cooldown": cooldown,
    }


COOLDOWN = {
    "start_step": 600,
    "end_step": 720,
    "steps": 120,
    "shape": "1-sqrt",
    "reason": "stop rule",
    "decision": {"step": 600, "tokens": 600.0, "psi": -3.10, "val_loss": 3.10, "gamma": {"tokens": 600.0}},
    "end": {"step": 720, "psi": -3.01, "val_loss": 3.01},
    "psi_gained": 0.09,
    "cut": False,
}


def three(cooled_loss: float = 3.01, cooled_tokens: float = 720.0) -> dict:
    return {
        "full": summary(1000, 3.00, 1.0, 1000.0, "budget"),
        "cold": summary(600, 3.10, 0.6, 600.0, "stop rule"),
        "cooled": summary(720, cooled_loss, cooled_tokens / 1000, cooled_tokens, "stop rule", COOLDOWN),
    }


def test_rows_compare_every_run_with_the_full_one() -> None:
    full, cold, cooled = legs_from_summaries(three())
    assert (full.name, cold.name, cooled.name) == ("full", "cold", "cooled")
    assert full.decision_step is None and full.loss_change == 0 and full.gamma_saved["tokens"] == 0
    assert cold.decision_step == 600 and cold.decision_loss is None and cold.psi_gained is None
    assert cold.loss_change == pytest.approx(0.10 / 3.00)
    assert cold.gamma_saved == pytest.approx({"energy_kwh": 0.4, "tokens": 0.4})
    assert cooled.decision_step == 600 and cooled.end_step == 720
    assert cooled.decision_loss == 3.10 and cooled.psi_gained == 0.09 and cooled.cooldown_steps == 120
    assert cooled.gamma_saved == pytest.approx({"energy_kwh": 0.28, "tokens": 0.28})
    text = format_legs([full, cold, cooled])
    assert "(3) cooled" in text and "+0.0900" in text and "28.0%" in text and "3.1000" in text


def test_goal_met_only_within_one_percent_at_thirty_percent_less_and_ahead_of_cold() -> None:
    met, line = verdict(legs_from_summaries(three(cooled_loss=3.02, cooled_tokens=650.0)))
    assert met and line.endswith(": met") and "35.0% tokens" in line
    # 28 % saved: short of 30 %
    met, line = verdict(legs_from_summaries(three()))
    assert not met and "NOT met" in line and "short" in line
    # 2 % above the full run's loss
    met, line = verdict(legs_from_summaries(three(cooled_loss=3.06, cooled_tokens=650.0)))
    assert not met and "too far" in line
    # no better than stopping cold
    s = three(cooled_loss=3.02, cooled_tokens=650.0)
    s["cold"]["val_loss"] = 3.02
    met, line = verdict(legs_from_summaries(s))
    assert not met and "not ahead" in line


def test_a_missing_run_is_a_miss_not_a_crash() -> None:
    s = three()
    del s["cold"]
    met, line = verdict(legs_from_summaries(s))
    assert not met and "missing" in line


def wsd(n: int = 100, decay_start: int = 60, every: int = 10, tps: float = 1000.0) -> LossCurve:
    """A synthetic WSD run: loss 2 + 5·t^-0.3 at constant LR, then 0.02 more, linearly over the decay."""
    steps = tuple(range(0, n + 1, every))

    def loss(s: int) -> float:
        base = 2 + 5 * (max(s, 1) * tps) ** -0.3
        return base - (0.02 * (s - decay_start) / (n - decay_start) if s > decay_start else 0.0)

    return LossCurve(steps, tuple(loss(s) for s in steps), tuple(s * tps for s in steps))


def test_loss_at_interpolates_in_tokens_and_says_so() -> None:
    c = LossCurve((0, 10, 20), (4.0, 3.0, 2.0), (0.0, 100.0, 200.0))
    assert loss_at(c, 100.0) == (3.0, True)
    assert loss_at(c, 150.0) == (2.5, False)
    assert math.isnan(loss_at(c, 250.0)[0]) and math.isnan(loss_at(c, -1.0)[0])


def test_log_trend_is_exact_on_a_log_linear_curve_and_nan_without_points() -> None:
    toks = tuple(float(t) for t in range(100, 1100, 100))
    c = LossCurve(tuple(range(10)), tuple(5 - 0.5 * math.log(t) for t in toks), toks)
    assert log_trend(c, 1000.0, 3000.0) == pytest.approx(5 - 0.5 * math.log(3000.0))
    assert math.isnan(log_trend(c, 150.0, 3000.0))


def test_replay_stops_cold_at_the_last_check_before_the_decay_and_compares_with_the_uncooled_twin() -> None:
    short, long = wsd(100, 65), wsd(300, 240)
    r = replay_row("short", "toy", short, 65, companion=long, companion_decay_start_step=240)
    assert (r.decision_step, r.end_step) == (60, 100)
    assert r.cold_loss == short.loss[6] and r.cooled_loss == short.loss[-1]
    assert r.gained == pytest.approx(short.loss[6] - short.loss[-1]) and r.gained > 0
    assert r.extra_tokens_fraction == pytest.approx(40 / 60)
    # the long run is still at constant LR at step 100: its loss there is the uncooled one, at an exact check
    assert r.uncooled_exact and r.uncooled_loss == long.loss[10] and r.uncooled_loss > r.cooled_loss
    # it reaches the cooled loss later, within its constant phase
    assert r.uncooled_tokens_to_match is not None and r.uncooled_tokens_to_match > r.end_tokens
    assert r.uncooled_limit_tokens == 240_000.0
    text = format_replay([r])
    assert "short" in text and "60 (0.00B)" in text and "+67%" in text and "×" in text


def test_no_uncooled_figure_once_the_companion_decays_too() -> None:
    r = replay_row("short", "toy", wsd(100, 60), 60, companion=wsd(120, 80), companion_decay_start_step=80)
    assert r.uncooled_loss is None and r.uncooled_tokens_to_match is not None
    single = replay_row("single", "toy", wsd(), 60)
    assert single.uncooled_loss is None and single.uncooled_tokens_to_match is None
    assert "—" in format_replay([single])


def write_curve(path: Path, c: LossCurve) -> None:
    lines = ["step,loss,tokens"] + [f"{s},{v},{int(t)}" for s, v, t in zip(c.steps, c.loss, c.tokens, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def manifest(tmp: Path) -> None:
    entries = [
        {"name": "a", "file": "a.csv", "direction": "loss", "model": "toy", "decay_start_step": 65,
         "uncooled_companion": "b"},
        {"name": "b", "file": "b.csv", "direction": "loss", "model": "toy", "decay_start_step": 240,
         "uncooled_companion": None},
        {"name": "cosine", "file": "cosine.csv", "direction": "psi", "model": "toy", "decay_start_step": None},
    ]  # fmt: skip
    (tmp / "manifest.json").write_text(json.dumps(entries))


def test_replay_reads_the_manifest_and_names_what_is_not_built(tmp_path: Path, capsys) -> None:
    manifest(tmp_path)
    assert run_replay(tmp_path) == 0
    out = capsys.readouterr().out
    assert "2 public curves are not built yet (a, b)" in out and "extract.py --mirror DIR" in out
    write_curve(tmp_path / "a.csv", wsd(100, 65))
    rows, missing = replay_corpus(tmp_path)
    assert rows == [] and missing == ["a", "b"]  # a's companion is missing: a waits for it
    write_curve(tmp_path / "b.csv", wsd(300, 240))
    rows, missing = replay_corpus(tmp_path)
    assert [r.name for r in rows] == ["a", "b"] and missing == []
    assert rows[0].uncooled_loss is not None and rows[1].uncooled_loss is None
    assert run_replay(tmp_path) == 0
    assert "ahead of the uncooled run at equal tokens on 1 of 1 true pairs" in capsys.readouterr().out
