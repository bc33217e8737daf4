"""Comparing blueprints: diffs between two, the App. A.2 aggregation table, and the §5 drift check.

Ranks are by gradient_norm, descending (rank 1 carries the most gradient). Rank agreement is Spearman's ρ
(scipy.stats.spearmanr) over the ids both sides have; with fewer than 3 common ids, or a side whose norms are
all equal, ρ is undefined and reported as None.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import numpy as np
from scipy import stats

from orchestrator.blueprints.grouping import coarse_id
from orchestrator.blueprints.model import Blueprint, LayerEntry
from orchestrator.core.numbers import finite_or_none, is_finite_number
from orchestrator.errors import InputError

MIN_RANK_IDS = 3


def _ranks(norms: Sequence[float]) -> list[int]:
    """Rank 1 = largest norm; ties share the best rank."""
    return [int(r) for r in stats.rankdata([-v for v in norms], method="min")]


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ, or None when it is undefined (too few ids, or one side constant)."""
    if len(x) < MIN_RANK_IDS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    rho = float(stats.spearmanr(x, y).statistic)
    return finite_or_none(rho)


# --------------------------------------------------------------------------------------------- diff


def _ratio(num: float, den: float) -> float | None:
    """num / den, or None when it is undefined or overflows (den 0 or tiny)."""
    if den <= 0:
        return None
    r = num / den
    return finite_or_none(r)


@dataclass(frozen=True, kw_only=True)
class LayerChange:
    """One id present in both blueprints. rank_change = rank_b − rank_a (> 0: relatively less gradient in b)."""

    id: str
    rank_a: int
    rank_b: int
    rank_change: int
    norm_a: float
    norm_b: float
    norm_ratio: float | None  # norm_b / norm_a; None when norm_a is 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class BlueprintDiff:
    """How the gradient ranking moved between two blueprints (e.g. two checkpoints, or two labs)."""

    model_a: str
    model_b: str
    checkpoint_a: float
    checkpoint_b: float
    common: tuple[LayerChange, ...]  # in a's order
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    spearman_rho: float | None

    @property
    def n_common(self) -> int:
        return len(self.common)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": {"model_id": self.model_a, "training_checkpoint": self.checkpoint_a},
            "b": {"model_id": self.model_b, "training_checkpoint": self.checkpoint_b},
            "n_common": self.n_common,
            "spearman_rho": self.spearman_rho,
            "common": [c.to_dict() for c in self.common],
            "only_a": list(self.only_a),
            "only_b": list(self.only_b),
        }


def diff_blueprints(a: Blueprint, b: Blueprint) -> BlueprintDiff:
    """Per common id: ranks in a and b, rank change and norm ratio; ids on one side only; Spearman ρ."""
    rank_a = dict(zip((e.id for e in a.layers), _ranks([e.gradient_norm for e in a.layers]), strict=True))
    rank_b = dict(zip((e.id for e in b.layers), _ranks([e.gradient_norm for e in b.layers]), strict=True))
    norms_a, norms_b = a.norms(), b.norms()
    common = [lid for lid in norms_a if lid in norms_b]
    changes = tuple(
        LayerChange(
            id=lid,
            rank_a=rank_a[lid],
            rank_b=rank_b[lid],
            rank_change=rank_b[lid] - rank_a[lid],
            norm_a=norms_a[lid],
            norm_b=norms_b[lid],
            norm_ratio=_ratio(norms_b[lid], norms_a[lid]),
        )
        for lid in common
    )
    return BlueprintDiff(
        model_a=a.model_id,
        model_b=b.model_id,
        checkpoint_a=a.training_checkpoint,
        checkpoint_b=b.training_checkpoint,
        common=changes,
        only_a=tuple(lid for lid in norms_a if lid not in norms_b),
        only_b=tuple(lid for lid in norms_b if lid not in norms_a),
        spearman_rho=_spearman([norms_a[i] for i in common], [norms_b[i] for i in common]),
    )


# --------------------------------------------------------------------------------------------- aggregate

AggregateKey = tuple[str, float, str]  # (model_id, training_checkpoint, layer id), as in App. A.2

