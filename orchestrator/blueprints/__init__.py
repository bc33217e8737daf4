"""Gradient blueprints (§5, App. A; docs/blueprints.md): build, validate, store, compare, drift-check and noise them.

Pure code: standard library, numpy, scipy, jsonschema, pydantic and dp-accounting only. The JSON Schema ships as
package data (`schema/blueprint.schema.json`), generated from the document models in `documents` by `schema_gen`.
"""

from orchestrator.blueprints.builder import build_blueprint
from orchestrator.blueprints.compare import (
    AggregateRow,
    AggregateTable,
    BlueprintDiff,
    DriftReport,
    LayerChange,
    Overwrite,
    aggregate_blueprints,
    diff_blueprints,
    drift_check,
)
from orchestrator.blueprints.grouping import ParamGroup, coarse_id, group_of, group_parameters
from orchestrator.blueprints.model import (
    MAX_BLUEPRINT_BYTES,
    PAPER_SHAPE,
    SCHEMA_VERSION,
    Blueprint,
    ConfidenceInterval,
    FitInfo,
    LayerEntry,
    PrivacyRecord,
    ResourceModelRecord,
    as_schema_1_0,
    blueprint_to_dict,
    dumps_blueprint,
    load_blueprint,
    load_schema,
    parse_blueprint,
    validate_document,
)
from orchestrator.blueprints.privacy import add_gaussian_noise, dp_epsilon, dp_release
from orchestrator.blueprints.store import BlueprintVersionExists, LocalBlueprintStore

__all__ = [
    "MAX_BLUEPRINT_BYTES",
    "PAPER_SHAPE",
    "SCHEMA_VERSION",
    "AggregateRow",
    "AggregateTable",
    "Blueprint",
    "BlueprintDiff",
    "BlueprintVersionExists",
    "ConfidenceInterval",
    "DriftReport",
    "FitInfo",
    "LayerChange",
    "LayerEntry",
    "LocalBlueprintStore",
    "Overwrite",
    "ParamGroup",
    "PrivacyRecord",
    "ResourceModelRecord",
    "add_gaussian_noise",
    "aggregate_blueprints",
    "as_schema_1_0",
    "blueprint_to_dict",
    "build_blueprint",
    "coarse_id",
    "diff_blueprints",
    "dp_epsilon",
    "dp_release",
    "drift_check",
    "dumps_blueprint",
    "group_of",
    "group_parameters",
    "load_blueprint",
    "load_schema",
    "parse_blueprint",
    "validate_document",
]
