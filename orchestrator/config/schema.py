"""Structured configs of a pretraining job (Hydra/OmegaConf dataclasses): the schema `conf/` is checked against.

OmegaConf enforces the types and rejects unknown keys when `conf/` is composed; `orchestrator.config.validate`
then checks the values (ranges, paths, cluster size) before any resource is taken. Every field here is a key
users set from the command line, e.g. `cpr submit stop.max_loss=0.02 cluster.num_workers=2`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.core import stop_rule


@dataclass
class ModelConfig:
    """A decoder-only transformer built from config with `transformers` (never downloaded)."""

    name: str = "llama-2m"
    arch: str = "llama"
    """llama | gpt2"""
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    """Llama grouped-query attention; None: as many as num_heads."""
    intermediate_size: int | None = None
    """MLP width; None: the architecture's default for hidden_size."""
    max_position_embeddings: int = 256
    tie_word_embeddings: bool = False
    vocab_size: int | None = None
    """None: the tokenizer's vocabulary size."""
    dropout: float = 0.0


@dataclass
class DomainConfig:
    """A named validation domain (e.g. code, prose) the gradient probe measures besides the job's own set (App. A).

    Read like `data`, tokenized with the job's tokenizer; every document is used (none is trained on)."""

    source: str = "text_dir"
    """stdlib | text_dir | hf_files | memmap (a folder whose val.bin is already tokenized for this job)"""
    path: str | None = None
    glob: str | None = None
    """Files to take (stdlib: relative to the standard library; default: all its library sources)."""
    text_field: str = "text"
    hf_format: str | None = None
    max_files: int | None = None


@dataclass
class DataConfig:
    """Where the training text comes from; tokenized once and cached next to the data."""

    name: str = "stdlib"
    source: str = "stdlib"
    """stdlib (this interpreter's standard-library sources) | text_dir | hf_files | memmap"""
    path: str | None = None
    """text_dir: a folder; hf_files: a file or folder; memmap: a folder with train.bin, val.bin, meta.json."""
    glob: str | None = None
    """Files to take under `path` (text_dir default: **/*.txt)."""
    text_field: str = "text"
    hf_format: str | None = None
    """json | csv | parquet | text; None: from the file suffix."""
    val_every: int = 20
    """Every n-th document is held out for validation (Ψ)."""
    max_files: int | None = None
    tokenizer_vocab: int = 4096
    cache_dir: str | None = None
    domains: dict[str, Any] = field(default_factory=dict)
    """Validation domains for the gradient probe's per-domain weights (blueprint `domain_tags`): name -> the
    fields of DomainConfig, e.g. `+data.domains.code={source:text_dir,path:/data/code}`. Checked by
    `validate.domain_configs` (a typed dict here would refuse that command-line form)."""


@dataclass
class DeepSpeedConfig:
    """The DeepSpeed engine's ZeRO stage, precision and optimizer."""

    zero_stage: int = 2
    precision: str = "fp32"
    """fp32 | bf16"""
    optimizer: str = "adamw"


@dataclass
class TrainConfig:
    """The optimisation loop; `max_tokens` is the job's token budget and the length of the LR schedule."""

    seq_len: int = 128
    micro_batch: int = 8
    """Sequences per rank per micro-step."""
    grad_accum: int = 1
    lr: float = 3e-3
    schedule: str = "constant"
    """constant (after warm-up) | cosine (to min_lr_fraction·lr at max_tokens)."""
    warmup_steps: int = 50
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    max_tokens: int = 4_194_304
    eval_interval: int = 25
    """Optimizer steps between evaluation checks (each check feeds Ψ to the stop rule)."""
    eval_sequences: int = 64
    """Held-out sequences per evaluation, the same on every check."""
    report_interval: int = 5
    """Optimizer steps between training reports (loss, tokens) to the controller."""
    checkpoint_dir: str | None = None
    """None: <runs_dir>/checkpoints/<job id>."""
    checkpoint_interval: int | None = None
    """Optimizer steps between periodic DeepSpeed checkpoints (a multiple of eval_interval: one is taken only after
    a finite evaluation check); a gang that loses a rank restarts from the latest. None: every 4th check (100 steps
    by default); 0: only at the end."""
    keep_checkpoints: int = 2
    """Periodic checkpoints kept on disk (older ones are deleted); the final one is always kept."""
    threads_per_worker: int | None = None
    """torch intra-op threads per rank; None: cluster.cpus_per_worker."""


@dataclass
class StopConfig:
    """The marginal-return stop rule (§3): stop when ΔΨ/ΔΓ over `window` checks < η for `patience` checks.

    η is budget-aware by default (`max_loss` = δ: stop when the rest of the token budget would buy less than δ of the
    run's gain); `eta` (absolute) or `eta_rel` (ρ·r_ref) replace it. The defaults live in `core.stop_rule`."""

    enforce: bool = True
    """False: shadow mode, decisions are logged but the job runs to its budget."""
    resource: str = "energy_kwh"
    max_loss: float | None = None
    """δ in (0, 0.5]; None with neither eta nor eta_rel set: core.stop_rule.DEFAULT_MAX_LOSS (0.01)."""
    eta: float | None = None
    eta_rel: float | None = None
    """ρ: η = ρ·r_ref (first positive window ratio after warm-up)."""
    window: int = stop_rule.DEFAULT_WINDOW
    patience: int = stop_rule.DEFAULT_PATIENCE
    min_checks: int = stop_rule.DEFAULT_MIN_CHECKS
    min_fraction: float = 0.0
    budget: float | None = None
    """Cap on Γ of `resource`, in its units; None: only the token budget (train.max_tokens) caps the job."""
    estimator: str = "lstsq"
    max_nonfinite: int = 3
    """The tolerance for non-finite training: this many successive NaN/Inf validation losses (Ψ), or training-loss
    reports, stop the job as `diverged` (it keeps its last checkpoint of a finite state)."""


