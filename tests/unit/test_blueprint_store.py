"""LocalBlueprintStore: versions in order, immutability, latest, and no path traversal."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.blueprints import (
    Blueprint,
    BlueprintVersionExists,
    LayerEntry,
    LocalBlueprintStore,
    load_blueprint,
)
from orchestrator.errors import InputError

PAPER_FILE = Path(__file__).resolve().parents[1] / "assets" / "paper_appendix_a.json"


def bp(model_id: str = "tiny-llama", norm: float = 0.1) -> Blueprint:
    return Blueprint(
        model_id=model_id,
        training_checkpoint=0.5,
        layers=(LayerEntry(id="attn.0", gradient_norm=norm), LayerEntry(id="ffn.0", gradient_norm=norm / 2)),
    )


def test_versions_are_assigned_in_order_and_written_into_the_file(tmp_path):
    store = LocalBlueprintStore(tmp_path)
    v1, p1 = store.publish(bp(norm=0.1))
    v2, p2 = store.publish(bp(norm=0.2))
    assert (v1, v2) == (1, 2)
    assert p1 == tmp_path / "tiny-llama" / "v1" / "blueprint.json" == store.path("tiny-llama", 1)
    assert p2 == tmp_path / "tiny-llama" / "v2" / "blueprint.json"
    assert json.loads(p1.read_text())["blueprint_version"] == 1
    assert load_blueprint(p2).blueprint_version == 2
    assert store.versions("tiny-llama") == [1, 2]
    assert store.models() == ["tiny-llama"]


def test_get_latest_and_a_given_version(tmp_path):
    store = LocalBlueprintStore(tmp_path)
    store.publish(bp(norm=0.1))
    store.publish(bp(norm=0.2))
    assert store.get("tiny-llama").layers[0].gradient_norm == 0.2
    assert store.get("tiny-llama", 1).layers[0].gradient_norm == 0.1
    assert store.get("tiny-llama", 1) == replace(bp(norm=0.1), blueprint_version=1)


def test_published_versions_are_immutable(tmp_path):
    store = LocalBlueprintStore(tmp_path)
    store.publish(bp(norm=0.1), version=1)
    before = store.path("tiny-llama", 1).read_bytes()
    with pytest.raises(BlueprintVersionExists) as err:
        store.publish(bp(norm=0.9), version=1)
    assert isinstance(err.value, InputError) and "immutable" in err.value.fix and "v1" in err.value.field
    assert store.path("tiny-llama", 1).read_bytes() == before
    assert not stat.S_IMODE(os.stat(store.path("tiny-llama", 1)).st_mode) & 0o222  # read-only on disk
    assert [p.name for p in store.path("tiny-llama", 1).parent.iterdir()] == ["blueprint.json"]  # no temp files


def test_explicit_version_then_next(tmp_path):
    store = LocalBlueprintStore(tmp_path)
    assert store.publish(bp(), version=5)[0] == 5
    assert store.publish(bp())[0] == 6
    assert store.versions("tiny-llama") == [5, 6]


def test_a_half_made_version_directory_is_not_a_version(tmp_path):
    store = LocalBlueprintStore(tmp_path)
    (tmp_path / "tiny-llama" / "v1").mkdir(parents=True)
    (tmp_path / "tiny-llama" / "v1" / ".blueprint.json.1.tmp").write_text("{")  # a crash mid-write
    assert store.versions("tiny-llama") == [] and store.models() == []
    assert store.publish(bp())[0] == 1


def test_paper_shape_blueprint_is_stored_in_the_current_schema(tmp_path):
    store = LocalBlueprintStore(tmp_path)
    version, path = store.publish(load_blueprint(PAPER_FILE))
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == "1.2" and doc["blueprint_version"] == version == 1
    assert store.get("foundation-7b").norms() == load_blueprint(PAPER_FILE).norms()


@pytest.mark.parametrize("model_id", ["../evil", "..", ".", "a/b", "a\\b", "", "/abs", "-x", "x" * 129, "a\nb"])
def test_traversal_and_unsafe_model_ids_are_refused(tmp_path, model_id):
    store = LocalBlueprintStore(tmp_path / "store")
    with pytest.raises(InputError) as err:
        store.publish(bp(model_id=model_id))
    assert err.value.field == "model_id"
    for call in (lambda: store.versions(model_id), lambda: store.get(model_id), lambda: store.path(model_id, 1)):
        with pytest.raises(InputError):
            call()
    assert not (tmp_path / "evil").exists() and not any((tmp_path).glob("**/blueprint.json"))


def test_missing_model_and_version(tmp_path):
    store = LocalBlueprintStore(tmp_path)
    with pytest.raises(InputError, match="no published blueprint"):
        store.get("nobody")
    store.publish(bp())
    with pytest.raises(InputError, match="not published"):
        store.get("tiny-llama", 7)
    with pytest.raises(InputError, match="version"):
        store.publish(bp(), version=0)
    assert store.models() == ["tiny-llama"] and LocalBlueprintStore(tmp_path / "none").models() == []


def test_a_hand_edited_file_is_detected(tmp_path):
    store = LocalBlueprintStore(tmp_path)
    _, path = store.publish(bp())
    other = LocalBlueprintStore(tmp_path / "x").publish(bp(model_id="other-model"))[1]
    os.chmod(path, 0o644)
    path.write_bytes(other.read_bytes())
    with pytest.raises(InputError, match="holds 'other-model'"):
        store.get("tiny-llama")


def test_an_invalid_blueprint_is_never_written(tmp_path):
    store = LocalBlueprintStore(tmp_path)
    with pytest.raises(InputError, match="gradient_norm"):
        store.publish(bp(norm=-1.0))
    assert store.versions("tiny-llama") == [] and not any(tmp_path.glob("**/blueprint.json"))
