"""Blueprint files (§5, App. A.1; docs/blueprints.md): typed values, strict JSON reading/writing, schema validation.

Two shapes load: the paper's Appendix A.1 shape (no `schema_version`; fields it does not know are kept verbatim
in `extra` so the file round-trips), and schema 1.0 (`schema_version: "1.0"`), which adds versioning, fidelity,
fit quality, parameter prefixes, resource model, privacy and provenance, and rejects unknown fields; schema 1.1
adds a differentially private release's accounting to the privacy record, and schema 1.2 (what is written now) the
optional cross-influence map of `cpr select` (`cross_influence`); 1.0 and 1.1 files stay valid.
Loading is plain `json` with hooks that refuse NaN/Infinity and duplicate keys: nothing in a file is executed.
Every problem is an `InputError` naming the JSON path of the offending field.

The document models in `documents` are the one description of the file: the published JSON Schema is generated
from them (`schema_gen`), files are read into the values below through them, and written in their key order.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
from pydantic import BaseModel, ValidationError

from orchestrator.blueprints import documents
from orchestrator.errors import InputError
from orchestrator.select.influence import CrossInfluence

SCHEMA_VERSION = "1.2"  # what this code writes; 1.1 adds the privacy record's DP accounting, 1.2 cross_influence
KNOWN_SCHEMA_VERSIONS: tuple[str, ...] = ("1.0", "1.1", SCHEMA_VERSION)
PAPER_SHAPE = "paper-A.1"  # how a file without `schema_version` is described
MAX_BLUEPRINT_BYTES = 16 * 1024 * 1024
MAX_NESTING_DEPTH = 64  # a schema 1.0 file nests 4 deep; paper-shape extras get some room

SCHEMA_FILE = "blueprint.schema.json"
_SCHEMA_HINT = "see orchestrator/blueprints/schema/blueprint.schema.json"

_M = TypeVar("_M", bound=BaseModel)


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True, kw_only=True)
class ConfidenceInterval:
    """Bootstrap CI of a layer's statistic over validation batches (§5 "Fidelity")."""

    low: float
    high: float
    level: float


@dataclass(frozen=True, kw_only=True)
class FitInfo:
    """How `alpha` was fitted and how well; `error` says why there is no fit (too little data)."""

    method: str
    r2: float | None = None
    ks_distance: float | None = None
    x_min: float | None = None
    n_tail: int | None = None
    rank_range: tuple[float, float] | None = None  # rank fractions used by rank-lstsq
    error: str | None = None
    tail_alpha: float | None = None  # the CSN fit of the tail (blueprints/tailfit.py)
    tail_x_min: float | None = None
    tail_n: int | None = None
    tail_n_tail: int | None = None
    tail_share: float | None = None
    tail_ks_distance: float | None = None
    likelihood_ratios: dict[str, dict[str, float]] | None = None  # alternative -> {"ratio": R, "p": p}


@dataclass(frozen=True, kw_only=True)
class LayerEntry:
    """One submodule of a blueprint (App. A.1 (i)-(vi), plus schema 1.0's fidelity and fit fields)."""

    id: str
    gradient_norm: float
    alpha: float | None = None  # the fitted power-law exponent (`powerlaw_alpha`, §4.1)
    gamma: float | None = None  # the paper's γ = 1 − α/(1+α) (App. A.1 (iv))
    k_star: float | None = None  # recommended update fraction (Prop. B.1)
    domain_tags: dict[str, float] | None = None
    statistic: str | None = None  # "mean" | "median" over validation batches
    ci: ConfidenceInterval | None = None
    n_batches: int | None = None
    n_params: int | None = None
    prefixes: tuple[str, ...] | None = None
    gamma_fit: float | None = None  # empirical γ from m(k) ≈ k^γ
    fit: FitInfo | None = None
    k_star_interior: bool | None = None
    recommendation: float | None = None  # k* when the fit supports one, else None with the reason
    recommendation_reason: str | None = None
    extra: dict[str, Any] | None = None  # paper-shape files only: fields the paper's shape does not name


