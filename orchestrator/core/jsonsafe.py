"""Plain data to strict JSON: non-finite floats (a NaN loss, say) become null instead of invalid `NaN` tokens."""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def json_safe(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every non-finite float replaced by None."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
