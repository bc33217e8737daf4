"""Malformed and hostile blueprint files (docs/blueprints.md, docs/bad-input.md):
`cpr blueprint validate|show|diff|aggregate` refuses each in one line naming the file and the field, exit 2,
writing nothing; loading never executes anything.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.blueprints import LocalBlueprintStore, parse_blueprint
from orchestrator.blueprints.model import MAX_BLUEPRINT_BYTES
from orchestrator.errors import InputError
from tests.cli.conftest import assert_one_line, refused, run_cli, tree
from tests.unit.test_blueprint_model import full_doc, paper_doc

REPO = Path(__file__).resolve().parents[2]
MARKER = "pwned"  # what the payloads below would create if anything in a file were executed


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {MARKER}",))


def _doc(edit: Callable[[dict], Any], *, full: bool = False) -> bytes:
    doc = full_doc() if full else paper_doc()
    edit(doc)
    return json.dumps(doc).encode()


def _paper_text(old: str, new: str) -> bytes:
    text = json.dumps(paper_doc())
    assert old in text
    return text.replace(old, new, 1).encode()


def _nested(depth: int) -> dict:
    node: Any = 1.0
    for _ in range(depth):
        node = [node]
    return node


BAD_BLUEPRINTS: list[tuple[str, bytes, str]] = [
    # wrong types
    ("norm-is-a-string", _doc(lambda d: d["layers"][0].update(gradient_norm="0.05")), "layers[0].gradient_norm"),
    ("norm-is-a-bool", _doc(lambda d: d["layers"][1].update(gradient_norm=True)), "layers[1].gradient_norm"),
    ("model-id-is-a-number", _doc(lambda d: d.update(model_id=7)), "model_id"),
    ("layers-is-an-object", _doc(lambda d: d.update(layers={"id": "a"})), "layers"),
    ("checkpoint-is-null", _doc(lambda d: d.update(training_checkpoint=None)), "training_checkpoint"),
    ("tags-is-a-list", _doc(lambda d: d["layers"][0].update(domain_tags=[1, 2])), "layers[0].domain_tags"),
    # NaN, infinities and numbers a double cannot hold
    ("nan-literal", _paper_text('"gradient_norm": 0.052', '"gradient_norm": NaN'), "layers[0].gradient_norm"),
    ("infinity-literal", _paper_text('"alpha": 1.5', '"alpha": Infinity'), "layers[2].alpha"),
    ("minus-infinity-literal", _paper_text('"gamma": 0.53', '"gamma": -Infinity'), "layers[1].gamma"),
    ("1e999", _paper_text('"gradient_norm": 0.052', '"gradient_norm": 1e999'), "layers[0].gradient_norm"),
    ("5000-digit-integer", _paper_text('"k_star": 0.15', '"k_star": 1' + "0" * 5000), "layers[0].k_star"),
    (
        "5000-digit-float",
        _paper_text('"training_checkpoint": 0.8', '"training_checkpoint": 9' + "9" * 5000 + ".0"),
        "training_checkpoint",
    ),
    ("negative-norm", _doc(lambda d: d["layers"][2].update(gradient_norm=-1.0)), "layers[2].gradient_norm"),
    ("k-star-above-1", _doc(lambda d: d["layers"][0].update(k_star=1.5)), "layers[0].k_star"),
    # deep nesting
    ("100k-nested-lists", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("100k-nested-objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
    ("100-levels-in-a-layer", _doc(lambda d: d["layers"][0].update(extra=_nested(100))), "layers[0].extra[0][0]"),
    # schema versions
    ("unknown-schema-version", _doc(lambda d: d.update(schema_version="2.0")), "schema_version"),
    ("schema-version-number", _doc(lambda d: d.update(schema_version=1.0)), "schema_version"),
    ("schema-version-object", _doc(lambda d: d.update(schema_version={"a": [1]})), "schema_version"),
    ("unknown-1.0-field", _doc(lambda d: d.update(run_idd="x"), full=True), "run_idd"),
    # ids that would be paths, and strings no file system or terminal should take
    ("traversal-layer-id", _doc(lambda d: d["layers"][0].update(id="../../etc/passwd")), "layers[0].id"),
    ("absolute-layer-id", _doc(lambda d: d["layers"][1].update(id="/etc/passwd")), "layers[1].id"),
    ("nul-in-layer-id", _doc(lambda d: d["layers"][0].update(id="attn\x00.0")), "layers[0].id"),
    ("nul-in-model-id", _doc(lambda d: d.update(model_id="foundation\x00-7b")), "model_id"),
    ("escape-code-in-model-id", _doc(lambda d: d.update(model_id="\x1b[2Jfoundation")), "model_id"),
    ("lone-surrogate-in-model-id", _paper_text('"foundation-7b"', '"\\ud800"'), "model_id"),
    ("lone-surrogate-in-a-key", _paper_text('"model_id"', '"x": 1, "\\udfff"'), "udfff"),
    ("10k-char-key", _doc(lambda d: d.update({"k" * 10_000: 1}), full=True), "kkkk"),
    ("duplicate-ids", _doc(lambda d: d["layers"][2].update(id="attn.0")), "layers[2].id"),
    # malformed text
    ("duplicate-key", _paper_text('"alpha": 1.12,', '"alpha": 1.12, "alpha": 9,'), "layers[1].alpha"),
    ("not-utf8", b'{"model_id": "\xff\xfe"}', "not UTF-8"),
    ("utf16", json.dumps(paper_doc()).encode("utf-16"), "not UTF-8"),
    ("control-character-in-string", b'{"model_id": "a\x01"}', "not valid JSON"),
    ("trailing-garbage", json.dumps(paper_doc()).encode() + b"garbage", "not valid JSON"),
    ("comment", b"// hi\n" + json.dumps(paper_doc()).encode(), "not valid JSON"),
    ("empty-file", b"", "not valid JSON"),
    ("whitespace-only", b" \n\t\n", "not valid JSON"),
    ("top-level-array", b"[]", "must be a JSON object"),
    ("top-level-null", b"null", "must be a JSON object"),
    ("top-level-1e999", b"1e999", "must be a JSON object, got a number"),
    # things that would execute if they were not plain JSON
    ("yaml-python-tag", f"!!python/object/apply:os.system ['touch {MARKER}']\n".encode(), "not valid JSON"),
    ("yaml-with-json-shape", b"model_id: m\ntraining_checkpoint: 0.5\nlayers: []\n", "not valid JSON"),
    ("pickle", pickle.dumps(_Payload()), "bad.json"),
]


@pytest.mark.parametrize(
    ("data", "field"),
    [c[1:] for c in BAD_BLUEPRINTS],
    ids=[f"{i + 1:02d}-{c[0]}" for i, c in enumerate(BAD_BLUEPRINTS)],
)
def test_bad_blueprint_is_refused_in_one_line(hostile, data, field):
    (hostile / "bad.json").write_bytes(data)
    out = refused(hostile, field, "blueprint", "validate", "bad.json")
    assert "cpr: error: bad.json" in out.err  # the file, then the field
    refused(hostile, field, "blueprint", "show", "bad.json", "--json")
    refused(hostile, field, "blueprint", "diff", "bad.json", str(REPO / "tests/assets/paper_appendix_a.json"))
    refused(hostile, field, "blueprint", "aggregate", "bad.json", "--csv", "out.csv")  # no out.csv either
    assert not (hostile / MARKER).exists()


def test_there_are_at_least_20_bad_blueprints():
    assert len(BAD_BLUEPRINTS) >= 20 and len({c[0] for c in BAD_BLUEPRINTS}) == len(BAD_BLUEPRINTS)


def test_a_100_mb_file_is_refused_by_its_size_before_it_is_read(hostile):
    with open(hostile / "big.json", "wb") as fh:
        fh.truncate(100 * 1024 * 1024)  # sparse: 100 MB long, nothing on disk
    t0 = time.perf_counter()
    out = refused(hostile, "big.json", "blueprint", "validate", "big.json")
    assert f"over the {MAX_BLUEPRINT_BYTES}-byte cap" in out.err and time.perf_counter() - t0 < 5


def test_an_endless_stream_is_read_only_up_to_the_cap(hostile):
    os.symlink("/dev/zero", hostile / "zero.json")  # fstat says 0 bytes; reading would never end
    refused(hostile, "zero.json", "blueprint", "validate", "zero.json")


def test_a_directory_and_a_missing_file(hostile):
    (hostile / "d").mkdir()
    refused(hostile, "d: is a directory", "blueprint", "validate", "d")
    refused(hostile, "nope.json: no such file", "blueprint", "validate", "nope.json")


def test_a_bad_second_file_writes_no_aggregate(hostile):
    (hostile / "bad.json").write_bytes(b"[]")
    paper = str(REPO / "tests/assets/paper_appendix_a.json")
    refused(hostile, "bad.json", "blueprint", "aggregate", paper, "bad.json", "--csv", "out.csv")


@pytest.mark.parametrize("model_id", ["../../escape", "/tmp/abs", "a/b", "..", ".", "a\\b", "x" * 200, "-x"])
def test_the_store_refuses_model_ids_that_are_not_one_safe_folder_name(tmp_path, model_id):
    """A file's model_id is free text (a label, e.g. org/name); it becomes a folder only in the store, which refuses
    anything but one plain path component, before it writes."""
    doc = paper_doc()
    doc["model_id"] = model_id
    bp = parse_blueprint(json.dumps(doc), source="m.json")
    store = LocalBlueprintStore(tmp_path / "store")
    with pytest.raises(InputError) as err:
        store.publish(bp)
    assert err.value.field == "model_id" and "\n" not in str(err.value)
    with pytest.raises(InputError):
        store.get(model_id)
    assert tree(tmp_path) == set()


def test_loading_code_uses_plain_json_only():
    """No pickle, marshal, eval or unsafe YAML anywhere a blueprint is read (docs/blueprints.md)."""
    files = [*(REPO / "orchestrator/blueprints").glob("*.py"), REPO / "launch/blueprints.py"]
    files.append(REPO / "orchestrator/tracking/published.py")
    forbidden = re.compile(r"\bimport (pickle|marshal|yaml|shelve|dill)\b|\b(eval|exec)\(|yaml\.(unsafe_)?load\(")
    for path in files:
        hits = forbidden.findall(path.read_text())
        assert not hits, f"{path}: {hits}"


def test_a_real_process_prints_one_line_for_100k_nested_lists(tmp_path):
    (tmp_path / "deep.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    cpr = Path(sys.executable).with_name("cpr")
    cmd = [str(cpr)] if cpr.exists() else [sys.executable, "-m", "launch.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*cmd, "blueprint", "validate", "deep.json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr == "cpr: error: deep.json: is nested too deeply to read (a blueprint is a flat record; remove "
        "the deep nesting)\n"
    )
    assert "Traceback" not in done.stdout and sorted(p.name for p in tmp_path.iterdir()) == ["deep.json"]


# --------------------------------------------------------------------------------------------- fuzzing

_JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.sampled_from([10**400, -(10**400), 2**63, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["\ud800", "\x00", "../../x", "/etc/passwd", "1.0", "", "attn.0"]),
)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def mutated_blueprint(draw: st.DrawFn) -> str:
    """A valid blueprint (paper shape or schema 1.0) with a few fields dropped or replaced by random JSON values."""
    doc = copy.deepcopy(draw(st.sampled_from([paper_doc(), full_doc()])))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        *parent_path, last = draw(st.sampled_from(paths))
        parent = doc
        for part in parent_path:
            parent = parent[part]
        if draw(st.booleans()):
            del parent[last]
        else:
            parent[last] = draw(_JSON)
    if draw(st.booleans()):
        doc[draw(st.text(min_size=1, max_size=8))] = draw(_JSON)
    return json.dumps(doc, allow_nan=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_blueprint())
def test_a_mutated_blueprint_loads_or_is_refused_in_one_line(hostile, text):
    """Never another exception: either it loads (and shows), or it is an InputError printed as one line, exit 2."""
    (hostile / "m.json").write_text(text, encoding="utf-8")
    before = tree(hostile)
    try:
        parse_blueprint(text, source="m.json")
        loads = True
    except InputError:
        loads = False
    for verb in (["validate", "m.json"], ["show", "m.json", "--json"], ["show", "m.json"]):
        out = run_cli("blueprint", *verb)
        if loads:
            assert out.code == 0 and out.err == "", out
        else:
            assert_one_line(out, "m.json")
    assert tree(hostile) == before
