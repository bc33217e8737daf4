"""add_gaussian_noise (§5 "Privacy"): clipped, noised norms; privacy recorded; seed never recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.blueprints import (
    Blueprint,
    ConfidenceInterval,
    LayerEntry,
    add_gaussian_noise,
    dumps_blueprint,
    load_blueprint,
    parse_blueprint,
)
from orchestrator.blueprints.privacy import PRIVACY_NOTE
from orchestrator.errors import InputError

PAPER_FILE = Path(__file__).resolve().parents[1] / "assets" / "paper_appendix_a.json"


def bp() -> Blueprint:
    return Blueprint(
        model_id="m",
        training_checkpoint=1.0,
        created_at="2025-01-31T12:00:00Z",
        layers=tuple(
            LayerEntry(
                id=f"attn.{i}",
                gradient_norm=0.1 * (i + 1),
                ci=ConfidenceInterval(low=0.08 * (i + 1), high=0.12 * (i + 1), level=0.95),
                domain_tags={"general": 1.0, "code": 0.5 + 0.1 * i},
            )
            for i in range(20)
        ),
    )


def test_values_change_and_privacy_is_recorded():
    original = bp()
    noised = add_gaussian_noise(original, clip=1.0, noise_multiplier=0.1, seed=1)
    assert all(a.gradient_norm != b.gradient_norm for a, b in zip(original.layers, noised.layers, strict=True))
    assert all(a.domain_tags == b.domain_tags for a, b in zip(original.layers, noised.layers, strict=True))
    p = noised.privacy
    assert (p.mechanism, p.clip, p.noise_multiplier, p.sigma, p.note) == ("gaussian", 1.0, 0.1, 0.1, PRIVACY_NOTE)
    assert original.privacy is None  # the input is left alone


def test_clip_is_honoured_without_noise():
    noised = add_gaussian_noise(bp(), clip=0.5, noise_multiplier=0.0, seed=0)
    assert [e.gradient_norm for e in noised.layers] == [min(0.1 * (i + 1), 0.5) for i in range(20)]
    assert all(e.ci.high <= 0.5 and e.ci.low <= e.gradient_norm <= e.ci.high for e in noised.layers)


def test_noise_is_floored_at_zero_and_cis_stay_ordered():
    noised = add_gaussian_noise(bp(), clip=0.3, noise_multiplier=2.0, seed=5)
    norms = [e.gradient_norm for e in noised.layers]
    assert min(norms) == 0.0 and all(n >= 0 for n in norms)
    assert all(0 <= e.ci.low <= e.gradient_norm <= e.ci.high for e in noised.layers)


def test_schema_valid_round_trip_without_the_seed():
    noised = add_gaussian_noise(bp(), clip=1.0, noise_multiplier=0.5, seed=12345)
    text = dumps_blueprint(noised)
    assert parse_blueprint(text, source="noised") == noised
    assert "seed" not in json.loads(text)["privacy"] and "12345" not in text


def test_same_seed_same_noise():
    a = add_gaussian_noise(bp(), clip=1.0, noise_multiplier=0.5, seed=3)
    b = add_gaussian_noise(bp(), clip=1.0, noise_multiplier=0.5, seed=3)
    c = add_gaussian_noise(bp(), clip=1.0, noise_multiplier=0.5, seed=4)
    assert a == b and a != c


def test_paper_file_is_upgraded_to_schema_1_0():
    noised = add_gaussian_noise(load_blueprint(PAPER_FILE), clip=0.05, noise_multiplier=0.1, seed=0)
    assert noised.schema_version == "1.0" and noised.privacy.sigma == pytest.approx(0.005)
    assert all(e.gradient_norm <= 0.05 + 0.05 for e in noised.layers)
    assert parse_blueprint(dumps_blueprint(noised), source="x") == noised


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"clip": 0.0, "noise_multiplier": 1.0}, "clip"),
        ({"clip": -1.0, "noise_multiplier": 1.0}, "clip"),
        ({"clip": float("inf"), "noise_multiplier": 1.0}, "clip"),
        ({"clip": 1.0, "noise_multiplier": -0.1}, "noise_multiplier"),
        ({"clip": 1.0, "noise_multiplier": float("nan")}, "noise_multiplier"),
    ],
)
def test_bad_parameters(kw, field):
    with pytest.raises(InputError) as err:
        add_gaussian_noise(bp(), **kw)
    assert err.value.field == field


def test_noise_is_added_once():
    noised = add_gaussian_noise(bp(), clip=1.0, noise_multiplier=0.1, seed=0)
    with pytest.raises(InputError, match="already noised"):
        add_gaussian_noise(noised, clip=1.0, noise_multiplier=0.1)
