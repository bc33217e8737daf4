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


def test_the_main_job_runs_as_the_makefile_says():
    (recipe,) = make_recipe("run")
    argv = shlex.split(recipe.replace("$(BIN)/", ""))
    assert argv[:2] == ["cpr", "replay"] and (ROOT / argv[2]).is_file()
    cpr = Path(sys.executable).with_name("cpr")  # the console script installed beside this interpreter
    out = subprocess.run([str(cpr), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "STOP at step" in out.stdout or "CONTINUE" in out.stdout
    data = json.loads(
        subprocess.run([str(cpr), *argv[1:], "--json"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    )
    assert data["source"] == argv[2]
