"""Schema 1.2's `cross_influence`: `cpr select`'s groups × data blocks map rides in a blueprint, round-trips through
parse/serialize, older files stay valid (and may not carry it), every malformed map is one InputError naming its
JSON path, and `cpr blueprint show` summarises it."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from launch.blueprints import cross_influence_lines
from orchestrator.blueprints import (
    SCHEMA_VERSION,
    Blueprint,
    LayerEntry,
    LocalBlueprintStore,
    blueprint_to_dict,
    build_blueprint,
    dumps_blueprint,
    load_blueprint,
    parse_blueprint,
)
from orchestrator.blueprints.model import KNOWN_SCHEMA_VERSIONS
from orchestrator.errors import InputError
from orchestrator.select.influence import CrossInfluence, cross_influence

GROUPS = ["embed", "attn.0", "ffn.0", "head"]
BLOCKS = ["code", "prose", "math", "web", "chat"]


def influence(rank: int = 2) -> CrossInfluence:
    """T from a small matrix of per-example norms: 4 groups, 5 folder blocks of 6 windows each, block `math`
    moving ffn.0 most."""
    rng = np.random.default_rng(0)
    labels = [BLOCKS[i % len(BLOCKS)] for i in range(30)]
    norms = rng.uniform(0.1, 1.0, (30, len(GROUPS)))
    norms[[i for i, b in enumerate(labels) if b == "math"], 2] += 5.0
    return cross_influence(norms, labels, GROUPS, BLOCKS, rank=rank, block_kind="folder")


def blueprint(ci: CrossInfluence | None = None) -> Blueprint:
    bp = build_blueprint(
        model_id="tiny",
        training_checkpoint=0.5,
        samples={g: [1.0 + i, 1.1 + i, 0.9 + i] for i, g in enumerate(GROUPS)},
        n_resamples=20,
        created_at="2025-01-31T12:00:00Z",
    )
    return replace(bp, cross_influence=ci if ci is not None else influence(), schema_version=SCHEMA_VERSION)


def doc() -> dict:
    return blueprint_to_dict(blueprint())


def refused(d: dict, source: str = "bp.json") -> InputError:
    with pytest.raises(InputError) as err:
        parse_blueprint(json.dumps(d, allow_nan=True), source=source)
    assert "\n" not in err.value.one_line()
    return err.value


# --------------------------------------------------------------------------------------------- round trip


def test_the_current_schema_is_1_2_and_the_older_ones_are_known():
    assert SCHEMA_VERSION == "1.2" and KNOWN_SCHEMA_VERSIONS == ("1.0", "1.1", "1.2")


def test_a_map_round_trips_through_the_file_byte_for_byte():
    bp = blueprint()
    text = dumps_blueprint(bp)
    back = parse_blueprint(text, source="bp.json")
    assert back == bp and back.cross_influence == bp.cross_influence
    assert dumps_blueprint(back) == text
    d = json.loads(text)
    assert d["schema_version"] == "1.2" and list(d)[-1] == "cross_influence"
    assert d["cross_influence"] == bp.cross_influence.to_dict()
    assert list(d["cross_influence"]) == list(bp.cross_influence.to_dict())  # the dataclass's key order


def test_the_file_holds_the_rank_r_summary_of_t():
    ci = parse_blueprint(dumps_blueprint(blueprint(influence(rank=4))), source="bp.json").cross_influence
    assert ci.rank == 4 == len(ci.singular_values) and ci.energy == pytest.approx(1.0)
    assert ci.approx().shape == (len(GROUPS), len(BLOCKS))
    top = np.unravel_index(np.argmax(ci.approx()), ci.approx().shape)
    assert (ci.groups[top[0]], ci.blocks[top[1]]) == ("ffn.0", "math")


def test_a_map_built_from_numpy_scalars_is_written_as_plain_json():
    ci = influence()
    numpy_ci = replace(ci, rank=np.int64(ci.rank), examples=tuple(np.int64(n) for n in ci.examples))
    back = parse_blueprint(dumps_blueprint(blueprint(numpy_ci)), source="bp.json")
    assert back.cross_influence == ci


def test_the_store_publishes_a_blueprint_with_its_map(tmp_path: Path):
    store = LocalBlueprintStore(tmp_path)
    version, path = store.publish(blueprint())
    assert json.loads(path.read_text())["cross_influence"]["rank"] == 2
    assert store.get("tiny", version).cross_influence == influence()


def test_a_blueprint_without_a_map_writes_no_field():
    bp = replace(blueprint(), cross_influence=None)
    assert "cross_influence" not in blueprint_to_dict(bp)
    assert parse_blueprint(dumps_blueprint(bp), source="bp.json").cross_influence is None


# --------------------------------------------------------------------------------------------- older versions


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_older_files_stay_valid(version: str):
    d = doc()
    del d["cross_influence"]
    d["schema_version"] = version
    bp = parse_blueprint(json.dumps(d), source="old.json")
    assert bp.schema_version == version and bp.cross_influence is None
    assert json.loads(dumps_blueprint(bp)) == d  # written back in its own version


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_an_older_file_may_not_carry_a_map(version: str):
    d = doc()
    d["schema_version"] = version
    err = refused(d, "old.json")
    assert err.field == "old.json: cross_influence" and f"the file says {version}" in err.problem
    assert err.fix == 'set "schema_version": "1.2"'


def test_an_older_value_with_a_map_is_not_written():
    with pytest.raises(InputError) as err:
        dumps_blueprint(replace(blueprint(), schema_version="1.1"))
    assert err.value.field == "blueprint: cross_influence" and "1.2" in err.value.fix


def test_a_paper_shape_value_with_a_map_is_not_written():
    with pytest.raises(InputError) as err:
        paper = Blueprint(model_id="tiny", training_checkpoint=0.5, layers=(LayerEntry(id="embed", gradient_norm=1.0),))
        blueprint_to_dict(replace(paper, schema_version=None, cross_influence=influence()))
    assert err.value.field == "blueprint: cross_influence" and "paper's shape" in err.value.problem


# --------------------------------------------------------------------------------------------- malformed maps


def _set(path: tuple, value) -> callable:
    def apply(ci: dict) -> None:
        node = ci
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return apply


def _drop_row(key: str) -> callable:
    return lambda ci: ci[key].pop()


def _widen(key: str, row: int) -> callable:
    return lambda ci: ci[key][row].append(0.5)


def _del(key: str) -> callable:
    return lambda ci: ci.pop(key)


# (case id, change to the map, JSON path under cross_influence, words of the problem)
MALFORMED = [
    ("u-rows", _drop_row("u"), "u", "must have one row per group (4), got 3"),
    ("v-rows", _drop_row("v"), "v", "must have one row per block (5), got 4"),
    ("u-row-width", _widen("u", 1), "u[1]", "must have rank = 2 numbers, got 3"),
    ("v-row-width", lambda ci: ci["v"][3].pop(), "v[3]", "must have rank = 2 numbers, got 1"),
    ("examples-length", lambda ci: ci["examples"].append(6), "examples", "one count per block (5), got 6"),
    ("rank-over-values", lambda ci: ci.update(rank=5), "rank", "<= the number of singular values (4), got 5"),
    ("not-descending", lambda ci: ci["singular_values"].__setitem__(2, 99.0), "singular_values[2]", "descending"),
    ("too-many-values", lambda ci: ci["singular_values"].append(0.0), "singular_values", "min(groups, blocks) = 4"),
    ("negative-value", _set(("singular_values", 3), -0.1), "singular_values[3]", "must be >= 0"),
    ("nan-in-u", _set(("u", 0, 0), float("nan")), "u[0][0]", "must be a finite number, got NaN"),
    ("inf-value", _set(("singular_values", 0), float("inf")), "singular_values[0]", "finite number"),
    ("string-in-v", _set(("v", 2, 1), "0.5"), "v[2][1]", "must be a number"),
    ("bad-block-kind", _set(("block_kind",), "directory"), "block_kind", "must be one of 'folder', 'cluster'"),
    ("energy-over-1", _set(("energy",), 1.5), "energy", "must be <= 1"),
    ("rank-0", _set(("rank",), 0), "rank", "must be >= 1"),
    ("rank-float", _set(("rank",), 1.5), "rank", "must be an integer"),
    ("examples-0", _set(("examples", 1), 0), "examples[1]", "must be >= 1"),
    ("no-groups", _set(("groups",), []), "groups", "at least 1 item"),
    ("repeated-group", _set(("groups", 1), "embed"), "groups", "must not repeat"),
    ("empty-block-name", _set(("blocks", 0), ""), "blocks[0]", "must not be empty"),
    ("missing-v", _del("v"), "v", "is required but missing"),
    ("missing-statistic", _del("statistic"), "statistic", "is required but missing"),
    ("unknown-field", _set(("sigma",), [1.0]), "sigma", "typo?"),
    ("not-an-object", None, "", "must be an object"),
]


@pytest.mark.parametrize(("change", "path", "problem"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_every_malformed_map_is_refused_with_its_path(change, path: str, problem: str):
    d = doc()
    if change is None:
        d["cross_influence"] = [1, 2]
    else:
        change(d["cross_influence"])
    err = refused(d)
    assert err.field == "bp.json: cross_influence" + (f".{path}" if path else "")
    assert problem in err.problem, err.one_line()


def test_the_fix_speaks_of_the_map_not_of_the_layers():
    """`statistic` names something else in a layer entry ("mean" or "median"): the fix follows the path."""
    d = doc()
    d["cross_influence"]["statistic"] = ""
    err = refused(d)
    assert err.field == "bp.json: cross_influence.statistic" and "median" not in err.fix
    d = doc()
    d["cross_influence"]["u"].pop()
    assert "one row per group" in refused(d).fix


def test_a_malformed_value_is_not_written():
    ci = influence()
    with pytest.raises(InputError) as err:
        dumps_blueprint(blueprint(replace(ci, v=ci.v[:-1])))
    assert err.value.field == "blueprint: cross_influence.v"


def test_a_map_is_checked_only_after_the_schema():
    """A map the schema refuses is reported by the schema's rule, never as a crash of the length checks."""
    d = doc()
    d["cross_influence"]["u"] = "rows"
    assert refused(d).field == "bp.json: cross_influence.u"
    d = copy.deepcopy(doc())
    d["cross_influence"]["groups"] = 4
    assert refused(d).field == "bp.json: cross_influence.groups"