CSV_COLUMNS: tuple[str, ...] = (
    "model_id",
    "training_checkpoint",
    "layer_id",
    "gradient_norm",
    "statistic",
    "ci_low",
    "ci_high",
    "ci_level",
    "n_batches",
    "n_params",
    "alpha",
    "gamma",
    "gamma_fit",
    "k_star",
    "k_star_interior",
    "fit_method",
    "prefixes",
    "source",
)
DOMAIN_COLUMN_PREFIX = "domain:"


@dataclass(frozen=True, kw_only=True)
class AggregateRow:
    model_id: str
    training_checkpoint: float
    layer: LayerEntry
    source: str

    @property
    def key(self) -> AggregateKey:
        return (self.model_id, self.training_checkpoint, self.layer.id)


@dataclass(frozen=True, kw_only=True)
class Overwrite:
    """A key that a later file replaced (App. A.2 lets the later one win; we count and report it)."""

    key: AggregateKey
    previous_source: str
    source: str


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


@dataclass(frozen=True, kw_only=True)
class AggregateTable:
    """The App. A.2 table: one row per (model_id, training_checkpoint, layer id), in first-seen order."""

    rows: tuple[AggregateRow, ...]
    overwritten: tuple[Overwrite, ...]

    @property
    def n_overwritten(self) -> int:
        return len(self.overwritten)

    def as_mapping(self) -> dict[AggregateKey, LayerEntry]:
        """The paper's `combined` dict: key -> layer entry."""
        return {row.key: row.layer for row in self.rows}

    def domains(self) -> list[str]:
        """Every domain tag seen, "general" first, then sorted."""
        names = {name for row in self.rows for name in (row.layer.domain_tags or {})}
        return sorted(names, key=lambda n: (n != "general", n))

    def columns(self) -> list[str]:
        return [*CSV_COLUMNS, *(DOMAIN_COLUMN_PREFIX + d for d in self.domains())]

    def _records(self) -> list[list[Any]]:
        domains = self.domains()
        out = []
        for row in self.rows:
            e = row.layer
            ci = e.ci
            tags = e.domain_tags or {}
            out.append(
                [
                    _cell(v)
                    for v in (
                        row.model_id,
                        row.training_checkpoint,
                        e.id,
                        e.gradient_norm,
                        e.statistic,
                        ci.low if ci else None,
                        ci.high if ci else None,
                        ci.level if ci else None,
                        e.n_batches,
                        e.n_params,
                        e.alpha,
                        e.gamma,
                        e.gamma_fit,
                        e.k_star,
                        e.k_star_interior,
                        e.fit.method if e.fit else None,
                        " ".join(e.prefixes) if e.prefixes else None,
                        row.source,
                        *(tags.get(d) for d in domains),
                    )
                ]
            )
        return out

    def to_csv(self, path_or_file: str | os.PathLike[str] | TextIO) -> None:
        """Write the table as CSV (header + one line per row; empty cells where a field is absent)."""
        if isinstance(path_or_file, str | os.PathLike):
            with open(path_or_file, "w", newline="", encoding="utf-8") as fh:
                self._write_csv(fh)
        else:
            self._write_csv(path_or_file)

    def _write_csv(self, fh: TextIO) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(self.columns())
        writer.writerows(self._records())

    def to_csv_text(self) -> str:
        buf = io.StringIO()
        self._write_csv(buf)
        return buf.getvalue()


def aggregate_blueprints(blueprints: Sequence[tuple[str, Blueprint]]) -> AggregateTable:
    """Combine (source, blueprint) pairs into one table keyed (model_id, training_checkpoint, id) (App. A.2)."""
    combined: dict[AggregateKey, AggregateRow] = {}
    overwritten: list[Overwrite] = []
    for source, bp in blueprints:
        for entry in bp.layers:
            row = AggregateRow(
                model_id=bp.model_id, training_checkpoint=bp.training_checkpoint, layer=entry, source=source
            )
            previous = combined.get(row.key)
            if previous is not None:
                overwritten.append(Overwrite(key=row.key, previous_source=previous.source, source=source))
            combined[row.key] = row  # App. A.2: a later file overwrites an earlier key
    return AggregateTable(rows=tuple(combined.values()), overwritten=tuple(overwritten))