@dataclass
class HistogramConfig:
    """Magnitude-histogram bins of the probe: [0, lo), log bins lo..hi, [hi, inf) (`HistogramSpec`)."""

    lo: float = 1e-12
    hi: float = 1e4
    bins_per_decade: int = 8


@dataclass
class ProbeConfig:
    """The gradient probe and the blueprints it feeds (§5, App. A): what is measured, when, and how it is summarised."""

    enabled: bool = True
    interval: int = 250
    """Optimizer steps between periodic probes (logged as grad/norm/<id>); blueprint checkpoints probe as well."""
    batches: int = 4
    """Validation batches each rank probes per domain (each is one sample of every submodule's norm)."""
    checkpoints: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.8, 1.0])
    """Fractions of train.max_tokens at which a blueprint is published; one is also published at a STOP."""
    domains: list[str] | None = None
    """Names from data.domains to probe at blueprint checkpoints; None: all of them."""
    histogram: HistogramConfig = field(default_factory=HistogramConfig)
    statistic: str = "mean"
    """mean | median of the per-batch norms (§5 "Fidelity"), with a bootstrap CI."""
    ci_level: float = 0.95
    n_resamples: int = 1000
    fit_method: str = "binned-mle"
    """binned-mle | rank-lstsq: how the power-law exponent α is fitted to each histogram."""
    top_k: float = 0.1
    """Fraction k of a submodule's entries whose share of gradient mass, m(k), is logged (grad/topk_share/<id>)."""
    noise_multiplier: float = 0.0
    """> 0: Gaussian noise σ = noise_multiplier·noise_clip on the published norms (recorded in the file)."""
    noise_clip: float = 1.0
    model_id: str | None = None
    """The blueprints' model id; None: the job id."""


@dataclass
class TelemetryConfig:
    """Per-rank energy/power/memory sampling: NVML for GPUs, codecarbon for CPU/RAM and carbon."""

    enabled: bool = True
    interval_s: float = 1.0
    nvml: bool = True
    codecarbon: bool = True
    country_iso_code: str = "USA"
    codecarbon_measure_s: float = 1.0


@dataclass
class TrackingConfig:
    """MLflow: any tracking URI; None is a SQLite store under `runs_dir`."""

    uri: str | None = None
    experiment: str = "cpr"
    enabled: bool = True


@dataclass
class ClusterConfig:
    """Where the workers run: a local Ray instance (address None) or an existing cluster."""

    address: str | None = None
    """None: start Ray on this machine; "auto" or "host:port": join a running cluster."""
    num_workers: int = 2
    """Data-parallel ranks (one Ray actor each) the job starts with."""
    min_workers: int | None = None
    """Fewest ranks the scheduler may shrink it to while others wait (None: num_workers, never shrunk)."""
    max_workers: int | None = None
    """Most ranks the scheduler may grow it to while it pays above η (None: num_workers, never grown).
    A resize is a checkpoint-restart; the global batch stays micro_batch × grad_accum × num_workers sequences."""
    resize_cooldown_s: float = 120.0
    """Least time between two resizes of this job (each costs a checkpoint-restart)."""
    cpus_per_worker: int = 1
    gpus_per_worker: int = 0
    """0 on CPU (gloo); 1 for one rank per GPU (NCCL)."""
    memory_gb_per_worker: float | None = None
    """Memory a rank may use; None: the node's memory divided by the ranks placed on it."""
    backend: str | None = None
    """gloo | nccl; None: nccl with GPUs, gloo without."""
    num_cpus: int | None = None
    """Local Ray only: logical CPUs to declare (None: this machine's count)."""
    namespace: str = "cpr"
    dashboard: bool = False
    """Start the Ray dashboard (local Ray or a detached head only); it has no authentication."""
    dashboard_host: str = "127.0.0.1"
    """Address the Ray dashboard listens on; 127.0.0.1 keeps it on this machine."""
    metrics_export_port: int | None = None
    """Local Ray only: the port of this node's Ray metrics agent, where Prometheus scrapes Ray's and the controller's
    metrics (`ray_cpr_*`); None: Ray picks one and lists it in /tmp/ray/prom_metrics_service_discovery.json."""
    max_restarts: int = 3
    """Times a job's gang may lose a rank (a killed or crashed process, a lost node) and be restarted from its last
    checkpoint before the job fails; a rank's Python exception fails the job at once."""


@dataclass
class JobConfig:
    """One pretraining job: the root of `conf/config.yaml`."""

    name: str = "cpr"
    seed: int = 0
    detach: bool = False
    """Return at once with the job id; the job runs on in the Ray cluster."""
    priority: int = 5
    """0 (lowest) to 9 (highest): the order in which queued jobs get the pool's free slots."""
    group: str | None = None
    """Jobs of one group (e.g. a sweep: `cpr submit -m train.lr=1e-3,3e-3 group=lr`) compete for its best Ψ: the
    scheduler stops a job whose forecast Ψ at its budget is below the best Ψ another already reached."""
    runs_dir: str = "cpr_runs"
    """Local home of the default MLflow store, checkpoints and the controller's state."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