# --------------------------------------------------------------------------------------------- show


def test_show_summarises_the_map(cli, tmp_path: Path):
    path = tmp_path / "bp.json"
    path.write_text(dumps_blueprint(blueprint(influence(rank=2))))
    r = cli("blueprint", "show", str(path))
    ci = load_blueprint(path).cross_influence
    assert r.code == 0, r.err
    lines = [line for line in r.out.splitlines() if "cross-influence" in line or "first pattern" in line]
    assert len(lines) == 2, r.out
    assert lines[0].startswith("cross-influence: 4 groups × 5 folder blocks (30 windows), rank 2 keeps ")
    assert f"{ci.energy:.1%} of Σσ²" in lines[0]
    assert "σ: " + ", ".join(f"{s:.3g}" for s in ci.singular_values) in lines[0]
    assert lines[1].startswith(f"  first pattern (σ₁ {ci.singular_values[0]:.3g}): groups ffn.0 +")
    assert "; blocks math +" in lines[1]
    assert "tiny" in r.out and "attn.0" in r.out  # the layer table still follows


def test_show_says_nothing_of_a_map_a_file_lacks(cli, tmp_path: Path):
    path = tmp_path / "bp.json"
    path.write_text(dumps_blueprint(replace(blueprint(), cross_influence=None)))
    r = cli("blueprint", "show", str(path))
    assert r.code == 0 and "cross-influence" not in r.out
    assert cross_influence_lines(load_blueprint(path)) == []


def test_show_lists_five_singular_values_and_three_names_at_most():
    rng = np.random.default_rng(1)
    groups, blocks = [f"g{i}" for i in range(8)], [f"c{j}" for j in range(7)]
    labels = [blocks[i % 7] for i in range(70)]
    ci = cross_influence(rng.uniform(0, 1, (70, 8)), labels, groups, blocks, rank=3, block_kind="cluster")
    first, second = cross_influence_lines(replace(blueprint(), cross_influence=ci))
    assert "8 groups × 7 cluster blocks" in first and first.endswith(", … (7 in all)")
    assert first.split("σ: ")[1].count(",") == 5  # five values, then the ellipsis
    groups_part, blocks_part = second.split("; blocks ")
    assert groups_part.count(",") == 2 and blocks_part.count(",") == 2


def test_the_json_view_carries_the_map(cli, tmp_path: Path):
    path = tmp_path / "bp.json"
    path.write_text(dumps_blueprint(blueprint()))
    r = cli("blueprint", "show", str(path), "--json")
    assert r.code == 0 and json.loads(r.out)["cross_influence"] == influence().to_dict()