# --------------------------------------------------------------------------------------------- drift

DRIFT_OK = "ok"
DRIFT_USE_COARSE = "use-coarse"
DRIFT_REFRESH = "refresh"


@dataclass(frozen=True, kw_only=True)
class DriftReport:
    """§5 "Drift & refresh": does the blueprint's ranking still hold in this domain?

    level: the granularity the action applies to ("submodule" or "layer"); action: "ok" (use the blueprint
    as is), "use-coarse" (use it at layer level only), "refresh" (it is stale: re-measure).
    """

    level: str
    action: str
    rho: float | None
    rho_coarse: float | None
    n_common: int
    n_common_coarse: int | None
    threshold: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coarse_norms(norms: Mapping[str, float], ids: Sequence[str]) -> dict[str, float]:
    """Norms of layer groups: root-sum-of-squares of their submodules' norms (norms of disjoint blocks)."""
    sq: dict[str, float] = {}
    for lid in ids:
        cid = coarse_id(lid)
        sq[cid] = sq.get(cid, 0.0) + norms[lid] ** 2
    return {cid: math.sqrt(v) for cid, v in sq.items()}


def drift_check(local_norms: Mapping[str, float], blueprint: Blueprint, *, threshold: float = 0.7) -> DriftReport:
    """Rank-correlate in-domain gradient norms with the blueprint's (§5 "Drift & refresh").

    Spearman ρ over the common ids; below `threshold`, combine both sides into layer groups (coarse_id,
    root-sum-of-squares) and check again; below it there too, the blueprint needs a refresh.
    """
    if not is_finite_number(threshold) or not -1 <= threshold <= 1:
        raise InputError("threshold", f"must lie in [-1, 1], got {threshold!r}", "a rank correlation, e.g. 0.7")
    for lid, value in local_norms.items():
        if not is_finite_number(value) or value < 0:
            raise InputError(
                f"local_norms[{lid!r}]", f"must be a finite number >= 0, got {value!r}", "gradient norms are magnitudes"
            )
    bp_norms = blueprint.norms()
    common = [lid for lid in bp_norms if lid in local_norms]
    local = {lid: float(local_norms[lid]) for lid in common}
    rho = _spearman([local[i] for i in common], [bp_norms[i] for i in common])
    base: dict[str, Any] = {"rho": rho, "n_common": len(common), "threshold": float(threshold)}
    if rho is not None and rho >= threshold:
        return DriftReport(
            level="submodule",
            action=DRIFT_OK,
            rho_coarse=None,
            n_common_coarse=None,
            reason=f"submodule ranks agree (ρ={rho:.3f} >= {threshold:g})",
            **base,
        )
    coarse_local, coarse_bp = _coarse_norms(local, common), _coarse_norms(bp_norms, common)
    cids = list(coarse_bp)
    rho_coarse = _spearman([coarse_local[c] for c in cids], [coarse_bp[c] for c in cids])
    why = (
        f"submodule ranks disagree (ρ={rho:.3f} < {threshold:g})"
        if rho is not None
        else f"submodule ρ is undefined ({len(common)} common ids, or constant norms)"
    )
    if rho_coarse is not None and rho_coarse >= threshold:
        return DriftReport(
            level="layer",
            action=DRIFT_USE_COARSE,
            rho_coarse=rho_coarse,
            n_common_coarse=len(cids),
            reason=f"{why}; layer ranks agree (ρ={rho_coarse:.3f} >= {threshold:g})",
            **base,
        )
    coarse_why = (
        f"layer ranks disagree too (ρ={rho_coarse:.3f} < {threshold:g})"
        if rho_coarse is not None
        else f"layer ρ is undefined ({len(cids)} layer groups, or constant norms)"
    )
    return DriftReport(
        level="layer",
        action=DRIFT_REFRESH,
        rho_coarse=rho_coarse,
        n_common_coarse=len(cids),
        reason=f"{why}; {coarse_why}: refresh the blueprint",
        **base,
    )