@dataclass(frozen=True, kw_only=True)
class ResourceModelRecord:
    """The resource model k* was derived from: cost(k) = cost_fixed + cost_per_param·k (Prop. B.1)."""

    cost_fixed: float
    cost_per_param: float
    unit: str | None = None
    breakdown: dict[str, float] | None = None
    optimizer: str | None = None
    precision: str | None = None
    zero_stage: int | None = None
    n_params: int | None = None
    dp_world_size: int | None = None
    notes: str | None = None


@dataclass(frozen=True, kw_only=True)
class PrivacyRecord:
    """Noise added to the released statistics before publication (§5 "Privacy"), and a DP release's accounting."""

    mechanism: str
    clip: float
    sigma: float
    note: str
    noise_multiplier: float | None = None
    epsilon: float | None = None
    delta: float | None = None
    release: str | None = None  # "noise" | "dp" (schema 1.1)
    accountant: str | None = None
    adjacency: str | None = None
    composed_releases: int | None = None
    withheld: dict[str, str] | None = None  # field -> why it is not released


@dataclass(frozen=True, kw_only=True)
class Blueprint:
    """A gradient blueprint. `schema_version` None means the paper's Appendix A.1 shape."""

    model_id: str
    training_checkpoint: float
    layers: tuple[LayerEntry, ...]
    schema_version: str | None = SCHEMA_VERSION
    blueprint_version: int | None = None
    created_at: str | None = None  # RFC 3339
    run_id: str | None = None
    step: int | None = None
    tokens_seen: int | None = None
    resource_model: ResourceModelRecord | None = None
    privacy: PrivacyRecord | None = None
    provenance: dict[str, str | float | int | bool] | None = None
    cross_influence: CrossInfluence | None = None  # schema 1.2: `cpr select`'s groups × data blocks map
    extra: dict[str, Any] | None = None  # paper-shape files only

    @property
    def shape(self) -> str:
        """The schema as `cpr blueprint validate` names it: the schema_version, or paper-A.1 without one."""
        return self.schema_version if self.schema_version is not None else PAPER_SHAPE

    def layer(self, layer_id: str) -> LayerEntry:
        for entry in self.layers:
            if entry.id == layer_id:
                return entry
        raise KeyError(layer_id)

    def norms(self) -> dict[str, float]:
        """gradient_norm per id, in file order."""
        return {entry.id: entry.gradient_norm for entry in self.layers}


def as_schema_1_0(bp: Blueprint, *, source: str = "blueprint") -> Blueprint:
    """The same blueprint as a schema 1.0 value (needed before adding versions, privacy, ...).

    A paper-shape blueprint with fields schema 1.0 does not know cannot be upgraded without losing them.
    """
    if bp.schema_version is not None:
        return bp
    field = next(iter(bp.extra)) if bp.extra else None
    for i, entry in enumerate(bp.layers):
        if field is None and entry.extra:
            field = f"layers[{i}].{next(iter(entry.extra))}"
    if field is not None:
        raise InputError(
            f"{source}: {field}",
            "is not a schema 1.0 field, so this paper-shape blueprint cannot be upgraded without losing it",
            "remove the field, or map it onto a schema 1.0 field",
        )
    return replace(bp, schema_version=SCHEMA_VERSION)


# --------------------------------------------------------------------------------------------- schema


@functools.cache
def _schema_text() -> str:
    return resources.files("orchestrator.blueprints").joinpath("schema").joinpath(SCHEMA_FILE).read_text("utf-8")


def load_schema() -> dict[str, Any]:
    """The JSON Schema shipped as package data (a fresh copy each call)."""
    return json.loads(_schema_text())


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# --------------------------------------------------------------------------------------------- errors

