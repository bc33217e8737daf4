"""The blueprint schema has one source: the committed JSON Schema is what the document models generate, stays a
strict draft 2020-12 schema, agrees field by field with the Python values, and published bytes do not change."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest

from orchestrator.blueprints import (
    Blueprint,
    ConfidenceInterval,
    FitInfo,
    LayerEntry,
    PrivacyRecord,
    ResourceModelRecord,
    documents,
    dumps_blueprint,
    load_blueprint,
    load_schema,
    schema_gen,
)
from orchestrator.blueprints.builder import resource_record_from_dict
from orchestrator.blueprints.model import KNOWN_SCHEMA_VERSIONS
from orchestrator.errors import InputError
from orchestrator.select.influence import CrossInfluence

PUBLISHED = Path(__file__).resolve().parents[1] / "assets" / "published_blueprint_1_0.json"


def test_the_committed_schema_is_what_the_models_generate():
    assert schema_gen.SCHEMA_PATH.read_text(encoding="utf-8") == schema_gen.schema_text(), (
        "run: python -m orchestrator.blueprints.schema_gen"
    )


def test_the_generator_writes_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(schema_gen, "SCHEMA_PATH", tmp_path / "blueprint.schema.json")
    assert schema_gen.main() == 0
    assert (tmp_path / "blueprint.schema.json").read_text(encoding="utf-8") == schema_gen.schema_text()
    assert capsys.readouterr().out.strip() == str(tmp_path / "blueprint.schema.json")


def test_identity_of_the_published_schema():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://cpr-orchestrator.invalid/schemas/blueprint.schema.json"
    assert schema["title"] == "Gradient blueprint"
    assert schema["if"] == {"required": ["schema_version"]}
    assert schema["then"] == {"$ref": "#/$defs/blueprint_1_0"} and schema["else"] == {"$ref": "#/$defs/blueprint_paper"}
    version = schema["$defs"]["blueprint_1_0"]["properties"]["schema_version"]
    assert version == {"enum": list(KNOWN_SCHEMA_VERSIONS), "type": "string"}


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)


def test_the_schema_is_strict():
    """Schema 1.0 objects refuse unknown fields, nothing admits null, every number is bounded, no defaults."""
    defs = load_schema()["$defs"]
    for name in ("blueprint_1_0", "layer_1_0", "fit", "resource_model", "privacy", "cross_influence"):
        assert defs[name]["additionalProperties"] is False, name
    for node in _walk(defs):
        if isinstance(node, dict):
            assert node.get("type") != "null" and "default" not in node and "title" not in node
            if node.get("type") in ("number", "integer"):
                assert ("maximum" in node or "exclusiveMaximum" in node) and (
                    "minimum" in node or "exclusiveMinimum" in node
                )
    assert defs["layer_1_0"]["dependentRequired"]["k_star_interior"] == ["k_star"]
    assert defs["layer_1_0"]["properties"]["prefixes"]["uniqueItems"] is True
    assert defs["blueprint_1_0"]["properties"]["created_at"]["format"] == "date-time"


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_the_values_and_the_documents_name_the_same_fields():
    """What a value holds is what the schema lets a file say: nothing is dropped on writing or lost on reading."""
    assert set(_names(FitInfo)) == set(documents.Fit.model_fields)
    assert set(_names(ResourceModelRecord)) == set(documents.ResourceModel.model_fields)
    assert set(_names(PrivacyRecord)) == set(documents.Privacy.model_fields)
    assert _names(CrossInfluence) == list(documents.CrossInfluence.model_fields)  # to_dict's order is the file's
    ci = {f"ci_{name}" for name in _names(ConfidenceInterval)}
    assert set(_names(LayerEntry)) - {"ci", "extra"} | ci == set(documents.Layer_1_0.model_fields)
    assert set(_names(Blueprint)) - {"extra"} == set(documents.Blueprint_1_0.model_fields)
    assert set(documents.LayerPaper.model_fields) < set(documents.Layer_1_0.model_fields)
    assert set(documents.BlueprintPaper.model_fields) < set(documents.Blueprint_1_0.model_fields)


def test_a_published_blueprint_reads_and_writes_byte_for_byte():
    """Every schema 1.0 field, written as publishing writes it: the same bytes come out again."""
    text = PUBLISHED.read_text(encoding="utf-8")
    bp = load_blueprint(PUBLISHED)
    assert dumps_blueprint(bp) == text
    assert bp.provenance["seed"] == 7 and isinstance(bp.provenance["seed"], int)  # an integer stays an integer
    assert isinstance(bp.resource_model.cost_fixed, float) and bp.layers[2].fit.rank_range == (0.0001, 0.5)


def test_an_integral_number_is_written_back_as_a_number():
    doc = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    doc["training_checkpoint"], doc["layers"][0]["gradient_norm"] = 1, 2
    text = dumps_blueprint(load_blueprint(json.dumps(doc).encode()))
    assert '"training_checkpoint": 1.0' in text and '"gradient_norm": 2.0' in text


def test_a_resource_model_record_is_checked_against_its_document():
    record = resource_record_from_dict({"cost_fixed": 2, "cost_per_param": 12.0, "zero_stage": 1})
    assert record == ResourceModelRecord(cost_fixed=2.0, cost_per_param=12.0, zero_stage=1)
    with pytest.raises(InputError) as err:
        resource_record_from_dict({"cost_fixed": 2.0, "cost_per_param": 12.0, "stage": 1})
    assert err.value.field == "resource_model: stage" and "\n" not in err.value.one_line()
