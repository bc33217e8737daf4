"""Which submodules to train on a target domain: the paper's Algorithm 1 ("blueprint-guided submodule adaptation")
steps (2)–(3), and the baselines it is compared with (docs/adapt.md).

Step (2) blends the blueprint's gradient norms Ḡᵢ with a local sample G̃ᵢ from the probe on the target domain,
G′ᵢ = aᵢ·Ḡᵢ + (1 − aᵢ)·G̃ᵢ, each side first normalised to sum 1 (a share of the model's gradient norm, so the two
scales meet), with aᵢ = a·wᵢ and wᵢ = 1/(1 + relative CI width) (§4, practical consideration 2: a noisy entry is
trusted less). When the Spearman ρ between Ḡ and G̃ is below a threshold (consideration 3: drift), a falls to 0 or
the selection moves to whole transformer blocks (§5 "Drift & refresh"). Step (3) picks S_adapt greedily by predicted
gain per byte under a memory budget and/or a trainable-parameter fraction; the cost of training a parameter comes from
the job's resource model (`orchestrator.core.resource_model`, Prop. B.1's cost_fixed / cost_per_param).

Plain Python, numpy and scipy: no engine is imported here.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
from scipy import stats

from orchestrator.blueprints.grouping import ParamGroup, coarse_id, group_of
from orchestrator.blueprints.model import Blueprint
from orchestrator.core.numbers import is_finite_number, json_safe
from orchestrator.core.resource_model import ResourceModel
from orchestrator.errors import InputError

BYTES_PER_GB = 1e9  # as the submit-time memory check (cluster.memory_gb_per_worker)
MIN_RANK_IDS = 3  # Spearman ρ needs at least 3 ids (as `cpr blueprint diff` and the drift check)
DEFAULT_RHO_THRESHOLD = 0.7  # the §5 drift check's default (orchestrator.blueprints.compare.drift_check)
ALWAYS_ON = ("embed", "norm.final", "head")  # LISA keeps embedding and head trainable (Pan et al. 2024)
_LAYER = re.compile(r"^layer\.(\d+)$")
_SHOWN_IDS = 5

OnDrift = Literal["local", "blocks"]
Fallback = Literal["none", "local", "blocks", "blocks-local"]


class Strategy(enum.StrEnum):
    """The selection strategies behind `select` (docs/adapt.md)."""

    BLUEPRINT = "blueprint"  # Algorithm 1: blended, CI-weighted, drift-guarded G′
    LOCAL = "local"  # a = 0: the local sample alone
    FULL = "full"  # every submodule
    LAST_K = "last_k"  # the last k blocks + head, k filling the budget
    LISA = "lisa"  # random blocks resampled every K steps, embedding and head always on
    INVERSE = "inverse"  # the lowest-G′ set under the same budget: a sanity check
    LORA = "lora"  # a descriptor only: the rank that matches the parameter budget


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, kw_only=True)
class SubmoduleInput:
    """One submodule (a blueprint id: embed, attn.0, ffn.0, norm.0, norm.final, head, other): its size, the
    blueprint's Ḡ with its bootstrap CI, the local G̃, and the entry's recommendation (k*, or None without a fit)."""

    id: str
    n_params: int
    blueprint_norm: float
    local_norm: float
    ci_low: float | None = None
    ci_high: float | None = None
    recommendation: float | None = None
    gamma_fit: float | None = None  # m(k) ≈ k^γ: the retained gradient mass of a fraction k (§4.1)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """What S_adapt may cost: per-rank memory in GB (1e9 bytes) and/or the trainable share of all parameters."""

    memory_gb: float | None = None
    max_fraction: float | None = None


@dataclass(frozen=True, kw_only=True)
class LinearShape:
    """A linear layer LoRA would adapt: its module name (`model.layers.0.self_attn.q_proj`, as `named_modules`
    gives it and peft's target_modules matches; `orchestrator.worker.lora.linear_shapes` reads them off a model) and
    (d_in, d_out)."""

    name: str
    d_in: int
    d_out: int


@dataclass(frozen=True, kw_only=True)
class SelectionRequest:
    """Everything a strategy needs. `submodules` are in model order (the last blocks are the deepest)."""

    submodules: tuple[SubmoduleInput, ...]
    resource: ResourceModel
    budget: Budget
    a: float = 0.5
    rho_threshold: float = DEFAULT_RHO_THRESHOLD
    on_drift: OnDrift = "blocks"
    lisa_interval: int = 50
    seed: int = 0
    linear_shapes: tuple[LinearShape, ...] = ()
    partial_units: bool = True
    """Train a fraction k* of a unit where its entry recommends one; False: whole units only, as an engine that
    freezes whole tensors trains them (`cpr adapt`), so the budget holds for what is really trained."""


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, kw_only=True)
class Row:
    """One selection unit (a submodule, or a block after the drift fallback) and how it was scored."""

    id: str
    members: tuple[str, ...]
    n_params: int
    blueprint_norm: float
    local_norm: float
    blueprint_share: float  # Ḡᵢ / ΣḠ
    local_share: float  # G̃ᵢ / ΣG̃
    ci_width: float | None  # (hi − lo) / Ḡᵢ, None without a CI
    weight: float  # wᵢ = 1 / (1 + ci_width)
    a_eff: float  # aᵢ = a·wᵢ
    blended: float  # G′ᵢ
    fraction: float  # the share of its entries trained: 0 (frozen), k (the entry's recommendation) or 1
    trainable_params: int
    cost_bytes: float


@dataclass(frozen=True, kw_only=True)
class LisaSchedule:
    """LISA (Pan et al. 2024): `n_active` of the blocks, drawn anew every `interval` steps, plus the always-on ids.

    Deterministic in (seed, step // interval): every rank, and a restarted run, draws the same set.
    """

    always: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]
    n_active: int
    interval: int
    seed: int

    def active(self, step: int) -> frozenset[str]:
        """The submodule ids trainable at optimizer step `step`."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InputError("step", f"must be an integer >= 0, got {step!r}")
        rng = np.random.default_rng([self.seed, step // self.interval])
        picked = rng.choice(len(self.blocks), size=self.n_active, replace=False)
        return frozenset(self.always).union(*(self.blocks[int(i)] for i in picked))


@dataclass(frozen=True, kw_only=True)
class LoraDescriptor:
    """LoRA matched to the parameter budget: r = budget / Σ(d_in + d_out) over the adapted linear layers."""

    rank: int
    targets: tuple[str, ...]
    params_per_rank: int  # Σ(d_in + d_out)
    trainable_params: int  # rank · params_per_rank


@dataclass(frozen=True, kw_only=True)
class Selection:
    """S_adapt and how it was reached: the chosen ids with fractions, every unit's scores, drift and cost."""

    strategy: str
    chosen: dict[str, float]  # submodule id -> trained fraction, in model order
    rows: tuple[Row, ...]
    a: float  # the a the scores used (0 after a drift fallback to the local sample)
    rho: float | None  # Spearman ρ(Ḡ, G̃) over submodules; None when undefined
    rho_coarse: float | None  # the same over blocks, when the block fallback computed it
    drift: bool  # ρ below the threshold (or undefined)
    fallback: Fallback
    trainable_params: int
    total_params: int
    predicted_memory_bytes: float  # cost_fixed·N + cost_per_param·trainable, per rank
    budget_bytes: float | None
    within_budget: bool
    last_k: int | None = None
    schedule: LisaSchedule | None = None
    lora: LoraDescriptor | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (a report or an MLflow artifact)."""
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in (
                "strategy",
                "a",
                "rho",
                "rho_coarse",
                "drift",
                "fallback",
                "trainable_params",
                "total_params",
                "predicted_memory_bytes",
                "budget_bytes",
                "within_budget",
                "last_k",
            )
        }
        out["chosen"] = dict(self.chosen)
        out["rows"] = [dict(vars(r), members=list(r.members)) for r in self.rows]
        sch = self.schedule
        out["schedule"] = (
            None
            if sch is None
            else {
                "always": list(sch.always),
                "blocks": [list(b) for b in sch.blocks],
                "n_active": sch.n_active,
                "interval": sch.interval,
                "seed": sch.seed,
            }
        )
        out["lora"] = None if self.lora is None else dict(vars(self.lora), targets=list(self.lora.targets))
        out["notes"] = list(self.notes)
        return json_safe(out)


# --------------------------------------------------------------------------------------------- checks


def _first(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN_IDS])
    return shown + (f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else "")


def _magnitude(name: str, value: object) -> float:
    if not is_finite_number(value) or value < 0:  # type: ignore[operator]
        raise InputError(name, f"must be a finite number >= 0, got {value!r}", "gradient norms are magnitudes")
    return float(value)  # type: ignore[arg-type]


def _check_submodules(subs: Sequence[SubmoduleInput]) -> None:
    if not subs:
        raise InputError("submodules", "is empty", "pass one entry per blueprint id of the model")
    seen: set[str] = set()
    for s in subs:
        where = f"submodules[{s.id!r}]"
        if not isinstance(s.id, str) or not s.id:
            raise InputError("submodules", f"an id must be a non-empty string, got {s.id!r}")
        if s.id in seen:
            raise InputError(where, "appears twice", "ids are the blueprint's, one entry each")
        seen.add(s.id)
        if isinstance(s.n_params, bool) or not isinstance(s.n_params, int) or s.n_params < 0:
            raise InputError(f"{where}.n_params", f"must be an integer >= 0, got {s.n_params!r}")
        _magnitude(f"{where}.blueprint_norm", s.blueprint_norm)
        _magnitude(f"{where}.local_norm", s.local_norm)
        if (s.ci_low is None) != (s.ci_high is None):
            raise InputError(f"{where}.ci_low", "ci_low and ci_high come together", "give both bounds or neither")
        if s.ci_low is not None and _magnitude(f"{where}.ci_low", s.ci_low) > _magnitude(f"{where}.ci_high", s.ci_high):
            raise InputError(f"{where}.ci_low", f"{s.ci_low!r} is above ci_high {s.ci_high!r}")
        if s.recommendation is not None and (not is_finite_number(s.recommendation) or not 0 <= s.recommendation <= 1):
            raise InputError(f"{where}.recommendation", f"must lie in [0, 1], got {s.recommendation!r}")
        if s.gamma_fit is not None and not is_finite_number(s.gamma_fit):
            raise InputError(f"{where}.gamma_fit", f"must be a finite number, got {s.gamma_fit!r}")
    if sum(s.n_params for s in subs) <= 0:
        raise InputError("submodules", "hold no parameters", "pass the model's parameter counts (n_params)")


def _check_request(req: SelectionRequest, strategy: Strategy) -> None:
    _check_submodules(req.submodules)
    if not is_finite_number(req.a) or not 0 <= req.a <= 1:
        raise InputError("a", f"must lie in [0, 1], got {req.a!r}", "the blueprint's weight in the blend G′")
    if not is_finite_number(req.rho_threshold) or not -1 <= req.rho_threshold <= 1:
        raise InputError("rho_threshold", f"must lie in [-1, 1], got {req.rho_threshold!r}", "a rank correlation")
    if req.on_drift not in ("local", "blocks"):
        raise InputError("on_drift", f"must be 'local' or 'blocks', got {req.on_drift!r}")
    if isinstance(req.lisa_interval, bool) or not isinstance(req.lisa_interval, int) or req.lisa_interval < 1:
        raise InputError("lisa_interval", f"must be an integer >= 1, got {req.lisa_interval!r}")
    rm = req.resource
    for name in ("cost_fixed", "cost_per_param"):
        value = getattr(rm, name)
        if not is_finite_number(value) or value < 0 or (name == "cost_per_param" and value == 0):
            raise InputError(f"resource.{name}", f"must be a finite number > 0, got {value!r}")
    b = req.budget
    if b.memory_gb is not None and (not is_finite_number(b.memory_gb) or b.memory_gb <= 0):
        raise InputError("budget.memory_gb", f"must be a finite number > 0, got {b.memory_gb!r}")
    if b.max_fraction is not None and (not is_finite_number(b.max_fraction) or not 0 < b.max_fraction <= 1):
        raise InputError("budget.max_fraction", f"must lie in (0, 1], got {b.max_fraction!r}")
    if strategy is not Strategy.FULL and b.memory_gb is None and b.max_fraction is None:
        raise InputError("budget", f"strategy {strategy.value!r} needs a budget", "set memory_gb and/or max_fraction")
    if b.memory_gb is not None:
        frozen = rm.cost_fixed * sum(s.n_params for s in req.submodules)
        if b.memory_gb * BYTES_PER_GB < frozen:
            raise InputError(
                "budget.memory_gb",
                f"{b.memory_gb:g} GB is below the {frozen / BYTES_PER_GB:.4g} GB per rank the frozen model alone needs",
                "raise memory_gb, or use a ZeRO stage that partitions more (the resource model's cost_fixed)",
            )


# --------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True, kw_only=True)
class _Unit(SubmoduleInput):
    """A selection unit: one submodule, or a whole block of them after the drift fallback (`members`)."""

    members: tuple[str, ...]
    order: int


def _units(subs: Sequence[SubmoduleInput]) -> list[_Unit]:
    return [
        _Unit(
            **{f.name: getattr(s, f.name) for f in fields(SubmoduleInput)}
            | {"blueprint_norm": float(s.blueprint_norm), "local_norm": float(s.local_norm)},
            members=(s.id,),
            order=i,
        )
        for i, s in enumerate(subs)
    ]


def _rss(values: Iterable[float]) -> float:
    """Root-sum-of-squares: the norm of disjoint blocks' concatenated gradients (as the §5 drift check combines)."""
    return math.sqrt(sum(v * v for v in values))


def _blocks(units: Sequence[_Unit]) -> list[_Unit]:
    """Whole transformer blocks (coarse_id: attn.i, ffn.i, norm.i -> layer.i); other ids stay as they are.

    A block's norms and CI bounds are root-sum-of-squares of its members' (the CI only when every member has one);
    it is trained whole (no recommendation: the fits are per submodule).
    """
    merged: dict[str, list[_Unit]] = {}
    for u in units:
        merged.setdefault(coarse_id(u.id), []).append(u)
    out = []
    for order, (cid, parts) in enumerate(merged.items()):
        if len(parts) == 1 and parts[0].id == cid:
            out.append(replace(parts[0], order=order))
            continue
        has_ci = all(p.ci_low is not None for p in parts)
        out.append(
            _Unit(
                id=cid,
                members=tuple(m for p in parts for m in p.members),
                n_params=sum(p.n_params for p in parts),
                blueprint_norm=_rss(p.blueprint_norm for p in parts),
                local_norm=_rss(p.local_norm for p in parts),
                ci_low=_rss(p.ci_low for p in parts) if has_ci else None,  # type: ignore[misc]
                ci_high=_rss(p.ci_high for p in parts) if has_ci else None,  # type: ignore[misc]
                recommendation=None,
                gamma_fit=None,
                order=order,
            )
        )
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ (scipy.stats.spearmanr), or None when undefined: fewer than 3 ids or a constant side."""
    if len(x) < MIN_RANK_IDS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    rho = float(stats.spearmanr(x, y).statistic)
    return rho if math.isfinite(rho) else None


def _shares(values: Sequence[float]) -> list[float]:
    """Each value over their sum (a common scale for Ḡ and G̃); all-zero values share equally."""
    total = math.fsum(values)
    return [v / total for v in values] if total > 0 else [1.0 / len(values)] * len(values)


def ci_weight(norm: float, ci_low: float | None, ci_high: float | None) -> tuple[float | None, float]:
    """(relative CI width, weight) of a blueprint entry: w = 1 / (1 + (hi − lo)/Ḡ) (§4, practical consideration 2).

    No CI: width None, weight 1 (nothing says the entry is noisy). A zero norm with a non-zero CI: weight 0.
    """
    if ci_low is None or ci_high is None:
        return None, 1.0
    spread = ci_high - ci_low
    if spread <= 0:
        return 0.0, 1.0
    if norm <= 0:
        return math.inf, 0.0
    width = spread / norm
    return width, 1.0 / (1.0 + width)


@dataclass(frozen=True, kw_only=True)
class _Scored:
    unit: _Unit
    bp_share: float
    local_share: float
    ci_width: float | None
    weight: float
    a_eff: float
    blended: float


def _score(units: Sequence[_Unit], a: float) -> list[_Scored]:
    """Algorithm 1 step (2): G′ᵢ = aᵢ·Ḡᵢ + (1 − aᵢ)·G̃ᵢ on the sum-1 scale, aᵢ = a·wᵢ."""
    p = _shares([u.blueprint_norm for u in units])
    q = _shares([u.local_norm for u in units])
    out = []
    for u, pi, qi in zip(units, p, q, strict=True):
        width, w = ci_weight(u.blueprint_norm, u.ci_low, u.ci_high)
        ai = a * w
        out.append(
            _Scored(
                unit=u, bp_share=pi, local_share=qi, ci_width=width, weight=w, a_eff=ai, blended=ai * pi + (1 - ai) * qi
            )
        )
    return out


def _fraction(u: _Unit, partial: bool = True) -> float:
    """The share of a unit's entries to train: its recommendation k* when the fit gave one in (0, 1) and `partial`
    units may be trained, else 1."""
    k = u.recommendation
    return float(k) if partial and k is not None and 0 < k < 1 else 1.0


def _gain(s: _Scored, fraction: float) -> float:
    """Predicted gain of training `fraction` of a unit: Σ|∇θ| over the entries trained, the first-order decrease of
    an Adam-like (sign-scaled) step. A unit's entries have the typical magnitude G′/√n (its norm spread over its n
    entries: the per-parameter |∇θ| that §4.2 ranks by), so the whole unit gains G′·√n, and a fraction k of it that
    times the retained mass m(k) ≈ k^γ (§4.1; without a γ in (0, 1], m(k) = k). Per byte, units then rank by G′/√n:
    a norm share per parameter (G′/n) would favour small units for their size alone."""
    whole = s.blended * math.sqrt(s.unit.n_params)
    if fraction >= 1:
        return whole
    g = s.unit.gamma_fit
    gamma = g if g is not None and 0 < g <= 1 else 1.0
    return whole * fraction**gamma


# --------------------------------------------------------------------------------------------- budget


@dataclass
class _Capacity:
    """What is left of the budget for trainable parameters: bytes per rank and a parameter count."""

    bytes_left: float
    params_left: float

    def fits(self, params: int, cost_per_param: float) -> bool:
        return params <= self.params_left and params * cost_per_param <= self.bytes_left * (1 + 1e-12)

    def take(self, params: int, cost_per_param: float) -> None:
        self.params_left -= params
        self.bytes_left -= params * cost_per_param


def _capacity(req: SelectionRequest) -> _Capacity:
    n = sum(s.n_params for s in req.submodules)
    b, rm = req.budget, req.resource
    bytes_left = math.inf if b.memory_gb is None else b.memory_gb * BYTES_PER_GB - rm.cost_fixed * n
    params_left = math.inf if b.max_fraction is None else math.floor(b.max_fraction * n)
    return _Capacity(bytes_left=bytes_left, params_left=params_left)


def _trained(n_params: int, fraction: float) -> int:
    """Entries trained when `fraction` of `n_params` are: rounded up, so the cost is never understated."""
    return min(n_params, math.ceil(fraction * n_params - 1e-9)) if fraction < 1 else n_params


def _empty(strategy: Strategy, req: SelectionRequest) -> InputError:
    smallest = min((s.n_params for s in req.submodules if s.n_params > 0), default=0)
    return InputError(
        "budget",
        f"strategy {strategy.value!r} selects nothing: no unit fits (the smallest submodule has {smallest} parameters, "
        f"{smallest * req.resource.cost_per_param / BYTES_PER_GB:.4g} GB to train)",
        "raise memory_gb or max_fraction",
    )


# --------------------------------------------------------------------------------------------- strategies


_Guarded = tuple[list[_Scored], float, float | None, float | None, bool, Fallback]
"""(scores, a used, ρ, ρ over blocks, drift, fallback)."""


def _drift_scores(req: SelectionRequest, a: float) -> _Guarded:
    """Scores after the drift guard (consideration 3): ρ(Ḡ, G̃) below the threshold sets a = 0 (`local`) or moves
    to blocks (`blocks`), where a is kept only if the blocks' ρ clears the threshold."""
    units = _units(req.submodules)
    rho = spearman([u.blueprint_norm for u in units], [u.local_norm for u in units])
    drift = rho is None or rho < req.rho_threshold
    if a == 0 or not drift:
        return _score(units, a), a, rho, None, drift, "none"
    if req.on_drift == "local":
        return _score(units, 0.0), 0.0, rho, None, drift, "local"
    blocks = _blocks(units)
    rho_coarse = spearman([u.blueprint_norm for u in blocks], [u.local_norm for u in blocks])
    if rho_coarse is not None and rho_coarse >= req.rho_threshold:
        return _score(blocks, a), a, rho, rho_coarse, drift, "blocks"
    return _score(blocks, 0.0), 0.0, rho, rho_coarse, drift, "blocks-local"


def _row(s: _Scored, fraction: float, trained: int, cost_per_param: float) -> Row:
    u = s.unit
    return Row(
        id=u.id,
        members=u.members,
        n_params=u.n_params,
        blueprint_norm=u.blueprint_norm,
        local_norm=u.local_norm,
        blueprint_share=s.bp_share,
        local_share=s.local_share,
        ci_width=s.ci_width,
        weight=s.weight,
        a_eff=s.a_eff,
        blended=s.blended,
        fraction=fraction,
        trainable_params=trained,
        cost_bytes=trained * cost_per_param,
    )


def _finish(
    strategy: Strategy,
    req: SelectionRequest,
    scored: Sequence[_Scored],
    picked: Mapping[str, float],
    *,
    a: float,
    rho: float | None,
    rho_coarse: float | None = None,
    drift: bool = False,
    fallback: Fallback = "none",
    allow_empty: bool = False,
    extra_params: int = 0,
    **more: Any,
) -> Selection:
    """The Selection of units `picked` (unit id -> fraction): rows, chosen submodule ids, params and memory."""
    rm = req.resource
    rows, chosen = [], {}
    for s in scored:
        f = picked.get(s.unit.id, 0.0)
        trained = _trained(s.unit.n_params, f) if f > 0 else 0
        rows.append(_row(s, f, trained, rm.cost_per_param))
        if f > 0:
            chosen.update(dict.fromkeys(s.unit.members, f))
    if not chosen and not allow_empty:
        raise _empty(strategy, req)
    order = {s.id: i for i, s in enumerate(req.submodules)}
    chosen = dict(sorted(chosen.items(), key=lambda kv: order[kv[0]]))
    trainable = sum(r.trainable_params for r in rows) + extra_params
    total = sum(s.n_params for s in req.submodules)
    memory = rm.cost_fixed * total + rm.cost_per_param * trainable
    budget_bytes = None if req.budget.memory_gb is None else req.budget.memory_gb * BYTES_PER_GB
    within = (budget_bytes is None or memory <= budget_bytes * (1 + 1e-12)) and (
        req.budget.max_fraction is None or trainable <= req.budget.max_fraction * total
    )
    return Selection(
        strategy=strategy.value,
        chosen=chosen,
        rows=tuple(rows),
        a=a,
        rho=rho,
        rho_coarse=rho_coarse,
        drift=drift,
        fallback=fallback,
        trainable_params=trainable,
        total_params=total,
        predicted_memory_bytes=memory,
        budget_bytes=budget_bytes,
        within_budget=within,
        **more,
    )


def _greedy(scored: Sequence[_Scored], req: SelectionRequest, *, lowest_first: bool) -> dict[str, float]:
    """Units by predicted gain per byte (G′·√n·m(k) / (k·n·cost_per_param)), taken while they fit; `lowest_first`
    takes the same list from the other end (the inverse check)."""
    cap, c = _capacity(req), req.resource.cost_per_param
    options = []
    for s in scored:
        if s.unit.n_params == 0:
            continue
        f = _fraction(s.unit, req.partial_units)
        trained = _trained(s.unit.n_params, f)
        density = _gain(s, f) / (trained * c)
        options.append((density, s.unit.order, s.unit.id, f, trained))
    options.sort(key=lambda o: (o[0], -o[1]) if lowest_first else (-o[0], o[1]))
    picked: dict[str, float] = {}
    for _, _, uid, f, trained in options:
        if cap.fits(trained, c):
            cap.take(trained, c)
            picked[uid] = f
    return picked


MAX_FRONTIER = 20_000
"""States the exact selection keeps at most; past it (hundreds of units of very different sizes) greedy decides."""


def _best_set(scored: Sequence[_Scored], req: SelectionRequest) -> dict[str, float]:
    """Algorithm 1 step (3): the set of units with the largest total predicted gain that fits the budget, exactly
    (0/1 knapsack over the Pareto frontier of (trained parameters, gain)). Both budgets bound the trained parameters
    alone (bytes = parameters × cost_per_param), so one capacity suffices. Greedy by gain per byte can be far off
    with few, coarse units: one mid-sized unit taken first can shut out a larger one worth more. Past MAX_FRONTIER
    states the greedy choice is returned."""
    cap, c = _capacity(req), req.resource.cost_per_param
    limit = min(cap.params_left, cap.bytes_left * (1 + 1e-12) / c)
    items = []
    for s in scored:
        if s.unit.n_params == 0:
            continue
        f = _fraction(s.unit, req.partial_units)
        items.append((s.unit.id, f, _trained(s.unit.n_params, f), _gain(s, f)))
    frontier: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]  # (params, gain, item indices)
    for i, (_, _, trained, gain) in enumerate(items):
        grown = [(p + trained, g + gain, (*picked, i)) for p, g, picked in frontier if p + trained <= limit]
        merged = sorted(frontier + grown, key=lambda st: (st[0], -st[1]))
        frontier = []
        for st in merged:  # keep a state only if it gains more than every cheaper one
            if not frontier or st[1] > frontier[-1][1]:
                frontier.append(st)
        if len(frontier) > MAX_FRONTIER:
            return _greedy(scored, req, lowest_first=False)
    best = max(frontier, key=lambda st: (st[1], -st[0]))
    if not best[2]:  # nothing predicted to gain (all norms 0): what fits, as greedy takes it
        return _greedy(scored, req, lowest_first=False)
    return {items[i][0]: items[i][1] for i in sorted(best[2])}


def _blueprint(req: SelectionRequest, strategy: Strategy = Strategy.BLUEPRINT, a: float | None = None) -> Selection:
    scored, a_used, rho, rho_coarse, drift, fallback = _drift_scores(req, req.a if a is None else a)
    picked = _greedy(scored, req, lowest_first=True) if strategy is Strategy.INVERSE else _best_set(scored, req)
    return _finish(
        strategy, req, scored, picked, a=a_used, rho=rho, rho_coarse=rho_coarse, drift=drift, fallback=fallback
    )


def _local(req: SelectionRequest) -> Selection:
    return _blueprint(req, Strategy.LOCAL, a=0.0)


def _inverse(req: SelectionRequest) -> Selection:
    return _blueprint(req, Strategy.INVERSE)


def _plain_scores(req: SelectionRequest) -> tuple[list[_Scored], float | None]:
    """Fine-level scores with the request's a, for the baselines' rows (they do not select by them)."""
    units = _units(req.submodules)
    rho = spearman([u.blueprint_norm for u in units], [u.local_norm for u in units])
    return _score(units, req.a), rho


def _full(req: SelectionRequest) -> Selection:
    scored, rho = _plain_scores(req)
    return _finish(Strategy.FULL, req, scored, {s.unit.id: 1.0 for s in scored}, a=req.a, rho=rho)


def _block_index(uid: str) -> int | None:
    m = _LAYER.match(coarse_id(uid))
    return int(m.group(1)) if m else None


def _layout(req: SelectionRequest) -> tuple[tuple[str, ...], list[tuple[int, tuple[str, ...], int]]]:
    """(always-on ids present, [(block index, member ids, parameters)] by index)."""
    present = {s.id: s for s in req.submodules}
    always = tuple(i for i in ALWAYS_ON if i in present)
    blocks: dict[int, list[str]] = {}
    for s in req.submodules:
        idx = _block_index(s.id)
        if idx is not None:
            blocks.setdefault(idx, []).append(s.id)
    layout = [(i, tuple(ids), sum(present[m].n_params for m in ids)) for i, ids in sorted(blocks.items())]
    return always, layout


def _last_k(req: SelectionRequest) -> Selection:
    """The last k blocks and the head (with the final norm), k as large as the budget allows."""
    always, layout = _layout(req)
    head = tuple(i for i in always if i != "embed")
    cap, c = _capacity(req), req.resource.cost_per_param
    sizes = {s.id: s.n_params for s in req.submodules}
    head_params = sum(sizes[i] for i in head)
    if not cap.fits(head_params, c):
        raise InputError(
            "budget", f"last_k cannot train even the head ({head_params} parameters)", "raise memory_gb or max_fraction"
        )
    cap.take(head_params, c)
    ids, k = list(head), 0
    for _, members, n in reversed(layout):
        if not cap.fits(n, c):
            break
        cap.take(n, c)
        ids += members
        k += 1
    scored, rho = _plain_scores(req)
    return _finish(Strategy.LAST_K, req, scored, dict.fromkeys(ids, 1.0), a=req.a, rho=rho, last_k=k)


def _lisa(req: SelectionRequest) -> Selection:
    """LISA: as many blocks as fit beside embedding and head (sized by the largest blocks, so every draw fits)."""
    always, layout = _layout(req)
    if not layout:
        raise InputError("submodules", "name no transformer blocks (attn.i, ffn.i, norm.i)", "LISA samples blocks")
    cap, c = _capacity(req), req.resource.cost_per_param
    sizes = {s.id: s.n_params for s in req.submodules}
    base = sum(sizes[i] for i in always)
    largest = sorted((n for _, _, n in layout), reverse=True)
    n_active, used = 0, base
    for n in largest:
        if not cap.fits(used + n, c):
            break
        used += n
        n_active += 1
    if n_active == 0:
        raise InputError(
            "budget",
            f"LISA needs embedding, head and at least one block ({base + largest[0]} parameters) within the budget",
            "raise memory_gb or max_fraction",
        )
    schedule = LisaSchedule(
        always=always,
        blocks=tuple(members for _, members, _ in layout),
        n_active=n_active,
        interval=req.lisa_interval,
        seed=req.seed,
    )
    scored, rho = _plain_scores(req)
    return _finish(
        Strategy.LISA, req, scored, dict.fromkeys(schedule.active(0), 1.0), a=req.a, rho=rho, schedule=schedule
    )


def _lora(req: SelectionRequest) -> Selection:
    """A LoRA descriptor: the rank whose adapters use the parameter budget (the base model stays frozen)."""
    if not req.linear_shapes:
        raise InputError("linear_shapes", "is empty", "name the linear layers LoRA adapts, with (d_in, d_out)")
    for ls in req.linear_shapes:
        for name in ("d_in", "d_out"):
            v = getattr(ls, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"linear_shapes[{ls.name!r}].{name}", f"must be an integer >= 1, got {v!r}")
    per_rank = sum(ls.d_in + ls.d_out for ls in req.linear_shapes)
    cap = _capacity(req)
    budget_params = min(cap.params_left, cap.bytes_left / req.resource.cost_per_param)
    rank = int(budget_params // per_rank) if math.isfinite(budget_params) else 0
    if rank < 1:
        raise InputError(
            "budget",
            f"does not fit rank-1 LoRA ({per_rank} parameters over {len(req.linear_shapes)} layers)",
            "raise memory_gb or max_fraction, or adapt fewer layers",
        )
    lora = LoraDescriptor(
        rank=rank,
        targets=tuple(ls.name for ls in req.linear_shapes),
        params_per_rank=per_rank,
        trainable_params=rank * per_rank,
    )
    scored, rho = _plain_scores(req)
    return _finish(
        Strategy.LORA,
        req,
        scored,
        {},
        a=req.a,
        rho=rho,
        allow_empty=True,
        extra_params=lora.trainable_params,
        lora=lora,
    )


STRATEGIES: dict[Strategy, Callable[[SelectionRequest], Selection]] = {
    Strategy.BLUEPRINT: _blueprint,
    Strategy.LOCAL: _local,
    Strategy.FULL: _full,
    Strategy.LAST_K: _last_k,
    Strategy.LISA: _lisa,
    Strategy.INVERSE: _inverse,
    Strategy.LORA: _lora,
}
"""The one seam: a strategy's name -> the function that selects for it."""


def select(strategy: Strategy | str, req: SelectionRequest) -> Selection:
    """S_adapt by `strategy` (docs/adapt.md). Bad input raises InputError naming the field and the fix."""
    try:
        s = Strategy(strategy)
    except ValueError:
        raise InputError(
            "strategy", f"unknown strategy {strategy!r}", f"use one of: {', '.join(x.value for x in Strategy)}"
        ) from None
    _check_request(req, s)
    return STRATEGIES[s](req)


# --------------------------------------------------------------------------------------------- adapters


def as_config_error(err: InputError, budget: Budget, prefix: str = "adapt.") -> InputError:
    """A refusal of `select` naming the job's config key (`adapt.a`, `adapt.memory_gb`…) instead of the request's
    field; a budget nothing fits in names the budget that was set (memory first)."""
    fields = {"a", "rho_threshold", "on_drift", "lisa_interval"}
    field = err.field
    if field in fields:
        field = prefix + field
    elif field.startswith("budget."):
        field = prefix + field.removeprefix("budget.")
    elif field == "budget":
        field = prefix + ("memory_gb" if budget.memory_gb is not None else "max_fraction")
    return InputError(field, err.problem, err.fix)


def inputs_from_blueprint(
    blueprint: Blueprint, local_norms: Mapping[str, float], model_groups: Mapping[str, int]
) -> tuple[SubmoduleInput, ...]:
    """One SubmoduleInput per model group (id -> parameter count, in model order, as `group_parameters` gives),
    from a blueprint's entries and the probe's local norms on the target domain. Ids must match on all three sides."""
    bp_ids = [e.id for e in blueprint.layers]
    missing = [g for g in model_groups if g not in set(bp_ids)]
    unknown = [i for i in bp_ids if i not in model_groups]
    if missing or unknown:
        parts = ([f"the model's {_first(missing)} missing from the blueprint"] if missing else []) + (
            [f"blueprint ids {_first(unknown)} not in the model"] if unknown else []
        )
        raise InputError(
            "blueprint.layers",
            "ids do not match the model's groups: " + "; ".join(parts),
            "use a blueprint published for this architecture (the same submodule ids)",
        )
    lost = [g for g in model_groups if g not in local_norms]
    if lost:
        raise InputError("local_norms", f"no local gradient norm for {_first(lost)}", "probe every submodule")
    out = []
    for gid, n in model_groups.items():
        e = blueprint.layer(gid)
        if e.n_params is not None and e.n_params != n:
            raise InputError(
                f"blueprint.layers[{gid!r}].n_params",
                f"is {e.n_params}, the model's {gid} has {n}",
                "use a blueprint published for this model size",
            )
        out.append(
            SubmoduleInput(
                id=gid,
                n_params=int(n),
                blueprint_norm=_magnitude(f"blueprint.layers[{gid!r}].gradient_norm", e.gradient_norm),
                local_norm=_magnitude(f"local_norms[{gid!r}]", local_norms[gid]),
                ci_low=e.ci.low if e.ci is not None else None,
                ci_high=e.ci.high if e.ci is not None else None,
                recommendation=e.recommendation,
                gamma_fit=e.gamma_fit,
            )
        )
    return tuple(out)


def trainable_names(param_names: Iterable[str], groups: Mapping[str, ParamGroup], chosen: Iterable[str]) -> set[str]:
    """The parameter names the chosen submodule ids cover (what `build_engine(trainable=...)` keeps trainable).

    A fraction below 1 still trains the whole submodule here: freezing whole tensors cannot realise a sparse
    top-k update (docs/adapt.md).
    """
    wanted = set(chosen)
    unknown = sorted(wanted - set(groups))
    if unknown:
        raise InputError("chosen", f"ids {_first(unknown)} are not the model's groups", "select from this model")
    return {n for n in param_names if group_of(n, groups) in wanted}
