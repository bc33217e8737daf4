"""The README's two commands stay true: they open the README, the Makefile runs them, CI calls the test one."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index(block.group(0)) < 200, "the README must open with its commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def make_recipe(target: str) -> list[str]:
    text = (ROOT / "Makefile").read_text()
    body = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    assert body, f"Makefile has no {target} target"
    return [line.strip() for line in body.group(1).splitlines()]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    assert readme_commands() == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_the_main_job_is_the_default_submit_and_its_config_composes():
    """`make run` is `cpr submit` with the shipped defaults (CI runs it for real after the suite)."""
    (recipe,) = make_recipe("run")
    argv = shlex.split(recipe.replace("$(BIN)/", ""))
    assert argv == ["cpr", "submit"]
    cpr = Path(sys.executable).with_name("cpr")  # the console script installed beside this interpreter
    out = subprocess.run([str(cpr), "submit", "--cfg"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "llama-tiny" in out.stdout and "max_loss" in out.stdout


def test_the_shipped_curve_replays():
    cpr = Path(sys.executable).with_name("cpr")
    path = "orchestrator/examples/tiny_llama_stdlib.csv"
    out = subprocess.run([str(cpr), "replay", path, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["source"] == path
