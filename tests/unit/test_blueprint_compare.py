"""diff_blueprints, aggregate_blueprints (App. A.2) and drift_check (§5 "Drift & refresh")."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest

from orchestrator.blueprints import (
    Blueprint,
    LayerEntry,
    aggregate_blueprints,
    diff_blueprints,
    drift_check,
    load_blueprint,
)
from orchestrator.errors import InputError

PAPER_FILE = Path(__file__).resolve().parents[1] / "assets" / "paper_appendix_a.json"


def bp(norms: dict[str, float], *, model_id: str = "m", checkpoint: float = 0.5) -> Blueprint:
    return Blueprint(
        model_id=model_id,
        training_checkpoint=checkpoint,
        layers=tuple(LayerEntry(id=k, gradient_norm=v) for k, v in norms.items()),
    )


NORMS = {"attn.0": 5.0, "ffn.0": 4.0, "attn.1": 3.0, "ffn.1": 2.0, "head": 1.0}


# ----------------------------------------------------------------------------------------------- diff


def test_identical_blueprints():
    d = diff_blueprints(bp(NORMS), bp(NORMS))
    assert d.spearman_rho == pytest.approx(1.0) and d.n_common == 5
    assert all(c.rank_change == 0 and c.norm_ratio == 1.0 for c in d.common)
    assert [c.rank_a for c in d.common] == [1, 2, 3, 4, 5]
    assert d.only_a == () and d.only_b == ()


def test_reversed_ranking():
    reversed_norms = dict(zip(NORMS, reversed(list(NORMS.values())), strict=True))
    d = diff_blueprints(bp(NORMS), bp(reversed_norms))
    assert d.spearman_rho == pytest.approx(-1.0)
    assert [c.rank_change for c in d.common] == [4, 2, 0, -2, -4]
    assert d.common[0].norm_ratio == pytest.approx(1 / 5)


def test_ids_on_one_side_and_too_few_common():
    d = diff_blueprints(bp({"a": 1.0, "b": 2.0, "x": 3.0}), bp({"a": 1.0, "b": 2.0, "y": 0.5}))
    assert d.only_a == ("x",) and d.only_b == ("y",) and d.n_common == 2
    assert d.spearman_rho is None  # fewer than 3 common ids
    assert d.common[0].rank_a == 3 and d.common[0].rank_b == 2  # ranks within each whole blueprint


def test_zero_norm_ratio_and_constant_side():
    d = diff_blueprints(bp({"a": 0.0, "b": 1.0, "c": 2.0}), bp({"a": 1.0, "b": 1.0, "c": 1.0}))
    assert d.common[0].norm_ratio is None and d.spearman_rho is None
    data = d.to_dict()
    assert data["spearman_rho"] is None and data["common"][1]["norm_ratio"] == 1.0


def test_paper_file_against_itself():
    paper = load_blueprint(PAPER_FILE)
    d = diff_blueprints(paper, paper)
    assert d.spearman_rho == pytest.approx(1.0)
    assert {c.id: c.rank_a for c in d.common} == {"attn.0": 1, "attn.1": 2, "ffn.0": 3}


# ----------------------------------------------------------------------------------------------- aggregate


def test_aggregate_rows_overwrites_and_csv(tmp_path):
    a = bp({"attn.0": 1.0, "ffn.0": 2.0}, checkpoint=0.5)
    b = bp({"attn.0": 3.0, "ffn.0": 4.0}, checkpoint=0.8)
    a_again = bp({"attn.0": 9.0}, checkpoint=0.5)  # same key as a's attn.0: the later file wins (App. A.2)
    table = aggregate_blueprints([("a.json", a), ("b.json", b), ("a2.json", a_again)])
    assert [r.key for r in table.rows] == [
        ("m", 0.5, "attn.0"),
        ("m", 0.5, "ffn.0"),
        ("m", 0.8, "attn.0"),
        ("m", 0.8, "ffn.0"),
    ]
    assert table.as_mapping()[("m", 0.5, "attn.0")].gradient_norm == 9.0
    assert table.n_overwritten == 1
    o = table.overwritten[0]
    assert (o.key, o.previous_source, o.source) == (("m", 0.5, "attn.0"), "a.json", "a2.json")
    out = tmp_path / "table.csv"
    table.to_csv(out)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    assert list(rows[0])[:4] == ["model_id", "training_checkpoint", "layer_id", "gradient_norm"]
    assert rows[0]["gradient_norm"] == "9.0" and rows[0]["source"] == "a2.json" and rows[0]["ci_low"] == ""


def test_aggregate_paper_file_has_domain_columns():
    table = aggregate_blueprints([("p.json", load_blueprint(PAPER_FILE))])
    assert table.columns()[-3:] == ["domain:general", "domain:bio", "domain:legal"]
    buf = io.StringIO()
    table.to_csv(buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert rows[2]["layer_id"] == "attn.1" and rows[2]["domain:legal"] == "0.8" and rows[2]["k_star"] == "0.13"
    assert buf.getvalue() == table.to_csv_text()


# ----------------------------------------------------------------------------------------------- drift

LAYERED = {f"{kind}.{i}": float(v) for i in range(5) for kind, v in (("attn", 10 + i), ("ffn", 1 + i))}


def test_same_ranks_are_ok():
    local = {k: 2.0 * v + 0.1 for k, v in LAYERED.items()}  # other scale, same order
    r = drift_check(local, bp(LAYERED))
    assert (r.action, r.level, r.n_common) == ("ok", "submodule", 10)
    assert r.rho == pytest.approx(1.0) and r.rho_coarse is None


def test_scrambled_submodules_with_the_same_layer_totals_use_coarse():
    # attn and ffn swap inside every layer: submodule ranks are scrambled, layer root-sum-of-squares unchanged.
    local = {f"attn.{i}": LAYERED[f"ffn.{i}"] for i in range(5)} | {f"ffn.{i}": LAYERED[f"attn.{i}"] for i in range(5)}
    for i in range(5):
        assert math.hypot(local[f"attn.{i}"], local[f"ffn.{i}"]) == math.hypot(
            LAYERED[f"attn.{i}"], LAYERED[f"ffn.{i}"]
        )
    r = drift_check(local, bp(LAYERED), threshold=0.7)
    assert r.rho < 0.7
    assert (r.action, r.level, r.n_common_coarse) == ("use-coarse", "layer", 5)
    assert r.rho_coarse == pytest.approx(1.0)


def test_fully_different_ranks_need_a_refresh():
    local = {k: 100.0 - v for k, v in LAYERED.items()}  # every rank reversed, at both levels
    r = drift_check(local, bp(LAYERED))
    assert r.rho == pytest.approx(-1.0) and r.rho_coarse == pytest.approx(-1.0)
    assert (r.action, r.level) == ("refresh", "layer")
    assert "refresh" in r.reason and r.to_dict()["action"] == "refresh"


def test_too_few_common_ids_need_a_refresh():
    r = drift_check({"attn.0": 1.0, "zzz": 2.0}, bp(LAYERED))
    assert r.n_common == 1 and r.rho is None and r.action == "refresh"


def test_threshold_only_matters_against_rho():
    local = {f"attn.{i}": LAYERED[f"ffn.{i}"] for i in range(5)} | {f"ffn.{i}": LAYERED[f"attn.{i}"] for i in range(5)}
    assert drift_check(local, bp(LAYERED), threshold=-1.0).action == "ok"


@pytest.mark.parametrize("threshold", [1.5, -1.01, math.nan, math.inf])
def test_threshold_outside_minus_one_one(threshold):
    with pytest.raises(InputError) as err:
        drift_check(LAYERED, bp(LAYERED), threshold=threshold)
    assert err.value.field == "threshold"


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, "1"])
def test_bad_local_norms(value):
    with pytest.raises(InputError) as err:
        drift_check({"attn.0": value}, bp(LAYERED))
    assert err.value.field == "local_norms['attn.0']"
