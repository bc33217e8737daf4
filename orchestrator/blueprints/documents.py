"""The JSON objects of a blueprint file as pydantic models: the one source of the published JSON Schema.

`schema_gen` turns these models into `schema/blueprint.schema.json`; `model` validates files against that file and
reads them into its frozen dataclasses through these models, and writes fields in these models' order. A field that
may be absent is `X | None = None`: None means "left out", never JSON null. Named aliases become the schema's
`$defs`; class docstrings and field docstrings become its descriptions.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

MAX_ITEMS = 100_000  # layers per file, prefixes per layer
_MAX_INT64 = 2**63 - 1
_BOUND = 1e30  # every number is bounded, so a consumer's double arithmetic cannot overflow on a file's value
_MAGNITUDE = "A non-negative, bounded number (gradient norms are magnitudes)."

Fraction = TypeAliasType("fraction", Annotated[float, Field(ge=0, le=1)])
Magnitude = TypeAliasType("magnitude", Annotated[float, Field(ge=0, le=_BOUND, description=_MAGNITUDE)])
Real = TypeAliasType("real", Annotated[float, Field(ge=-_BOUND, le=_BOUND)])
Count = TypeAliasType("count", Annotated[int, Field(ge=0, le=_MAX_INT64)])
ShortText = TypeAliasType("short_text", Annotated[str, Field(min_length=1, max_length=256)])
LayerId = TypeAliasType(
    "layer_id",
    Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
            description="Submodule or layer id (e.g. attn.0, ffn.12); safe as a file name: no slashes.",
        ),
    ],
)
ModelId = TypeAliasType(
    "model_id",
    Annotated[
        str,
        Field(
            min_length=1,
            max_length=256,
            pattern=r"^[^\u0000-\u001f\u007f]+$",
            description="Any name (it becomes a folder only in a store, which restricts it further); "
            "no control characters.",
        ),
    ],
)
Key = Annotated[str, Field(min_length=1, max_length=128)]
Text = Annotated[str, Field(max_length=4000)]
RankRange = Annotated[tuple[Annotated[float, Field(gt=0, le=1)], ...], Field(min_length=2, max_length=2)]
Prefixes = Annotated[
    tuple[Annotated[str, Field(min_length=1, max_length=1024)], ...],
    Field(max_length=MAX_ITEMS, json_schema_extra={"uniqueItems": True}),
]
Timestamp = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
        json_schema_extra={"format": "date-time"},
    ),
]
WholeNumber = Annotated[int, Field(strict=True, ge=-(10**30), le=10**30)]  # `real`'s range, kept an integer
DomainTags = TypeAliasType(
    "domain_tags",
    Annotated[
        dict[Key, Magnitude],
        Field(description="Weight per domain relative to the general set (App. A.1 (vi)); `general` is 1.0."),
    ],
)
Provenance = TypeAliasType(
    "provenance",
    Annotated[
        dict[Key, Text | WholeNumber | Real | bool],  # a seed or a step stays an integer; `real` takes it too
        Field(max_length=1000, description="Where the file came from: config hash, code version, data set, ..."),
    ],
)


# Patterns run on Python's `re`, as in jsonschema's validation, so the two never disagree on a string.
_CONFIG = ConfigDict(use_attribute_docstrings=True, regex_engine="python-re")


class _Paper(BaseModel):
    """A paper-shape object: fields the paper does not name are kept, not refused."""

    model_config = ConfigDict(_CONFIG, extra="allow")


class _Strict(BaseModel):
    """A schema 1.0 object: an unknown field is refused (a typo must not pass silently)."""

    model_config = ConfigDict(_CONFIG, extra="forbid")


class LayerPaper(_Paper):
    """A layer entry in the paper's Appendix A.1 shape."""

    id: LayerId
    gradient_norm: Magnitude
    alpha: Real | None = None
    gamma: Real | None = None
    k_star: Fraction | None = None
    domain_tags: DomainTags | None = None


class BlueprintPaper(_Paper):
    """The paper's Appendix A.1 shape."""

    model_id: ModelId
    training_checkpoint: Fraction
    layers: Annotated[tuple[LayerPaper, ...], Field(min_length=1, max_length=MAX_ITEMS)]


