"""Plain numbers at the edges: is a value a real finite number, and strict JSON without NaN tokens."""

from __future__ import annotations

import math
from typing import Any


def is_finite_number(x: Any) -> bool:
    """True for an int or float that is finite; bools (an int subclass) and everything else are not numbers."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def json_safe(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every non-finite float (a NaN loss, say) replaced by None."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
