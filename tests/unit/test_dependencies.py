"""The floors in pyproject.toml admit no version that lacks what the code calls (a user on the floor would get a
TypeError at the first blueprint instead of an install-time refusal)."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
NEEDS = [
    # (distribution, first version with it, what the code uses, a check that it is there in the installed one)
    (
        "scipy",
        "1.15",
        "stats.bootstrap(rng=...)",
        lambda: "rng" in inspect.signature(__import__("scipy.stats").stats.bootstrap).parameters,
    ),
    ("powerlaw", "2.0", "Fit.distribution_compare(..., normalized_ratio=True)", lambda: __import__("powerlaw").Fit),
    (
        "dp-accounting",
        "0.4",
        "rdp.RdpAccountant, GaussianDpEvent",
        lambda: __import__("dp_accounting").rdp.RdpAccountant,
    ),
    (
        "apprise",
        "1.9",
        "Apprise(location=ContentLocation.INACCESSIBLE), Apprise.instantiate, AppriseAsset(async_mode=...)",
        lambda: (
            "location" in inspect.signature(__import__("apprise").Apprise).parameters
            and __import__("apprise").ContentLocation.INACCESSIBLE
            and hasattr(__import__("apprise").AppriseAsset, "async_mode")
        ),
    ),
]


def _floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    floors = {}
    for req in reqs:
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        if lows:
            floors[req.name] = max(lows)
    return floors


@pytest.mark.parametrize(("dist", "first", "what", "present"), NEEDS, ids=[n[0] for n in NEEDS])
def test_the_declared_floor_has_what_the_code_uses(dist: str, first: str, what: str, present) -> None:
    assert present(), f"the installed {dist} lacks {what}"
    floor = _floors().get(dist)
    assert floor is not None and floor >= Version(first), f"pyproject allows {dist} {floor}, but {what} needs {first}"
