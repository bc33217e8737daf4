"""Blueprint files: the paper's Appendix A shape loads and round-trips; schema 1.0 round-trips; every bad file
raises InputError naming the JSON path of the offending field."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.blueprints import (
    MAX_BLUEPRINT_BYTES,
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
from orchestrator.errors import InputError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PAPER_FILE = ASSETS / "paper_appendix_a.json"


def paper_doc() -> dict:
    return json.loads(PAPER_FILE.read_text())


def full_doc() -> dict:
    """A schema 1.0 document using every field."""
    return {
        "schema_version": "1.0",
        "model_id": "tiny-llama",
        "blueprint_version": 3,
        "training_checkpoint": 0.5,
        "created_at": "2025-01-31T12:00:00Z",
        "run_id": "run-42",
        "step": 1200,
        "tokens_seen": 1_000_000,
        "layers": [
            {
                "id": "attn.0",
                "gradient_norm": 0.05,
                "statistic": "median",
                "ci_low": 0.04,
                "ci_high": 0.06,
                "ci_level": 0.95,
                "n_batches": 8,
                "n_params": 4096,
                "prefixes": ["model.layers.0.self_attn."],
                "alpha": 0.7,
                "gamma": 0.5882352941176471,
                "gamma_fit": 0.4,
                "k_star": 0.2,
                "k_star_interior": True,
                "fit": {"method": "binned-mle", "ks_distance": 0.02, "x_min": 0.001, "n_tail": 900},
                "domain_tags": {"general": 1.0, "code": 0.8},
            },
            {
                "id": "ffn.0",
                "gradient_norm": 0.03,
                "fit": {"method": "rank-lstsq", "error": "too few magnitudes"},
            },
            {
                "id": "head",
                "gradient_norm": 0.0,
                "fit": {"method": "rank-lstsq", "r2": 0.97, "n_tail": 500, "rank_range": [0.0001, 0.5]},
            },
        ],
        "resource_model": {
            "cost_fixed": 2.0,
            "cost_per_param": 14.0,
            "breakdown": {"weights": 2.0, "grads": 2.0},
            "unit": "bytes_per_param_per_rank",
            "optimizer": "adamw",
            "precision": "bf16",
            "zero_stage": 1,
            "dp_world_size": 2,
            "n_params": 10_000,
        },
        "privacy": {"mechanism": "gaussian", "clip": 1.0, "noise_multiplier": 0.1, "sigma": 0.1, "note": "n"},
        "provenance": {"config_sha256": "abc123", "code_version": "0.1.0", "seed": 7, "dirty": False},
    }


# ----------------------------------------------------------------------------------------------- good files


def test_schema_is_draft_2020_12_with_id_and_title():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"]


def test_paper_appendix_a_file_loads_with_its_values():
    bp = load_blueprint(PAPER_FILE)
    assert bp.schema_version is None and bp.shape == "paper-A.1"
    assert bp.model_id == "foundation-7b" and bp.training_checkpoint == 0.8
    assert [e.id for e in bp.layers] == ["attn.0", "ffn.0", "attn.1"]
    assert bp.norms() == {"attn.0": 0.052, "ffn.0": 0.033, "attn.1": 0.045}
    first = bp.layer("attn.0")
    assert (first.alpha, first.gamma, first.k_star) == (1.47, 0.60, 0.15)
    assert first.domain_tags == {"general": 1.0, "bio": 0.79, "legal": 0.63}
    assert first.ci is None and first.prefixes is None and first.extra is None


def test_paper_file_round_trips_and_keeps_its_shape():
    bp = load_blueprint(PAPER_FILE)
    text = dumps_blueprint(bp)
    assert parse_blueprint(text, source="again") == bp
    # Same document, no invented fields (no schema_version, no statistic, ...), same key order.
    assert json.loads(text) == paper_doc()
    assert list(json.loads(text)) == ["model_id", "training_checkpoint", "layers"]
    assert list(json.loads(text)["layers"][0]) == ["id", "gradient_norm", "alpha", "gamma", "k_star", "domain_tags"]
    assert text.endswith("}\n") and '\n  "model_id"' in text  # indent 2, trailing newline


def test_paper_file_with_comment_line_is_not_json():
    text = PAPER_FILE.read_text().replace("      }\n    }\n  ]", "      }\n    }\n    // Additional ...\n  ]")
    with pytest.raises(InputError, match="not valid JSON"):
        parse_blueprint(text, source="commented.json")


def test_paper_shape_extra_fields_are_kept_verbatim():
    doc = paper_doc()
    doc["license"] = "cc-by-4.0"
    doc["layers"][0]["heads"] = [0, 3, 7]
    bp = parse_blueprint(json.dumps(doc), source="x.json")
    assert bp.extra == {"license": "cc-by-4.0"}
    assert bp.layers[0].extra == {"heads": [0, 3, 7]}
    assert json.loads(dumps_blueprint(bp)) == doc
    with pytest.raises(InputError) as err:
        as_schema_1_0(bp)
    assert err.value.field.endswith("license")


def test_paper_shape_extras_named_like_schema_1_0_fields_are_kept_unread():
    """Without schema_version, created_at or ci_low are fields the paper does not name: kept as they are, unchecked."""
    doc = paper_doc()
    doc["created_at"] = None
    doc["layers"][0]["ci_low"] = "x"
    bp = parse_blueprint(json.dumps(doc), source="x.json")
    assert bp.extra == {"created_at": None} and bp.layers[0].extra == {"ci_low": "x"} and bp.layers[0].ci is None
    assert json.loads(dumps_blueprint(bp)) == doc


def test_as_schema_1_0_upgrades_a_plain_paper_file():
    bp = as_schema_1_0(load_blueprint(PAPER_FILE))
    assert bp.schema_version == SCHEMA_VERSION
    doc = json.loads(dumps_blueprint(bp))
    assert doc["schema_version"] == "1.2" and doc["layers"][2]["k_star"] == 0.13


def test_full_schema_1_0_document_round_trips():
    doc = full_doc()
    bp = parse_blueprint(json.dumps(doc), source="full.json")
    assert bp.blueprint_version == 3 and bp.step == 1200 and bp.provenance["seed"] == 7
    assert bp.layers[0].ci == ConfidenceInterval(low=0.04, high=0.06, level=0.95)
    assert bp.layers[0].prefixes == ("model.layers.0.self_attn.",)
    assert bp.layers[1].fit == FitInfo(method="rank-lstsq", error="too few magnitudes")
    assert bp.layers[2].fit.rank_range == (0.0001, 0.5)
    assert bp.resource_model.dp_world_size == 2 and bp.privacy.sigma == 0.1
    assert parse_blueprint(dumps_blueprint(bp), source="again") == bp
    assert json.loads(dumps_blueprint(bp)) == doc  # nothing lost, nothing invented


def test_load_from_bytes_and_str_path(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps(full_doc()))
    assert load_blueprint(str(path)) == load_blueprint(path) == load_blueprint(path.read_bytes())


def test_write_validates_a_programmatic_blueprint():
    good = parse_blueprint(json.dumps(full_doc()), source="x")
    bad_entry = replace(good.layers[0], gradient_norm=float("nan"))
    with pytest.raises(InputError) as err:
        dumps_blueprint(replace(good, layers=(bad_entry, *good.layers[1:])))
    assert "layers[0].gradient_norm" in err.value.field
    with pytest.raises(InputError, match="training_checkpoint"):
        dumps_blueprint(replace(good, training_checkpoint=1.5))
    with pytest.raises(InputError, match="ci_low"):
        dumps_blueprint(
            replace(good, layers=(replace(good.layers[0], ci=ConfidenceInterval(low=2, high=1, level=0.9)),))
        )


def test_paper_shape_value_cannot_carry_schema_1_0_fields():
    bp = load_blueprint(PAPER_FILE)
    with pytest.raises(InputError, match="blueprint_version"):
        blueprint_to_dict(replace(bp, blueprint_version=2))
    with pytest.raises(InputError, match="n_batches"):
        blueprint_to_dict(replace(bp, layers=(replace(bp.layers[0], n_batches=3),)))


# ----------------------------------------------------------------------------------------------- bad files


def _with(mutate) -> str:
    doc = copy.deepcopy(paper_doc())
    mutate(doc)
    return json.dumps(doc)


def _full_with(mutate) -> str:
    doc = copy.deepcopy(full_doc())
    mutate(doc)
    return json.dumps(doc)


PAPER_TEXT = PAPER_FILE.read_text()

# (case id, file text, the field the error must name, a phrase of the problem)
BAD_FILES: list[tuple[str, str, str, str]] = [
    ("not-json", '{"model_id": "m", ', "bad.json", "not valid JSON"),
    ("empty-file", "", "bad.json", "not valid JSON"),
    ("top-level-array", "[1, 2]", "bad.json", "must be a JSON object"),
    ("missing-model-id", _with(lambda d: d.pop("model_id")), "bad.json: model_id", "required"),
    ("missing-checkpoint", _with(lambda d: d.pop("training_checkpoint")), "bad.json: training_checkpoint", "required"),
    ("missing-layers", _with(lambda d: d.pop("layers")), "bad.json: layers", "required"),
    ("missing-norm", _with(lambda d: d["layers"][1].pop("gradient_norm")), "layers[1].gradient_norm", "required"),
    ("missing-id", _with(lambda d: d["layers"][2].pop("id")), "layers[2].id", "required"),
    (
        "norm-is-string",
        _with(lambda d: d["layers"][0].update(gradient_norm="0.05")),
        "layers[0].gradient_norm",
        "number",
    ),
    ("norm-is-bool", _with(lambda d: d["layers"][0].update(gradient_norm=True)), "layers[0].gradient_norm", "number"),
    ("layers-is-object", _with(lambda d: d.update(layers={"id": "a"})), "bad.json: layers", "array"),
    ("model-id-number", _with(lambda d: d.update(model_id=7)), "bad.json: model_id", "string"),
    ("empty-layers", _with(lambda d: d.update(layers=[])), "bad.json: layers", "at least 1"),
    ("nan", PAPER_TEXT.replace('"gradient_norm": 0.033', '"gradient_norm": NaN'), "layers[1].gradient_norm", "NaN"),
    ("infinity", PAPER_TEXT.replace('"alpha": 1.50', '"alpha": Infinity'), "layers[2].alpha", "Infinity"),
    ("-infinity", PAPER_TEXT.replace('"gamma": 0.53', '"gamma": -Infinity'), "layers[1].gamma", "Infinity"),
    (
        "overflow",
        PAPER_TEXT.replace('"gradient_norm": 0.052', '"gradient_norm": 1e999'),
        "layers[0].gradient_norm",
        "finite",
    ),
    (
        "huge-int",
        PAPER_TEXT.replace('"gradient_norm": 0.052', '"gradient_norm": 1' + "0" * 40),
        "layers[0].gradient_norm",
        "<=",
    ),
    ("negative-norm", _with(lambda d: d["layers"][2].update(gradient_norm=-1.0)), "layers[2].gradient_norm", ">= 0"),
    ("k-star-1.5", _with(lambda d: d["layers"][0].update(k_star=1.5)), "layers[0].k_star", "<= 1"),
    (
        "checkpoint-negative",
        _with(lambda d: d.update(training_checkpoint=-0.1)),
        "bad.json: training_checkpoint",
        ">= 0",
    ),
    ("checkpoint-above-1", _with(lambda d: d.update(training_checkpoint=1.2)), "training_checkpoint", "<= 1"),
    (
        "domain-tag-negative",
        _with(lambda d: d["layers"][1]["domain_tags"].update(bio=-0.5)),
        "layers[1].domain_tags.bio",
        ">= 0",
    ),
    (
        "domain-tag-string",
        _with(lambda d: d["layers"][1]["domain_tags"].update(bio="x")),
        "layers[1].domain_tags.bio",
        "number",
    ),
    ("id-with-slash", _with(lambda d: d["layers"][0].update(id="../../etc/passwd")), "layers[0].id", "must match"),
    ("id-empty", _with(lambda d: d["layers"][0].update(id="")), "layers[0].id", "must match"),
    ("duplicate-ids", _with(lambda d: d["layers"][2].update(id="attn.0")), "layers[2].id", "duplicate id"),
    ("duplicate-key", PAPER_TEXT.replace('"alpha": 1.12,', '"alpha": 1.12, "alpha": 9,'), "layers[1].alpha", "twice"),
    (
        "unknown-schema-version",
        _with(lambda d: d.update(schema_version="2.0")),
        "bad.json: schema_version",
        "unknown schema version",
    ),
    (
        "schema-version-number",
        _with(lambda d: d.update(schema_version=1.0)),
        "bad.json: schema_version",
        "unknown schema version",
    ),
    (
        "typo-in-1.0-layer",
        _full_with(lambda d: d["layers"][1].update(gradient_nrom=1)),
        "layers[1].gradient_nrom",
        "not a schema 1.0 field",
    ),
    ("typo-in-1.0-top", _full_with(lambda d: d.update(run_idd="x")), "bad.json: run_idd", "not a schema 1.0 field"),
    ("statistic-mode", _full_with(lambda d: d["layers"][0].update(statistic="mode")), "layers[0].statistic", "one of"),
    ("ci-crossed", _full_with(lambda d: d["layers"][0].update(ci_low=0.07)), "layers[0].ci_low", "<= ci_high"),
    ("ci-partial", _full_with(lambda d: d["layers"][0].pop("ci_high")), "layers[0].ci_low", "ci_high"),
    ("ci-level-1", _full_with(lambda d: d["layers"][0].update(ci_level=1.0)), "layers[0].ci_level", "< 1"),
    ("n-batches-0", _full_with(lambda d: d["layers"][0].update(n_batches=0)), "layers[0].n_batches", ">= 1"),
    ("n-params-float", _full_with(lambda d: d["layers"][0].update(n_params=1.5)), "layers[0].n_params", "integer"),
    (
        "prefixes-repeat",
        _full_with(lambda d: d["layers"][0].update(prefixes=["a.", "a."])),
        "layers[0].prefixes",
        "repeat",
    ),
    ("version-0", _full_with(lambda d: d.update(blueprint_version=0)), "bad.json: blueprint_version", ">= 1"),
    (
        "created-at-garbage",
        _full_with(lambda d: d.update(created_at="yesterday")),
        "bad.json: created_at",
        "must match",
    ),
    (
        "created-at-month-13",
        _full_with(lambda d: d.update(created_at="2025-13-01T00:00:00Z")),
        "created_at",
        "not a valid",
    ),
    (
        "fit-method",
        _full_with(lambda d: d["layers"][0]["fit"].update(method="eyeball")),
        "layers[0].fit.method",
        "one of",
    ),
    ("fit-method-null", _full_with(lambda d: d["layers"][1]["fit"].update(method=None)), "fit.method", "a string"),
    (
        "missing-and-unknown",
        _full_with(lambda d: d["layers"][1].update(gradient_nrom=d["layers"][1].pop("gradient_norm"))),
        "layers[1].gradient_norm",
        "required",
    ),
    (
        "privacy-mechanism",
        _full_with(lambda d: d["privacy"].update(mechanism="laplace")),
        "privacy.mechanism",
        "one of",
    ),
    (
        "zero-stage-4",
        _full_with(lambda d: d["resource_model"].update(zero_stage=4)),
        "resource_model.zero_stage",
        "<= 3",
    ),
    ("provenance-nested", _full_with(lambda d: d["provenance"].update(x={"a": 1})), "provenance.x", "string, a number"),
    ("interior-without-k", _full_with(lambda d: d["layers"][0].pop("k_star")), "layers[0].k_star_interior", "k_star"),
    ("deep-nesting", "[" * 100_000, "bad.json", "nested"),
    (
        "nesting-in-extra",
        _with(lambda d: d.update(x=json.loads("[" * 100 + "]" * 100))),
        "bad.json: x[0]",
        "nested deeper",
    ),
    ("long-int-literal", PAPER_TEXT.replace("0.052", "1" * 5000), "layers[0].gradient_norm", "finite number"),
]


@pytest.mark.parametrize(("text", "field", "problem"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_file_raises_input_error_naming_the_field(text, field, problem):
    with pytest.raises(InputError) as err:
        parse_blueprint(text, source="bad.json")
    assert field in err.value.field, err.value.one_line()
    assert err.value.field.startswith("bad.json"), err.value.one_line()
    assert problem in err.value.problem, err.value.one_line()
    assert "\n" not in err.value.one_line()


def test_unknown_schema_version_names_the_known_ones():
    with pytest.raises(InputError) as err:
        parse_blueprint(_with(lambda d: d.update(schema_version="9")), source="bad.json")
    assert "1.0" in err.value.fix and "Appendix A" in err.value.fix


def test_not_utf8_bytes():
    with pytest.raises(InputError, match="UTF-8"):
        load_blueprint(b'{"model_id": "\xff"}')


def test_file_over_the_cap_is_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.json"
    with big.open("wb") as fh:  # sparse: instant, no 17 MiB written
        fh.truncate(17 * 1024 * 1024)
    read_sizes: list[int] = []
    real_open = Path.open

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def fileno(self) -> int:
            return self.fh.fileno()

        def read(self, size: int = -1) -> bytes:
            read_sizes.append(size)
            return self.fh.read(size)

    monkeypatch.setattr(Path, "open", lambda self, *a, **k: Spy(real_open(self, *a, **k)))
    with pytest.raises(InputError) as err:
        load_blueprint(big)
    assert err.value.field == str(big) and "cap" in err.value.problem
    assert read_sizes == []  # refused on the size alone


def test_file_of_17_mib_spaces_and_big_bytes_are_refused(tmp_path):
    spaces = tmp_path / "spaces.json"
    spaces.write_bytes(b" " * (17 * 1024 * 1024))
    with pytest.raises(InputError, match="cap"):
        load_blueprint(spaces)
    with pytest.raises(InputError, match="cap"):
        load_blueprint(b" " * (MAX_BLUEPRINT_BYTES + 1))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_blueprint(tmp_path / "nope.json")
    with pytest.raises(InputError, match="directory"):
        load_blueprint(tmp_path)


def test_validate_document_accepts_good_and_rejects_non_objects():
    validate_document(paper_doc(), source="p")
    validate_document(full_doc(), source="f")
    with pytest.raises(InputError, match="JSON object"):
        validate_document("text", source="s")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- property

_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}\Z")
_mag = st.floats(min_value=0, max_value=1e6, allow_nan=False)
_frac = st.floats(min_value=0, max_value=1, allow_nan=False)
_real = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def _layers(draw) -> LayerEntry:
    lid = draw(_ids)
    lo, hi = sorted(draw(st.tuples(_mag, _mag)))
    has_ci = draw(st.booleans())
    return LayerEntry(
        id=lid,
        gradient_norm=draw(_mag),
        alpha=draw(st.none() | _real),
        gamma=draw(st.none() | _real),
        k_star=draw(st.none() | _frac),
        domain_tags=draw(st.none() | st.dictionaries(st.text(min_size=1, max_size=5), _mag, max_size=3)),
        statistic=draw(st.none() | st.sampled_from(["mean", "median"])),
        ci=ConfidenceInterval(low=lo, high=hi, level=0.9) if has_ci else None,
        n_batches=draw(st.none() | st.integers(1, 10**6)),
        n_params=draw(st.none() | st.integers(0, 10**12)),
        prefixes=draw(st.none() | st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=3).map(tuple)),
        gamma_fit=draw(st.none() | _real),
    )


@settings(max_examples=50)
@given(
    layers=st.lists(_layers(), min_size=1, max_size=5, unique_by=lambda e: e.id),
    checkpoint=_frac,
    model_id=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),  # no control chars
    step=st.none() | st.integers(0, 10**12),
)
def test_schema_1_0_round_trip_property(layers, checkpoint, model_id, step):
    bp = Blueprint(
        model_id=model_id,
        training_checkpoint=checkpoint,
        layers=tuple(layers),
        step=step,
        resource_model=ResourceModelRecord(cost_fixed=2.0, cost_per_param=12.0),
        privacy=PrivacyRecord(mechanism="gaussian", clip=1.0, sigma=0.5, note="n"),
    )
    assert parse_blueprint(dumps_blueprint(bp), source="prop") == bp
