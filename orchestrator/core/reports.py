"""What training workers send the controller: small records of plain numbers (they cross Ray as dicts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class TrainReport:
    """Rank 0's view of the last `train.report_interval` optimizer steps."""

    step: int
    """Optimizer step just completed (1-based)."""
    tokens: int
    """Training tokens consumed by the whole job (all ranks) up to this step."""
    loss: float
    """Mean training loss over the interval (nats/token), averaged over ranks."""
    lr: float
    tokens_per_s: float
    """Job throughput over the interval."""
    t_s: float
    """Wall clock (time.time()) when the step ended."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainReport:
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class EvalReport:
    """One evaluation check: Ψ as the job defines it (`psi=`), and the held-out loss, always measured."""

    step: int
    tokens: int
    val_loss: float
    """Mean held-out loss (nats/token) over the same sequences at every check; NaN/Inf when training diverged."""
    t_s: float
    final: bool = False
    """True for the evaluation at the end of the token budget."""
    psi: float = None  # type: ignore[assignment]  # None: −val_loss, set in __post_init__
    """Ψ at this check, higher is better (`core.psi`); −val_loss when not given (and in reports from before `psi=`)."""
    psi_name: str = "-val_loss"
    domain_losses: dict[str, float] = field(default_factory=dict)
    """psi=domains: the held-out loss of each domain of Ψ's mix ("general" included)."""

    def __post_init__(self) -> None:
        if self.psi is None:
            object.__setattr__(self, "psi", -self.val_loss)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalReport:
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class ProbeReport:
    """One gradient probe of one domain's validation batches, combined over ranks (§5; docs/blueprints.md).

    Per blueprint id: the gradient norm of every probe batch (one sample per rank and batch) and the magnitude
    histogram of all of them merged (`MagnitudeHistogram.to_dict` form). Only these statistics ever leave a rank.
    """

    step: int
    tokens: int
    domain: str
    """"general" for the job's own validation set, else a name from `data.domains`."""
    label: str | None
    """Blueprint checkpoint this probe belongs to ("0.5", "0.8", "1.0", "stop"), None for a periodic probe."""
    ids: list[str]
    groups: dict[str, dict[str, Any]]
    """Per id: the parameter-name prefixes it covers and its parameter count ({"prefixes": [...], "n_params": n})."""
    batch_norms: dict[str, list[float]]
    histograms: dict[str, dict[str, Any]]
    nonfinite: int = 0
    """Gradient values that were NaN/Inf (counted as 0 in the statistics); > 0 makes the probe unusable."""
    seconds: float = 0.0
    bytes_communicated: int = 0
    """Bytes each rank sent through the probe's collectives."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeReport:
        return cls(**data)