_FIXES: dict[str, str] = {
    "model_id": "name the model, e.g. foundation-7b (no control characters)",
    "training_checkpoint": "the fraction of the training budget processed, in [0, 1], e.g. 0.8",
    "layers": "a non-empty list of layer entries, each with an id and a gradient_norm",
    "id": "ids look like attn.0 or ffn.12: letters, digits and _ . : - only (no slashes), at most 128 characters",
    "gradient_norm": "gradient norms are magnitudes: a finite number >= 0",
    "k_star": "a recommended update fraction, in [0, 1]",
    "alpha": "the fitted power-law exponent, a finite number",
    "gamma": "γ = 1 − α/(1+α), a finite number",
    "gamma_fit": "the empirical γ from m(k) ≈ k^γ, a finite number",
    "domain_tags": "an object of domain name -> weight >= 0 relative to the general set",
    "ci_low": "a CI bound of the gradient norm, >= 0; ci_low, ci_high and ci_level come together",
    "ci_high": "a CI bound of the gradient norm, >= 0; ci_low, ci_high and ci_level come together",
    "ci_level": "the CI's confidence level, strictly between 0 and 1 (e.g. 0.95)",
    "statistic": 'either "mean" or "median"',
    "n_batches": "the number of validation batches, an integer >= 1",
    "n_params": "a parameter count, an integer >= 0",
    "prefixes": "a list of distinct parameter-name prefixes such as model.layers.0.self_attn.",
    "blueprint_version": "an integer >= 1 (the store assigns it)",
    "created_at": "an RFC 3339 date-time such as 2025-01-31T12:00:00Z",
    "step": "an integer >= 0",
    "tokens_seen": "an integer >= 0",
    "schema_version": f"known versions: {', '.join(KNOWN_SCHEMA_VERSIONS)}; omit it for a paper Appendix A file",
}

_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}
_SCHEMA_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
}
_FIRST_KEYWORDS = ("type", "required", "additionalProperties", "dependentRequired")
_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _json_path(parts: Iterable[str | int]) -> str:
    """JSON path in the form layers[2].gradient_norm."""
    out = ""
    for part in parts:
        if isinstance(part, str) and len(part) > 64:  # a hostile key: keep the message one short line
            part = part[:61] + "..."
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _field(source: str, parts: Sequence[str | int]) -> str:
    path = _json_path(parts)
    return f"{source}: {path}" if path else source


_CROSS_INFLUENCE_FIXES: dict[str, str] = {
    "statistic": "what T_ij is, in words (cpr select writes it)",
    "block_kind": 'either "folder" or "cluster"',
    "groups": "the submodule groups, T's rows: a non-empty list of distinct names",
    "blocks": "the data blocks, T's columns: a non-empty list of distinct names",
    "examples": "one count of sampled windows (an integer >= 1) per block, in the order of blocks",
    "rank": "the number of singular vectors kept: an integer >= 1, at most the number of singular values",
    "singular_values": "all of T's singular values: finite numbers >= 0, descending, at most min(groups, blocks)",
    "energy": "the share of Σσ² in the top `rank` singular values, in [0, 1]",
    "u": "one row per group, each of `rank` finite numbers (the top left singular vectors)",
    "v": "one row per block, each of `rank` finite numbers (the top right singular vectors)",
}


def _fix_for(parts: Sequence[str | int]) -> str:
    if len(parts) >= 2 and parts[0] == "cross_influence" and isinstance(parts[1], str):
        return _CROSS_INFLUENCE_FIXES.get(parts[1], _SCHEMA_HINT)
    for part in reversed(parts):
        if isinstance(part, str):
            if part in _FIXES:
                return _FIXES[part]
            if len(parts) >= 2 and parts[-2] == "domain_tags":
                return _FIXES["domain_tags"]
            break
    return _SCHEMA_HINT


