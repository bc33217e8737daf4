"""Generate the published JSON Schema, `schema/blueprint.schema.json`, from the document models (`documents`).

Run `python -m orchestrator.blueprints.schema_gen` after changing a model; a unit test fails while the committed
file differs from what the models generate. The file is what external readers validate against, so it stays a
strict draft 2020-12 schema: no titles or defaults, no JSON null for an absent field, enums, snake_case `$defs`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from orchestrator.blueprints.documents import Blueprint_1_0, BlueprintPaper

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "blueprint.schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://cpr-orchestrator.invalid/schemas/blueprint.schema.json"
TITLE = "Gradient blueprint"
DESCRIPTION = (
    "Submodule-level gradient statistics released at a training checkpoint (paper §5 and Appendix A.1). A file "
    "without `schema_version` is in the paper's Appendix A shape (unknown fields are kept); schema 1.0, 1.1 and 1.2 "
    "add what a consumer needs to trust and apply the file and reject unknown fields."
)


class _PublishedSchema(GenerateJsonSchema):
    """pydantic's JSON Schema as a published schema states it: constraints and descriptions only."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        out = super().model_schema(schema)
        out.pop("title", None)
        if "description" in out:  # a docstring wraps at the line length; a description is one line
            out["description"] = " ".join(out["description"].split())
        return out

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])  # the default (None) only means "absent"

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])  # an absent field is left out, never written as null

    def literal_schema(self, schema: core_schema.LiteralSchema) -> JsonSchemaValue:
        out = super().literal_schema(schema)
        if "const" in out:  # one allowed value is still an enum: errors then read "must be one of ..."
            out["enum"] = [out.pop("const")]
        return out

    def normalize_name(self, name: str) -> str:
        return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", super().normalize_name(name)).lower()  # LayerPaper: layer_paper


def blueprint_json_schema() -> dict[str, Any]:
    """The whole schema: a file with `schema_version` is a schema 1.0 document, any other the paper's shape."""
    refs, defs = models_json_schema(
        [(Blueprint_1_0, "validation"), (BlueprintPaper, "validation")],
        ref_template="#/$defs/{model}",
        schema_generator=_PublishedSchema,
    )
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": TITLE,
        "description": DESCRIPTION,
        "type": "object",
        "if": {"required": ["schema_version"]},
        "then": refs[(Blueprint_1_0, "validation")],
        "else": refs[(BlueprintPaper, "validation")],
        **defs,
    }


def schema_text() -> str:
    """The schema file's text, exactly as committed."""
    return json.dumps(blueprint_json_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    """Write the schema file; print its path."""
    SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
    print(SCHEMA_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