class LikelihoodRatio(_Strict):
    """A Clauset–Shalizi–Newman likelihood-ratio test of the power law against an alternative: R > 0 favours the
    power law, p is the significance of R's sign (docs/maths.md)."""

    ratio: Real
    p: Fraction


class Fit(_Strict):
    """How `alpha` was fitted and how well (docs/maths.md: a stated method and its quality); `error` says why there
    is no fit. The `tail_*` fields and `likelihood_ratios` are the CSN fit of the tail (x ≥ tail_x_min)."""

    method: Literal["binned-mle", "rank-lstsq"]
    r2: Annotated[float, Field(ge=-_BOUND, le=1)] | None = None
    ks_distance: Fraction | None = None
    x_min: Magnitude | None = None
    n_tail: Count | None = None
    rank_range: RankRange | None = None
    """The rank fractions [lo, hi] the rank-lstsq fit used."""
    error: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    tail_alpha: Real | None = None
    """The CSN exponent of the tail's density p(x) ∝ x^(−tail_alpha); the rank-size α is 1/(tail_alpha − 1)."""
    tail_x_min: Magnitude | None = None
    tail_n: Count | None = None
    """Values the tail fit saw (quantiles of the magnitude histogram)."""
    tail_n_tail: Count | None = None
    tail_share: Fraction | None = None
    """The share of the submodule's entries in the fitted tail (tail_n_tail / tail_n)."""
    tail_ks_distance: Fraction | None = None
    likelihood_ratios: dict[Key, LikelihoodRatio] | None = None
    """Per alternative (exponential, lognormal): the power law's LR test against it."""


class Layer_1_0(_Strict):
    """A layer entry of schema 1.0: the paper's fields plus fidelity, fit quality and the parameters the id covers."""

    model_config = ConfigDict(
        json_schema_extra={
            "dependentRequired": {
                "ci_low": ["ci_high", "ci_level"],
                "ci_high": ["ci_low", "ci_level"],
                "ci_level": ["ci_low", "ci_high"],
                "k_star_interior": ["k_star"],
            }
        }
    )

    id: LayerId
    gradient_norm: Magnitude
    statistic: Literal["mean", "median"] | None = None
    ci_low: Magnitude | None = None
    ci_high: Magnitude | None = None
    ci_level: Annotated[float, Field(gt=0, lt=1)] | None = None
    n_batches: Annotated[int, Field(ge=1, le=_MAX_INT64)] | None = None
    n_params: Count | None = None
    prefixes: Prefixes | None = None
    """Parameter-name prefixes (module paths ending with '.') that this id covers."""
    alpha: Real | None = None
    gamma: Real | None = None
    gamma_fit: Real | None = None
    k_star: Fraction | None = None
    k_star_interior: bool | None = None
    recommendation: Fraction | None = None
    """The update fraction the blueprint recommends for this id (k* from gamma_fit), or null when the fit does not
    support one; `recommendation_reason` says which (docs/blueprints.md)."""
    recommendation_reason: Text | None = None
    fit: Fit | None = None
    domain_tags: DomainTags | None = None


class ResourceModel(_Strict):
    """The resource model k* was derived from (Prop. B.1: cost_fixed + cost_per_param·k)."""

    cost_fixed: Magnitude
    cost_per_param: Magnitude
    unit: ShortText | None = None
    breakdown: dict[Key, Real] | None = None
    optimizer: ShortText | None = None
    precision: ShortText | None = None
    zero_stage: Annotated[int, Field(ge=0, le=3)] | None = None
    n_params: Count | None = None
    dp_world_size: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    notes: Text | None = None