def _show(value: Any) -> str:
    text = json.dumps(value, allow_nan=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe_type(value: Any) -> str:
    if isinstance(value, _NonFinite):
        return "a number"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _schema_error(err: jsonschema.ValidationError, source: str) -> InputError:
    """One jsonschema error as an InputError naming the JSON path, the problem and the fix."""
    parts: list[str | int] = list(err.absolute_path)
    kind, expected, inst = err.validator, err.validator_value, err.instance
    if kind == "required":
        missing = [p for p in expected if isinstance(inst, dict) and p not in inst]
        parts.append(missing[0] if missing else "?")
        return InputError(_field(source, parts), "is required but missing", _fix_for(parts))
    if kind == "additionalProperties":
        known = sorted((err.schema.get("properties") or {}).keys())
        unknown = [k for k in inst if k not in known] if isinstance(inst, dict) else []
        parts.append(unknown[0] if unknown else "?")
        return InputError(
            _field(source, parts),
            "is not a schema 1.0 field (typo?)",
            f"known fields here: {', '.join(known)}",
        )
    if kind == "dependentRequired":
        order = list(err.schema.get("properties") or {})  # name the first such field in the schema's field order
        for key in sorted(expected, key=lambda k: order.index(k) if k in order else len(order)):
            needs = expected[key]
            lacking = [n for n in needs if key in inst and n not in inst]
            if lacking:
                parts.append(key)
                return InputError(_field(source, parts), f"needs {' and '.join(lacking)} beside it", _fix_for(parts))
    fix = _fix_for(parts)
    if kind == "type":
        names = expected if isinstance(expected, list) else [expected]
        wanted = " or ".join(_SCHEMA_TYPE_NAMES.get(n, n) for n in names)
        problem = f"must be {wanted}, got {_describe_type(inst)} {_show(inst)}"
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        problem = f"must be {op} {expected:g}, got {_show(inst)}"
    elif kind == "enum":
        problem = f"must be one of {', '.join(_show(v) for v in expected)}, got {_show(inst)}"
    elif kind == "pattern":
        problem = f"must match {expected}, got {_show(inst)}"
    elif kind == "minItems":
        problem = f"must have at least {expected} item(s)"
    elif kind == "maxItems":
        problem = f"must have at most {expected} items"
    elif kind == "minLength":
        problem = "must not be empty" if expected == 1 else f"must have at least {expected} characters"
    elif kind == "maxLength":
        problem = f"must have at most {expected} characters"
    elif kind == "uniqueItems":
        problem = "must not repeat items"
    elif kind == "maxProperties":
        problem = f"must have at most {expected} entries"
    elif kind == "propertyNames":
        problem = f"has a bad key: {err.message}"
    elif kind == "anyOf" and parts and len(parts) >= 2 and parts[-2] == "provenance":
        problem = f"must be a string, a number or a boolean, got {_describe_type(inst)} {_show(inst)}"
        fix = "provenance values are plain strings, numbers or booleans"
    else:
        problem = " ".join(err.message.split())
        if len(problem) > 200:
            problem = problem[:197] + "..."
    return InputError(_field(source, parts), problem, fix)


# --------------------------------------------------------------------------------------------- reading


class _NonFinite:
    """Marker left in the parsed document where the text had NaN, Infinity or an overflowing number."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text if len(text) <= 40 else f"{text[:20]}… ({len(text)} characters)"


class _DuplicateKeys(dict):  # type: ignore[type-arg]
    """A JSON object whose text repeated a key (json keeps the last one silently; we refuse)."""

    duplicate: str = ""


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _parse_int(text: str) -> int | _NonFinite:
    """An integer literal beyond a double's range is refused like 1e999 (and never meets Python's digit limit)."""
    return _NonFinite(text) if len(text.lstrip("-")) > 309 else int(text)


_UNICODE_FIX = "write the character itself, or a valid surrogate pair"


def _unicode_ok(text: str) -> bool:
    """False for a string with a lone surrogate (JSON's "\\ud800"): no UTF-8 writer or terminal can take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            dup = _DuplicateKeys(out)
            dup.update(pairs)
            dup.duplicate = key
            return dup
        out[key] = value
    return out


def _scan(doc: Any, source: str) -> None:
    """Refuse what `json` lets through: NaN/Infinity/overflow, repeated keys, nesting deeper than the cap."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        node, parts = stack.pop()
        if len(parts) > MAX_NESTING_DEPTH:
            raise InputError(
                _field(source, parts[:8]) + "...",
                f"is nested deeper than {MAX_NESTING_DEPTH} levels",
                "a blueprint is a flat record; remove the deep nesting",
            )
        if isinstance(node, _NonFinite):
            raise InputError(
                _field(source, parts),
                f"must be a finite number, got {node.text}",
                "JSON has no NaN or Infinity; write a finite value or leave the field out",
            )
        if isinstance(node, float) and not math.isfinite(node):
            raise InputError(
                _field(source, parts),
                f"must be a finite number, got {node!r}",
                "JSON has no NaN or Infinity; write a finite value or leave the field out",
            )
        if isinstance(node, dict):
            if isinstance(node, _DuplicateKeys):
                raise InputError(
                    _field(source, (*parts, node.duplicate)),
                    "appears twice in the same object",
                    "keep one of the two; JSON readers disagree on which one wins",
                )
            items = list(node.items())
            for key, _ in items:
                if not _unicode_ok(key):
                    raise InputError(_field(source, (*parts, key)), "is a key with a lone surrogate", _UNICODE_FIX)
            stack.extend((value, (*parts, key)) for key, value in reversed(items))
        elif isinstance(node, str) and not _unicode_ok(node):
            raise InputError(
                _field(source, parts), "holds a lone surrogate (an unpaired \\ud800-\\udfff)", _UNICODE_FIX
            )
        elif isinstance(node, list):
            stack.extend((value, (*parts, i)) for i, value in reversed(list(enumerate(node))))


def validate_document(doc: Any, *, source: str) -> None:
    """Check a decoded blueprint document against the schema and the rules a schema cannot say.

    Raises InputError naming the JSON path of the first problem.
    """
    if not isinstance(doc, dict):
        raise InputError(source, f"must be a JSON object, got {_describe_type(doc)}", _FIXES["layers"])
    _scan(doc, source)
    version = doc.get("schema_version")
    if "schema_version" in doc and version not in KNOWN_SCHEMA_VERSIONS:
        raise InputError(
            f"{source}: schema_version", f"unknown schema version {_show(version)}", _FIXES["schema_version"]
        )
    privacy = doc.get("privacy")
    if version == "1.0" and isinstance(privacy, dict):
        newer = next((key for key in documents.PRIVACY_1_1_FIELDS if key in privacy), None)
        if newer is not None:
            raise InputError(
                f"{source}: privacy.{newer}",
                "is a schema 1.1 field but the file says 1.0",
                'set "schema_version": "1.1"',
            )
    if version in ("1.0", "1.1"):
        newer = next((key for key in documents.BLUEPRINT_1_2_FIELDS if key in doc), None)
        if newer is not None:
            raise InputError(
                f"{source}: {newer}",
                f"is a schema 1.2 field but the file says {version}",
                'set "schema_version": "1.2"',
            )
    errors = list(_validator().iter_errors(doc))
    if errors:
        # Report the first problem in path order, so the message does not depend on jsonschema's internals; at one
        # path a wrong type comes first, then a missing, an unknown, a lone field, then the schema's keyword order.
        def order(e: jsonschema.ValidationError) -> tuple[Any, ...]:
            path = tuple((0, p) if isinstance(p, int) else (1, str(p)) for p in e.absolute_path)
            return path, _FIRST_KEYWORDS.index(e.validator) if e.validator in _FIRST_KEYWORDS else len(_FIRST_KEYWORDS)

        raise _schema_error(min(errors, key=order), source)
    schema_1_0 = "schema_version" in doc  # in the paper's shape, ci_low or created_at would be kept, unread, extras
    seen: dict[str, int] = {}
    for i, layer in enumerate(doc["layers"]):
        lid = layer["id"]
        if lid in seen:
            raise InputError(
                f"{source}: layers[{i}].id",
                f"duplicate id {lid!r} (also layers[{seen[lid]}])",
                "each submodule appears once per blueprint",
            )
        seen[lid] = i
        if schema_1_0 and "ci_low" in layer and layer["ci_low"] > layer["ci_high"]:
            raise InputError(
                f"{source}: layers[{i}].ci_low",
                f"must be <= ci_high, got {layer['ci_low']!r} > {layer['ci_high']!r}",
                _FIXES["ci_low"],
            )
    if schema_1_0 and "cross_influence" in doc:
        _check_cross_influence(doc["cross_influence"], source)
    if schema_1_0 and "created_at" in doc:
        try:
            _dt.datetime.fromisoformat(doc["created_at"].upper().replace("Z", "+00:00"))
        except ValueError:
            raise InputError(
                f"{source}: created_at", f"is not a valid date-time: {_show(doc['created_at'])}", _FIXES["created_at"]
            ) from None


def _check_cross_influence(ci: Mapping[str, Any], source: str) -> None:
    """What the schema cannot say about a schema-valid `cross_influence`: its arrays agree in length with each
    other (u is groups × rank, v blocks × rank, one example count per block), the singular values descend and
    number at most min(groups, blocks) (T's SVD has no more), and the rank keeps no more vectors than there are."""
    n_groups, n_blocks, rank, sv = len(ci["groups"]), len(ci["blocks"]), ci["rank"], ci["singular_values"]

    def refuse(path: str, problem: str, key: str) -> InputError:
        return InputError(f"{source}: cross_influence.{path}", problem, _CROSS_INFLUENCE_FIXES[key])

    if len(ci["examples"]) != n_blocks:
        raise refuse("examples", f"must have one count per block ({n_blocks}), got {len(ci['examples'])}", "examples")
    if len(sv) > min(n_groups, n_blocks):
        raise refuse(
            "singular_values",
            f"must have at most min(groups, blocks) = {min(n_groups, n_blocks)} items, got {len(sv)}",
            "singular_values",
        )
    for k in range(1, len(sv)):
        if sv[k] > sv[k - 1]:
            raise refuse(
                f"singular_values[{k}]", f"must be <= the one before (descending), got {sv[k]!r} > {sv[k - 1]!r}",
                "singular_values",
            )  # fmt: skip
    if rank > len(sv):
        raise refuse("rank", f"must be <= the number of singular values ({len(sv)}), got {rank}", "rank")
    for key, rows, what in (("u", n_groups, "group"), ("v", n_blocks, "block")):
        if len(ci[key]) != rows:
            raise refuse(key, f"must have one row per {what} ({rows}), got {len(ci[key])}", key)
        for i, row in enumerate(ci[key]):
            if len(row) != rank:
                raise refuse(f"{key}[{i}]", f"must have rank = {rank} numbers, got {len(row)}", key)


def _decode(data: bytes | str, source: str) -> Any:
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_BLUEPRINT_BYTES:
        raise InputError(
            source,
            f"is {size} bytes, over the {MAX_BLUEPRINT_BYTES}-byte cap for blueprints",
            "a blueprint holds per-submodule summaries; it should be far smaller",
        )
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(source, f"is not UTF-8 text (byte {err.start})", "save the file as UTF-8 JSON") from None
    else:
        text = data
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(
            text,
            parse_constant=_NonFinite,
            parse_float=_parse_float,
            parse_int=_parse_int,
            object_pairs_hook=_object_pairs,
        )
    except RecursionError:
        raise InputError(
            source,
            "is nested too deeply to read",
            "a blueprint is a flat record; remove the deep nesting",
        ) from None
    except json.JSONDecodeError as err:
        raise InputError(
            source,
            f"is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}",
            "a blueprint is a JSON file (App. A.1); note that JSON has no comments",
        ) from None
    except ValueError as err:  # e.g. an integer literal longer than Python's digit limit
        raise InputError(source, f"is not valid JSON: {' '.join(str(err).split())[:120]}", None) from None


def _fields_of(record: Any) -> dict[str, Any]:
    """The declared fields of a dataclass value or a document model by name (a model's extra fields left out)."""
    names = type(record).model_fields if isinstance(record, BaseModel) else [f.name for f in fields(record)]
    return {name: getattr(record, name) for name in names}


def _validated(model: type[_M], data: Mapping[str, Any], source: str) -> _M:
    """`data` as a document model. The schema checked it already; this converts (JSON 2 into 2.0 for a number)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:  # only if pydantic and the generated schema ever disagree: still one line
        first = err.errors()[0]
        raise InputError(_field(source, first["loc"]), " ".join(first["msg"].split())[:200], _SCHEMA_HINT) from None


def _entry(layer: documents.LayerPaper | documents.Layer_1_0) -> LayerEntry:
    """A layer value from its document: the three ci_* fields become one ConfidenceInterval."""
    values = _fields_of(layer)
    low, high, level = (values.pop(key, None) for key in ("ci_low", "ci_high", "ci_level"))
    if values.get("fit") is not None:
        fit = _fields_of(values["fit"])
        if fit.get("likelihood_ratios") is not None:
            fit["likelihood_ratios"] = {k: v.model_dump() for k, v in fit["likelihood_ratios"].items()}
        values["fit"] = FitInfo(**fit)
    ci = ConfidenceInterval(low=low, high=high, level=level) if low is not None else None
    return LayerEntry(**values, ci=ci, extra=layer.model_extra or None)


def resource_record_from_dict(r: Mapping[str, Any], *, source: str = "resource_model") -> ResourceModelRecord:
    """A ResourceModelRecord from a resource model's to_dict() form, checked as a file's `resource_model` is."""
    return ResourceModelRecord(**_fields_of(_validated(documents.ResourceModel, r, source)))


def _blueprint_from_doc(doc: Mapping[str, Any], source: str) -> Blueprint:
    """The value of a validated document; a paper-shape file's unknown fields go to `extra`."""
    model = documents.Blueprint_1_0 if "schema_version" in doc else documents.BlueprintPaper
    document = _validated(model, doc, source)
    values = _fields_of(document)
    values["layers"] = tuple(_entry(layer) for layer in document.layers)
    if values.get("resource_model") is not None:
        values["resource_model"] = ResourceModelRecord(**_fields_of(values["resource_model"]))
    if values.get("privacy") is not None:
        values["privacy"] = PrivacyRecord(**_fields_of(values["privacy"]))
    if values.get("cross_influence") is not None:
        values["cross_influence"] = CrossInfluence.from_dict(_fields_of(values["cross_influence"]))
    values.setdefault("schema_version", None)  # the paper's shape has none
    return Blueprint(**values, extra=document.model_extra or None)


def parse_blueprint(text: str | bytes, *, source: str) -> Blueprint:
    """Decode and validate blueprint JSON text; `source` names it in errors (usually the file path)."""
    doc = _decode(text, source)
    validate_document(doc, source=source)
    return _blueprint_from_doc(doc, source)


def load_blueprint(path_or_bytes: str | os.PathLike[str] | bytes) -> Blueprint:
    """Read a blueprint file (or raw bytes). The size cap is checked before the file is read."""
    if isinstance(path_or_bytes, bytes):
        return parse_blueprint(path_or_bytes, source="<bytes>")
    path = Path(path_or_bytes)
    source = str(path)
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_BLUEPRINT_BYTES:
                raise InputError(
                    source,
                    f"is {size} bytes, over the {MAX_BLUEPRINT_BYTES}-byte cap for blueprints",
                    "a blueprint holds per-submodule summaries; it should be far smaller",
                )
            data = fh.read(MAX_BLUEPRINT_BYTES + 1)  # a file that grows while we read is still capped
    except FileNotFoundError:
        raise InputError(source, "no such file", "check the path") from None
    except IsADirectoryError:
        raise InputError(source, "is a directory, not a blueprint file", "name the blueprint.json inside") from None
    except PermissionError:
        raise InputError(source, "cannot be read (permission denied)", "check the file's permissions") from None
    return parse_blueprint(data, source=source)


# --------------------------------------------------------------------------------------------- writing


def _plain(value: Any) -> Any:
    """A tuple as a JSON array (a list, as jsonschema expects), a dict as a copy, anything else as it is."""
    if isinstance(value, tuple):
        return list(value)
    return dict(value) if isinstance(value, dict) else value


def _document(model: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` as a JSON object of `model`: its fields in the schema's order, those that are None left out."""
    stray = [key for key, value in values.items() if value is not None and key not in model.model_fields]
    if stray:  # a value's field that the document model lacks: the two were changed apart
        raise ValueError(f"{model.__name__} has no field {stray[0]!r}")
    return {key: _plain(values[key]) for key in model.model_fields if values.get(key) is not None}


def _refuse_schema_1_0_fields(values: Mapping[str, Any], model: type[BaseModel], where: str) -> None:
    """A paper-shape value may not carry what only schema 1.0 holds; `where` prefixes the field's name."""
    for key, value in values.items():
        if value is not None and key not in model.model_fields:
            raise InputError(
                f"{where}{key}",
                "is a schema 1.0 field but the blueprint is in the paper's shape",
                "upgrade it first with as_schema_1_0()",
            )


def _merge_extra(d: dict[str, Any], extra: Mapping[str, Any], model: type[BaseModel]) -> None:
    """Append a paper-shape file's unknown fields; they may not shadow the fields the paper names."""
    clash = [k for k in extra if k in model.model_fields]
    if clash:
        raise ValueError(f"extra fields {clash} shadow the paper's own fields")
    d.update(extra)


def _layer_to_dict(entry: LayerEntry, *, paper: bool) -> dict[str, Any]:
    """A layer's JSON object in the blueprint's shape; a paper-shape one with its extra fields after the paper's."""
    values = _fields_of(entry)
    extra = values.pop("extra")
    if paper:
        _refuse_schema_1_0_fields(values, documents.LayerPaper, f"blueprint: layers[{entry.id}].")
        d = _document(documents.LayerPaper, values)
        _merge_extra(d, extra or {}, documents.LayerPaper)
        return d
    if extra:
        raise InputError(
            f"layers[{entry.id}].{next(iter(extra))}",
            "is not a schema 1.0 field",
            "only paper-shape blueprints carry extra fields",
        )
    ci = values.pop("ci")
    if ci is not None:
        values.update(ci_low=ci.low, ci_high=ci.high, ci_level=ci.level)
    if entry.fit is not None:
        values["fit"] = _document(documents.Fit, _fields_of(entry.fit))
    return _document(documents.Layer_1_0, values)


def blueprint_to_dict(bp: Blueprint, *, validate: bool = True) -> dict[str, Any]:
    """Plain JSON data in the schema's key order; validated against the schema unless validate=False."""
    paper = bp.schema_version is None
    values = _fields_of(bp)
    extra = values.pop("extra")
    values["layers"] = [_layer_to_dict(entry, paper=paper) for entry in bp.layers]
    if paper:
        _refuse_schema_1_0_fields(values, documents.BlueprintPaper, "blueprint: ")
        d = _document(documents.BlueprintPaper, values)
        _merge_extra(d, extra or {}, documents.BlueprintPaper)
    else:
        if extra:
            raise InputError(
                f"blueprint: {next(iter(extra))}",
                "is not a schema 1.0 field",
                "only paper-shape blueprints carry extra fields",
            )
        if bp.resource_model is not None:
            values["resource_model"] = _document(documents.ResourceModel, _fields_of(bp.resource_model))
        if bp.privacy is not None:
            values["privacy"] = _document(documents.Privacy, _fields_of(bp.privacy))
        if bp.cross_influence is not None:
            # Through from_dict once: plain ints and floats even where the map was built from numpy scalars.
            plain = CrossInfluence.from_dict(bp.cross_influence.to_dict()).to_dict()
            values["cross_influence"] = _document(documents.CrossInfluence, plain)
        d = _document(documents.Blueprint_1_0, values)
    if validate:
        validate_document(d, source="blueprint")
    return d


def dumps_blueprint(bp: Blueprint) -> str:
    """Validated JSON text: the schema's key order, indent 2, trailing newline, no NaN/Infinity."""
    return json.dumps(blueprint_to_dict(bp), indent=2, allow_nan=False) + "\n"
