"""Shared test helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import settings

from launch.cli import main

# Shared 2-core machines are noisy: a per-example deadline would make property tests flaky, not stricter.
settings.register_profile("cpr", deadline=None, print_blob=True)
settings.load_profile("cpr")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys) -> Callable[..., CliResult]:
    """Run `cpr ARGS...` in-process; argparse's own exits are caught and their code returned."""

    def run(*argv: str) -> CliResult:
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, needle: str) -> None:
    """The bad-input contract: exit 2, one line on stderr naming the field, no traceback."""
    assert result.code == 2, result
    assert result.err.startswith("cpr: error:"), result.err
    assert result.err.count("\n") == 1, result.err
    assert needle in result.err, result.err
    assert "Traceback" not in result.err
