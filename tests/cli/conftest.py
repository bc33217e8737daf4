"""The bad-input contract (docs/bad-input.md) as the hostile-input tests assert it, for configs, blueprints and
curves alike: exit code 2, one `cpr: error: ` line on stderr naming the field, no traceback, nothing written,
nothing started."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from launch.cli import main

MAX_LINE = 600
"""Characters in the one error line: a hostile value is shown shortened, never in full."""


class Launched(BaseException):  # not an Exception: no handler on the way may swallow it
    """A bad input got as far as Hydra's output folder, Ray or data preparation."""


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> Outcome:
    """`cpr ARGV…` in-process with stdout/stderr captured (usable inside hypothesis examples, unlike capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def tree(root: Path) -> set[str]:
    """Every file and folder under root, relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_one_line(outcome: Outcome, field: str) -> None:
    """Exit 2 and exactly one short `cpr: error: ` line that names `field`; no traceback anywhere."""
    assert outcome.code == 2, outcome
    assert outcome.err.startswith("cpr: error: "), outcome.err
    assert outcome.err.endswith("\n") and outcome.err.count("\n") == 1, outcome.err
    assert len(outcome.err) <= MAX_LINE, outcome.err
    assert field in outcome.err, outcome.err
    assert "Traceback" not in outcome.err + outcome.out


def refused(root: Path, field: str, *argv: str) -> Outcome:
    """Run `cpr ARGV…` in root and assert the whole contract: one line naming field, exit 2, nothing written under
    root, Ray not started."""
    import ray

    before = tree(root)
    outcome = run_cli(*argv)
    assert_one_line(outcome, field)
    assert tree(root) == before, f"written: {sorted(tree(root) - before)}"
    assert not ray.is_initialized()
    return outcome


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory; Hydra's output folders, Ray and data preparation raise `Launched` if reached."""
    import ray

    import orchestrator.data.prepare as prepare
    import orchestrator.submission as submission

    def launched(*args: object, **kwargs: object) -> None:
        raise Launched("a bad input reached Hydra's output folder, Ray or data preparation")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submission, "open_run_dir", launched)
    monkeypatch.setattr(submission, "open_sweep_dir", launched)
    monkeypatch.setattr(ray, "init", launched)
    monkeypatch.setattr(prepare, "prepare_data", launched)
    return tmp_path
