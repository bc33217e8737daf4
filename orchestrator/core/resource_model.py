"""Resource model of Prop. B.1, C(k) = cost_fixed·N + cost_per_param·k·N (App. B.2 eq. (10); the paper's α, β),
computed from the training set-up (optimizer, precision, ZeRO stage) in per-rank bytes per parameter.

Mixed precision follows DeepSpeed: 16-bit weights and gradients, fp32 master weights and fp32 optimizer states
(Rajbhandari et al. 2020, "ZeRO", §3: 2 + 2 + K bytes per parameter with K = 12 for Adam). Frozen parameters
still hold weights (fixed cost); only trainable ones carry gradients, optimizer states and master weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.core.numbers import is_finite_number
from orchestrator.errors import InputError

Optimizer = Literal["adamw", "adam", "sgd", "sgd_momentum", "adafactor"]
Precision = Literal["fp32", "bf16", "fp16"]

# Bytes of one weight / gradient value at each training precision.
PRECISION_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}

# fp32 optimizer-state bytes per trainable parameter.
OPTIMIZER_STATE_BYTES: dict[str, float] = {
    "adamw": 8.0,  # two fp32 moments (m, v)
    "adam": 8.0,  # two fp32 moments (m, v)
    "sgd": 0.0,  # stateless
    "sgd_momentum": 4.0,  # one fp32 momentum buffer
    # Adafactor: the factored second moment is rows+cols per matrix (negligible per parameter); with β1 it also
    # keeps a full fp32 first moment. 4 B is therefore an upper bound (it is ~0 B without β1).
    "adafactor": 4.0,
}

FP32_MASTER_BYTES = 4.0  # fp32 master copy of each trainable weight, mixed precision only


@dataclass(frozen=True, kw_only=True)
class ResourceModel:
    """Per-rank bytes per parameter: what every parameter costs (cost_fixed) and what training one adds."""

    cost_fixed: float
    cost_per_param: float
    breakdown: dict[str, float] = field(default_factory=dict)
    optimizer: str
    precision: str
    zero_stage: int
    dp_world_size: int
    n_params: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, written into blueprint files next to the k* it produced."""
        return {
            "cost_fixed": float(self.cost_fixed),
            "cost_per_param": float(self.cost_per_param),
            "breakdown": {k: float(v) for k, v in self.breakdown.items()},
            "unit": "bytes_per_param_per_rank",
            "optimizer": self.optimizer,
            "precision": self.precision,
            "zero_stage": int(self.zero_stage),
            "dp_world_size": int(self.dp_world_size),
            "n_params": int(self.n_params),
        }


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(name, f"must be an integer >= {minimum}, got {value!r}")
    return value


def resource_model(
    *,
    n_params: int,
    optimizer: Optimizer = "adamw",
    precision: Precision = "bf16",
    zero_stage: int = 0,
    dp_world_size: int = 1,
    activation_bytes: float = 0.0,
) -> ResourceModel:
    """cost_fixed / cost_per_param in per-rank bytes per parameter for this optimizer, precision and ZeRO set-up.

    activation_bytes (per rank, e.g. from activation_bytes()) is paid whatever k is, so it is spread over all N.
    Bad values raise InputError: they come from user configs.
    """
    n_params = _positive_int("n_params", n_params)
    opt = optimizer.strip().lower() if isinstance(optimizer, str) else optimizer
    if opt not in OPTIMIZER_STATE_BYTES:
        raise InputError(
            "optimizer", f"unknown optimizer {optimizer!r}", f"use one of: {', '.join(OPTIMIZER_STATE_BYTES)}"
        )
    prec = precision.strip().lower() if isinstance(precision, str) else precision
    if prec not in PRECISION_BYTES:
        raise InputError("precision", f"unknown precision {precision!r}", f"use one of: {', '.join(PRECISION_BYTES)}")
    if isinstance(zero_stage, bool) or not isinstance(zero_stage, int) or not 0 <= zero_stage <= 3:
        raise InputError("zero_stage", f"must be 0, 1, 2 or 3, got {zero_stage!r}")
    d = _positive_int("dp_world_size", dp_world_size)
    if not is_finite_number(activation_bytes) or activation_bytes < 0:
        raise InputError("activation_bytes", f"must be a finite number >= 0, got {activation_bytes!r}")

    p = float(PRECISION_BYTES[prec])
    mixed = prec != "fp32"
    # ZeRO partitions across the d data-parallel ranks (Rajbhandari et al. 2020, Fig. 1): stage 1 optimizer
    # states (incl. fp32 master weights), stage 2 also gradients, stage 3 also the weights themselves.
    div_opt = d if zero_stage >= 1 else 1
    div_grad = d if zero_stage >= 2 else 1
    div_weight = d if zero_stage >= 3 else 1
    breakdown = {
        "weights": p / div_weight,  # every parameter, frozen or not
        "activations": float(activation_bytes) / n_params,  # fixed per step, spread over N
        "grads": p / div_grad,  # trainable only
        "optimizer_states": OPTIMIZER_STATE_BYTES[opt] / div_opt,  # trainable only
        "master_weights": (FP32_MASTER_BYTES if mixed else 0.0) / div_opt,  # trainable only
    }
    # App. B.2, eq. (10): C(k) = cost_fixed·N + cost_per_param·kN.
    cost_fixed = breakdown["weights"] + breakdown["activations"]
    cost_per_param = breakdown["grads"] + breakdown["optimizer_states"] + breakdown["master_weights"]
    return ResourceModel(
        cost_fixed=cost_fixed,
        cost_per_param=cost_per_param,
        breakdown=breakdown,
        optimizer=opt,
        precision=prec,
        zero_stage=zero_stage,
        dp_world_size=d,
        n_params=n_params,
    )


def activation_bytes(
    *,
    seq_len: int,
    micro_batch: int,
    hidden: int,
    n_layers: int,
    n_heads: int,
    bytes_per_value: int = 2,
    recompute: bool = False,
) -> float:
    """Activation memory per rank of a transformer stack (Korthikanti et al. 2022; no tensor/sequence parallelism).

    One layer keeps s·b·h·(34 + 5·a·s/h) bytes with 16-bit activations; with full recomputation only the layer
    input, 2·s·b·h bytes. Both are scaled by bytes_per_value/2 (an approximation: the formula's 1-byte dropout
    masks do not really scale with precision).
    """
    s = _positive_int("seq_len", seq_len)
    b = _positive_int("micro_batch", micro_batch)
    h = _positive_int("hidden", hidden)
    n_layers = _positive_int("n_layers", n_layers)
    a = _positive_int("n_heads", n_heads)
    bytes_per_value = _positive_int("bytes_per_value", bytes_per_value)
    if recompute:
        per_layer = 2.0 * s * b * h  # Korthikanti et al. 2022: full recompute keeps only the layer input
    else:
        per_layer = s * b * h * (34.0 + 5.0 * a * s / h)  # Korthikanti et al. 2022, per-layer activations, eq. (1)
    return per_layer * n_layers * bytes_per_value / 2.0
