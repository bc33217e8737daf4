"""`cpr replay` on the command line: output, --json, and one line + exit 2 for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.cli import main
from tests.conftest import assert_one_line_error
from tests.unit.test_replay import write_curve

SHIPPED = str(Path(__file__).resolve().parents[2] / "orchestrator" / "examples" / "tiny_llama_stdlib.csv")


def test_summary_and_json(tmp_path, capsys):
    path = write_curve(tmp_path / "c.csv")
    assert main(["replay", str(path), "--resource", "tokens", "--eta-rel", "0.1", "--window", "4"]) == 0
    out = capsys.readouterr().out
    assert "STOP at step" in out and "saves" in out
    assert main(["replay", str(path), "--resource", "tokens", "--eta-rel", "0.1", "--window", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stopped"] is True and data["reason"] == "marginal_return"
    assert 0 < data["gamma_saved_fraction"] < 1 and data["forecast"]["ok"] is True


def test_the_default_rule_says_why_it_stopped(capsys):
    """No threshold given: the budget-aware rule with the core's δ, and a `why:` line in the user's terms."""
    assert main(["replay", SHIPPED, "--resource", "energy_kwh"]) == 0
    out = capsys.readouterr().out
    assert "STOP at step 2480" in out and "budget-aware η (δ = 0.01" in out
    why = next(line for line in out.splitlines() if line.strip().startswith("why:"))
    assert "of the run's gain (δ = 1.00%)" in why and "of the validation loss" in why


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--eta", "-1"], "stop.eta"),
        (["--eta-rel", "0"], "stop.eta_rel"),
        (["--eta-rel", "1.01"], "stop.eta_rel"),
        (["--window", "1"], "stop.window"),
        (["--patience", "0"], "stop.patience"),
        (["--budget", "0"], "stop.budget"),
        (["--budget", "-3"], "stop.budget"),
        (["--window", "500"], "fewer than the window"),
        (["--resource", "flops"], "--resource"),
        (["--resource", "joules"], "--resource"),
        (["--window", "two"], "--window"),
        (["--eta", "1", "--eta-rel", "0.5"], "--eta-rel"),
        (["--max-loss", "0"], "stop.max_loss"),
        (["--max-loss", "0.7"], "stop.max_loss"),
        (["--max-loss", "nan"], "stop.max_loss"),
        (["--max-loss", "0.01", "--eta-rel", "0.1"], "--eta-rel"),
        (["--estimator", "mean"], "--estimator"),
    ],
)
def test_bad_settings_give_one_line_and_exit_2(tmp_path, cli, args, needle):
    path = write_curve(tmp_path / "c.csv", n=20)
    assert_one_line_error(cli("replay", str(path), *args), needle)


def test_bad_csv_gives_one_line_and_exit_2(tmp_path, cli):
    path = tmp_path / "bad.csv"
    path.write_text("step,loss,tokens,extra\n1,2,3,4\n")
    assert_one_line_error(cli("replay", str(path)), "'extra'")
    assert_one_line_error(cli("replay", str(tmp_path / "missing.csv")), "cannot read")
    assert_one_line_error(cli("replay", str(tmp_path)), "is a directory")
