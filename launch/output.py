"""How every `cpr` verb prints: one console setting and one number format, so the verbs read alike."""

from __future__ import annotations

import math
import sys

from rich.console import Console

MISSING = "–"


def console(*, stderr: bool = False) -> Console:
    """A rich console that never breaks a line of text; piped output gets 160 columns for tables, not 80. `stderr`:
    one that writes there (when stdout carries data, e.g. `--cfg`'s YAML)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(highlight=False, soft_wrap=True, stderr=stderr, width=None if stream.isatty() else 160)


def fmt(x: float | None, digits: int = 4) -> str:
    """A number in `digits` significant digits; MISSING for None and non-finite values."""
    if x is None or not math.isfinite(x):
        return MISSING
    return f"{x:.{digits}g}"