class Privacy(_Strict):
    """Noise added before release (§5 Privacy) and, for a differentially private release (schema 1.1), its accounting
    (docs/blueprints.md "Privacy")."""

    mechanism: Literal["gaussian"]
    clip: Annotated[float, Field(gt=0, le=_BOUND)]
    noise_multiplier: Annotated[float, Field(ge=0, le=_BOUND)] | None = None
    sigma: Magnitude
    epsilon: Annotated[float, Field(gt=0, le=_BOUND)] | None = None
    delta: Annotated[float, Field(ge=0, lt=1)] | None = None
    note: Text
    release: Literal["noise", "dp"] | None = None
    """Schema 1.1: "noise" (noised norms, no stated guarantee) or "dp" ((epsilon, delta)-DP under `adjacency`)."""
    accountant: ShortText | None = None
    """Schema 1.1: the library, its version and the method that computed epsilon, e.g. "dp-accounting 0.6.0 rdp"."""
    adjacency: Text | None = None
    """Schema 1.1: what two neighbouring inputs differ in (the unit the guarantee protects)."""
    composed_releases: Count | None = None
    """Schema 1.1: Gaussian queries of this noise multiplier composed into epsilon (this and earlier versions)."""
    withheld: dict[Key, Text] | None = None
    """Schema 1.1: fields left out of every layer entry, each with the reason."""


PRIVACY_1_1_FIELDS = ("release", "accountant", "adjacency", "composed_releases", "withheld")
"""The privacy record's fields that a schema 1.0 file may not carry."""

BlockName = Annotated[str, Field(min_length=1, max_length=1024)]


class CrossInfluence(_Strict):
    """Schema 1.2: the cross-influence map T (submodule groups × data blocks) that `cpr select` measured under the
    base model, as its rank-r SVD summary (docs/blueprints.md "Cross-influence"). T_ij is the mean per-example
    gradient norm of group i over the sampled windows of block j; T ≈ U·diag(σ_1..σ_r)·Vᵀ. Row counts, row widths,
    the descending order of the singular values and the rank are checked beside the schema."""

    statistic: Annotated[str, Field(min_length=1, max_length=1000)]
    """What T_ij is, in words."""
    block_kind: Literal["folder", "cluster"]
    """What a data block is: a folder of the corpus, or a cluster of its windows."""
    groups: Annotated[
        tuple[Key, ...], Field(min_length=1, max_length=MAX_ITEMS, json_schema_extra={"uniqueItems": True})
    ]
    """The submodule groups: T's rows."""
    blocks: Annotated[
        tuple[BlockName, ...], Field(min_length=1, max_length=MAX_ITEMS, json_schema_extra={"uniqueItems": True})
    ]
    """The data blocks: T's columns."""
    examples: Annotated[tuple[Annotated[int, Field(ge=1, le=_MAX_INT64)], ...], Field(max_length=MAX_ITEMS)]
    """Sampled windows per block (T's column j is a mean over that many); one per block."""
    rank: Annotated[int, Field(ge=1, le=MAX_ITEMS)]
    """r: the singular vectors kept; at most the number of singular values."""
    singular_values: Annotated[tuple[Magnitude, ...], Field(min_length=1, max_length=MAX_ITEMS)]
    """All of T's singular values, descending."""
    energy: Fraction
    """The share of Σσ² the top r singular values hold."""
    u: Annotated[tuple[tuple[Real, ...], ...], Field(max_length=MAX_ITEMS)]
    """The top r left singular vectors: one row of r numbers per group."""
    v: Annotated[tuple[tuple[Real, ...], ...], Field(max_length=MAX_ITEMS)]
    """The top r right singular vectors: one row of r numbers per block."""


class Blueprint_1_0(_Strict):
    """Schema 1.x: the paper's shape plus versioning, fidelity, fit quality, resource model, privacy and provenance;
    1.1 adds the privacy record's differential-privacy accounting, 1.2 the cross-influence map."""

    schema_version: Literal["1.0", "1.1", "1.2"]
    model_id: ModelId
    blueprint_version: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    training_checkpoint: Fraction
    created_at: Timestamp | None = None
    """RFC 3339 date-time."""
    run_id: ShortText | None = None
    step: Count | None = None
    tokens_seen: Count | None = None
    layers: Annotated[tuple[Layer_1_0, ...], Field(min_length=1, max_length=MAX_ITEMS)]
    resource_model: ResourceModel | None = None
    privacy: Privacy | None = None
    provenance: Provenance | None = None
    cross_influence: CrossInfluence | None = None
    """Schema 1.2: which data blocks move which submodule groups, from `cpr select`."""


BLUEPRINT_1_2_FIELDS = ("cross_influence",)
"""The top-level fields that a schema 1.0 or 1.1 file may not carry."""
