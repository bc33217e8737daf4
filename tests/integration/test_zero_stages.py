"""Every shipped ZeRO stage trains through `cpr submit` (2 CPU ranks, gloo) and publishes its blueprints; the
default stage 2 is covered by test_submit_e2e. Slow: run with `make test-slow`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CPR = str(Path(sys.executable).with_name("cpr"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero0", "zero1", "zero3"])
def test_stage_trains_to_its_budget(tmp_path: Path, stage: str) -> None:
    done = subprocess.run(
        [CPR, "submit", "+experiment=debug", f"deepspeed={stage}", "train.max_tokens=81920", "stop.enforce=false"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job = next(p for p in (tmp_path / "cpr_runs" / "jobs").iterdir())
    summary = json.loads((job / "summary.json").read_text())
    assert summary["reason"] == "budget" and summary["step"] == 80
    curve = [json.loads(line) for line in (job / "decisions.jsonl").read_text().splitlines()]
    # the rule's checks of the stable phase (steps 10–60: the last 16 steps are the WSD decay, never the rule's), then
    # the budget's STOP, whose Ψ is the last check's
    assert [d["step"] for d in curve] == [10, 20, 30, 40, 50, 60, 80]
    assert curve[-1]["psi"] > curve[0]["psi"]  # it learned
    # the gradient probe ran under this stage too: blueprints at 3 %, 5 % and 100 % of the budget (debug's)
    assert [(b["checkpoint"], b["step"]) for b in summary["blueprints"]] == [("0.03", 3), ("0.05", 4), ("1", 80)]
