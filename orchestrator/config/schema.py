"""The typed config of a pretraining job: Hydra structured configs (dataclasses) that also carry pydantic constraints.

Every default lives here (or in the pure core, read from there); `conf/` holds only overrides. OmegaConf checks the
types, the enums and unknown keys while Hydra composes `conf/`; `check_fields` then applies the `Annotated` field
constraints (ranges, patterns) with pydantic, and `validate.validate_job` what needs more than one field. Derived
values (tokens per step, world sizes, the stop rule's settings…) are methods here, so each is computed in one place.
Every field is a key users set from the command line, e.g. `cpr submit stop.max_loss=0.02 cluster.num_workers=2`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError, with_config

from orchestrator.core import stop_rule
from orchestrator.core.cooldown import CooldownPlan
from orchestrator.core.lr_schedule import LrSchedule, budget_decay_steps
from orchestrator.core.probe_sizing import ProbeSizing
from orchestrator.core.psi import GENERAL, LOSS_UNITS, SCORE_UNITS, PsiKind, PsiSpec, default_name, normalised
from orchestrator.core.scheduling import PRIORITY_MAX, PRIORITY_MIN
from orchestrator.errors import InputError
from orchestrator.notify.events import DEFAULT_EVENTS, JOB_EVENTS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from orchestrator.adapt import LinearShape, SelectionRequest, SubmoduleInput
    from orchestrator.core.gradmass import HistogramSpec
    from orchestrator.core.resource_model import ResourceModel
    from orchestrator.core.stop_rule import StopRuleConfig

MAX_COUNT = 10**15
"""The largest count, interval or token budget a job may name (more is a typo or an attack)."""
MAX_SEED = 2**32 - 1
MAX_MODEL_DIM = 1 << 20
"""Hidden, MLP and vocabulary widths, positions."""
MAX_MODEL_DEPTH = 4096
"""Layers, heads."""
MAX_HISTOGRAM_BINS = 4096
"""The probe all-reduces groups × bins numbers: keep that small."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
"""Job and group names, which become folder names."""
NOT_BLANK = r"\S"

# pydantic applies these when a config is checked; OmegaConf's type hints drop `Annotated` and see the plain type.
STRICT = ConfigDict(allow_inf_nan=False, revalidate_instances="always", extra="forbid")


def _ints(lo: int, hi: int = MAX_COUNT) -> Any:
    return Field(ge=lo, le=hi)


Count = Annotated[int, _ints(1)]
"""A positive count or interval."""
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


class Arch(StrEnum):
    llama = "llama"
    gpt2 = "gpt2"


class DataSource(StrEnum):
    """stdlib (this interpreter's standard-library sources) | text_dir | hf_files | memmap (pre-tokenized)."""

    stdlib = "stdlib"
    text_dir = "text_dir"
    hf_files = "hf_files"
    memmap = "memmap"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"


class Optimizer(StrEnum):
    adamw = "adamw"
    adam = "adam"


class Schedule(StrEnum):
    """wsd (warm-up, stable, decay: the LR decays over the budget's last cooldown_fraction, or over a cool-down from
    a STOP) | constant (after warm-up) | cosine (to min_lr_fraction·lr at max_tokens)."""

    wsd = "wsd"
    constant = "constant"
    cosine = "cosine"


class OnStop(StrEnum):
    """What a STOP (the rule's, a user's or the Γ cap's) does under train.schedule=wsd: cool the LR down, or halt."""

    cooldown = "cooldown"
    halt = "halt"


class Backend(StrEnum):
    gloo = "gloo"
    nccl = "nccl"


class Statistic(StrEnum):
    """How the probe summarises per-batch norms (§5 "Fidelity")."""

    mean = "mean"
    median = "median"


class PrivacyMode(StrEnum):
    """How blueprints protect the probe's statistics (docs/blueprints.md "Privacy"): none | noise (clipped, noised
    norms and CI bounds; no stated guarantee) | dp (the Gaussian mechanism on clipped per-batch means with (ε, δ) from
    an RDP accountant; every other statistic withheld)."""

    none = "none"
    noise = "noise"
    dp = "dp"


# OmegaConf looks enum members up by name, and these names have hyphens: the functional form allows them.
FitMethod = StrEnum("FitMethod", [("binned-mle", "binned-mle"), ("rank-lstsq", "rank-lstsq")], module=__name__)
"""binned-mle | rank-lstsq: how the power-law exponent α is fitted to each magnitude histogram."""


@with_config(STRICT)
@dataclass
class ModelConfig:
    """A decoder-only transformer built from config with `transformers` (never downloaded); default: llama-tiny."""

    name: str = "llama-tiny"
    arch: Arch = Arch.llama
    hidden_size: Annotated[int, _ints(1, MAX_MODEL_DIM)] = 64
    num_layers: Annotated[int, _ints(1, MAX_MODEL_DEPTH)] = 2
    num_heads: Annotated[int, _ints(1, MAX_MODEL_DEPTH)] = 2
    num_kv_heads: Annotated[int, _ints(1, MAX_MODEL_DEPTH)] | None = None
    """Llama grouped-query attention (a divisor of num_heads); None: as many as num_heads."""
    intermediate_size: Annotated[int, _ints(1, 4 * MAX_MODEL_DIM)] | None = 172
    """MLP width; None: the architecture's default for hidden_size."""
    max_position_embeddings: Annotated[int, _ints(1, MAX_MODEL_DIM)] = 128
    tie_word_embeddings: bool = False
    vocab_size: Annotated[int, _ints(2, MAX_MODEL_DIM)] | None = None
    """None: the tokenizer's vocabulary size."""
    dropout: Annotated[float, Field(ge=0.0, le=0.9)] = 0.0


@with_config(STRICT)
@dataclass
class DomainConfig:
    """A named validation domain (e.g. code, prose) the gradient probe measures besides the job's own set (App. A).

    Read like `data`, tokenized with the job's tokenizer; every document is used (none is trained on)."""

    source: DataSource = DataSource.text_dir
    """A memmap domain is a folder whose val.bin is already tokenized for this job."""
    path: StrictStr | None = None  # strict: a command-line mapping is not type-checked by OmegaConf
    glob: StrictStr | None = None
    """Files to take (stdlib: relative to the standard library; default: all its library sources)."""
    text_field: StrictStr = "text"
    hf_format: StrictStr | None = None
    max_files: Annotated[StrictInt, _ints(1)] | None = None


DomainName = Annotated[str, Field(pattern=NAME_PATTERN)]


@with_config(STRICT)
@dataclass
class DataConfig:
    """Where the training text comes from; tokenized once and cached next to the data."""

    name: str = "stdlib"
    source: DataSource = DataSource.stdlib
    path: str | None = None
    """text_dir: a folder; hf_files: a file or folder; memmap: a folder with train.bin, val.bin, meta.json."""
    glob: str | None = None
    """Files to take under `path` (text_dir default: **/*.txt); stdlib: relative to the standard library, e.g.
    test/test_*.py (default: its library sources)."""
    text_field: str = "text"
    hf_format: str | None = None
    """json | csv | parquet | text; None: from the file suffix."""
    val_every: Annotated[int, _ints(2)] = 6
    """Every n-th document is held out for validation (Ψ)."""
    max_files: Annotated[int, _ints(2)] | None = 150
    """None: every file. The default job is data-constrained on purpose (the stop rule needs a flat part to find)."""
    tokenizer_vocab: Annotated[int, _ints(257, MAX_MODEL_DIM)] = 4096
    """Size of the byte-level BPE tokenizer trained on the training split (not read when `tokenizer` is set)."""
    tokenizer: str | None = None
    """A Hugging Face `tokenizers` file (tokenizer.json, as `Tokenizer.save` or `save_pretrained` writes it) or a
    folder holding one: the corpus is encoded with it instead of a trained tokenizer (an adaptation job uses its
    base model's); it must have the <|endoftext|> token. Not for a memmap corpus, whose ids are already made."""
    cache_dir: str | None = None
    selection: str | None = None
    """A selection manifest written by `cpr select` (docs/select.md): train on its kept windows of this corpus only
    (the same token budget, drawn from fewer tokens). Refused when it was made for another corpus or tokenizer."""
    domains: dict[str, Any] = field(default_factory=dict)
    """Validation domains for the gradient probe's per-domain weights (blueprint `domain_tags`) and Ψ's mix
    (`psi=domains`): name -> the fields of DomainConfig, e.g. `+data.domains.code={source:text_dir,path:/data/code}`.
    Read through `domain_configs()` (a typed dict here would refuse that command-line form)."""

    def domain_configs(self) -> dict[str, DomainConfig]:
        """`domains` as DomainConfig objects; a bad name, unknown key or wrong value names its field."""
        from orchestrator.blueprints.builder import GENERAL_DOMAIN  # the job's own validation set, always probed

        out: dict[str, DomainConfig] = {}
        for name, raw in self.domains.items():
            where = f"data.domains.{name}"
            requirement = f"a name of letters, digits, '_', '.', '-' other than {GENERAL_DOMAIN!r}"
            check_value(_adapter(DomainName), name, where, requirement)
            if name == GENERAL_DOMAIN:
                raise InputError(where, f"must be {requirement}", "e.g. data.domains.code")
            if not isinstance(raw, DomainConfig):
                if not isinstance(raw, dict):
                    raise InputError(where, f"must be a mapping of source, path, glob, ..., got {raw!r}"[:200], None)
                raw = _checked(_adapter(DomainConfig), raw, where)
            if raw.source != DataSource.stdlib and not (raw.path and raw.path.strip()):
                raise InputError(f"{where}.path", f"is required for source={raw.source}", f"e.g. {where}.path=/data")
            out[name] = raw
        return out


@with_config(STRICT)
@dataclass
class DeepSpeedConfig:
    """The DeepSpeed engine's ZeRO stage, precision and optimizer."""

    zero_stage: Annotated[int, _ints(0, 3)] = 2
    precision: Precision = Precision.fp32
    optimizer: Optimizer = Optimizer.adamw

    @property
    def bytes_per_value(self) -> int:
        """Bytes of one activation value at this precision."""
        return 2 if self.precision == Precision.bf16 else 4


@with_config(STRICT)
@dataclass
class TrainConfig:
    """The optimisation loop; `max_tokens` is the job's token budget and the length of the LR schedule."""

    seq_len: Annotated[int, _ints(2)] = 128
    """A sequence needs an input and a target token."""
    micro_batch: Count = 32
    """Sequences per rank per micro-step (× 2 ranks: 64 sequences, 8,192 tokens per optimizer step by default)."""
    grad_accum: Count = 1
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 5e-3
    schedule: Schedule = Schedule.wsd
    """Warm-up, stable, decay: constant until a STOP (or the budget's last `cooldown_fraction`), so the loss curve's
    flattening the rule reads is the model's, not the schedule's; a STOP then cools the LR down (docs/cooldown.md)."""
    warmup_steps: Annotated[int, _ints(0)] = 20
    min_lr_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    """Where a cosine schedule or a decay ends, as a fraction of lr."""
    cooldown_shape: str = "1-sqrt"
    """The decay's shape: linear | cosine | 1-sqrt (1 − √p, Hägele et al. 2024's best)."""
    cooldown_fraction: Annotated[float, Field(gt=0.0, le=0.5)] = 0.2
    """A STOP's cool-down is this fraction of the steps trained so far (and the budget's own decay this fraction of
    the budget), rounded up to whole evaluation intervals."""
    cooldown_steps: Annotated[int, _ints(1)] | None = None
    """A fixed cool-down (and budget decay) length in optimizer steps instead of cooldown_fraction."""
    weight_decay: Annotated[float, Field(ge=0.0, le=10.0)] = 0.1
    beta1: Annotated[float, Field(ge=0.0, le=0.999999)] = 0.9
    beta2: Annotated[float, Field(ge=0.0, le=0.999999)] = 0.95
    grad_clip: Annotated[float, Field(ge=0.0, le=1e6)] = 1.0
    """0 turns clipping off."""
    max_tokens: Count = 6_291_456
    """The token budget: 768 optimizer steps of the default job, ~10 epochs of the default data."""
    eval_interval: Count = 8
    """Optimizer steps between evaluation checks (each check feeds Ψ to the stop rule)."""
    eval_sequences: Count = 64
    """Held-out sequences per evaluation, the same on every check."""
    report_interval: Count = 4
    """Optimizer steps between training reports (loss, tokens) to the controller."""
    checkpoint_dir: str | None = None
    """None: <runs_dir>/checkpoints/<job id>."""
    checkpoint_interval: Annotated[int, _ints(0)] | None = None
    """Optimizer steps between periodic DeepSpeed checkpoints (a multiple of eval_interval: one is taken only after
    a finite evaluation check); a gang that loses a rank restarts from the latest. None: every 4th check; 0: only
    at the end."""
    keep_checkpoints: Count = 2
    """Periodic checkpoints kept on disk (older ones are deleted); the final one is always kept."""
    threads_per_worker: Count | None = None
    """torch intra-op threads per rank; None: cluster.cpus_per_worker."""

    def checkpoint_steps(self) -> int:
        """Steps between periodic checkpoints: checkpoint_interval, or every 4th evaluation check (0: none)."""
        return 4 * self.eval_interval if self.checkpoint_interval is None else self.checkpoint_interval


@with_config(STRICT)
@dataclass
class StopConfig:
    """The marginal-return stop rule (§3): stop when ΔΨ/ΔΓ over `window` checks < η for `patience` checks.

    η is budget-aware by default (`max_loss` = δ: stop when the rest of the token budget would buy less than δ of the
    run's gain); `eta` (absolute) or `eta_rel` (ρ·r_ref) replace it. The defaults and the checks of these values
    live in `core.stop_rule` (`cpr replay` uses them too); `rule_config()` applies them."""

    enforce: bool = True
    """False: shadow mode, decisions are logged but the job runs to its budget."""
    resource: str = "energy_kwh"
    """A `core.resources.ResourceKind` value."""
    max_loss: float | None = None
    """δ in (0, 0.5]; None with neither eta nor eta_rel set: core.stop_rule.DEFAULT_MAX_LOSS."""
    eta: float | None = None
    eta_rel: float | None = None
    """ρ: η = ρ·r_ref (first positive window ratio after warm-up)."""
    window: Annotated[int, Field(le=MAX_COUNT)] = stop_rule.DEFAULT_WINDOW
    patience: Annotated[int, Field(le=MAX_COUNT)] = stop_rule.DEFAULT_PATIENCE
    min_checks: Annotated[int, Field(le=MAX_COUNT)] = stop_rule.DEFAULT_MIN_CHECKS
    min_fraction: float = 0.0
    budget: float | None = None
    """Cap on Γ of `resource`, in its units; None: only the token budget (train.max_tokens) caps the job."""
    estimator: str = "lstsq"
    """A `core.slopes.SlopeEstimator` value."""
    on_stop: OnStop = OnStop.cooldown
    """Under train.schedule=wsd, a STOP by the rule (marginal_return), a user or the Γ cap (budget) first trains a
    learning-rate cool-down, then ends (`cooldown`), or ends at once (`halt`). A divergence, the scheduler's
    `dominated` and an interrupt always halt."""
    max_nonfinite: Annotated[int, Field(le=MAX_COUNT)] = 3
    """The tolerance for non-finite training: this many successive NaN/Inf validation losses (Ψ), or training-loss
    reports, stop the job as `diverged` (it keeps its last checkpoint of a finite state)."""

    def rule_config(self) -> StopRuleConfig:
        """The pure core's rule settings (which check themselves: InputError naming the `stop.` field)."""
        from orchestrator.core.resources import ResourceKind
        from orchestrator.core.stop_rule import StopRuleConfig

        return StopRuleConfig(
            resource=ResourceKind.parse(self.resource, field="stop.resource"),
            window=self.window,
            patience=self.patience,
            max_loss=self.max_loss,
            eta=self.eta,
            eta_rel=self.eta_rel,
            min_checks=self.min_checks,
            min_fraction=self.min_fraction,
            budget=self.budget,
            estimator=self.estimator,  # type: ignore[arg-type]
            max_nonfinite=self.max_nonfinite,
        )


@with_config(STRICT)
@dataclass
class HistogramConfig:
    """Magnitude-histogram bins of the probe: [0, lo), log bins lo..hi, [hi, inf) (`HistogramSpec`)."""

    lo: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-12
    hi: Annotated[float, Field(gt=0.0, le=1e30)] = 1e4
    bins_per_decade: Count = 8

    def spec(self) -> HistogramSpec:
        """The bins as the core's HistogramSpec. A range too narrow for the gradients is met by the first probe,
        which then fails the job naming probe.histogram.hi (nothing may land at or above hi)."""
        from orchestrator.core.gradmass import HistogramSpec

        if not self.hi > self.lo:
            raise InputError("probe.histogram.hi", f"must be above probe.histogram.lo ({self.lo:g})", "e.g. 1e4")
        spec = HistogramSpec(lo=float(self.lo), hi=float(self.hi), bins_per_decade=self.bins_per_decade)
        if spec.n_bins > MAX_HISTOGRAM_BINS:
            raise InputError(
                "probe.histogram.bins_per_decade",
                f"gives {spec.n_bins} bins over {self.lo:g}..{self.hi:g}, more than {MAX_HISTOGRAM_BINS}",
                "fewer bins per decade or a narrower range",
            )
        return spec


@with_config(STRICT)
@dataclass
class ProbeConfig:
    """The gradient probe and the blueprints it feeds (§5, App. A): what is measured, when, and how it is summarised."""

    enabled: bool = True
    interval: Count = 250
    """A periodic probe (logged as grad/norm/<id>) runs when no probe has run for this many optimizer steps;
    blueprint checkpoints probe as well, and count."""
    batches: Count = 4
    """Most validation batches each rank probes per domain (each is one sample of every submodule's norm)."""
    min_batches: Count = 1
    """Fewest batches each rank probes per domain, whatever the time budget says."""
    max_share: Fraction | None = 0.02
    """Most of the training time the probes may take: each probe takes as many batches (min_batches..batches) as
    this share of the training loop's time so far leaves it; None: always `batches` (docs/overhead.md)."""
    ci_target: Fraction | None = 0.1
    """A probe stops early once every submodule's ci_level t-interval of its mean norm is within this fraction of
    the mean; None: never early."""
    checkpoints: Annotated[list[Fraction], Field(min_length=1)] = field(default_factory=lambda: [0.25, 0.5, 0.8, 1.0])
    """Fractions of train.max_tokens at which a blueprint is published; one is also published at a STOP. The
    default run usually stops near 40 %: 0.25 gives it a blueprint before its STOP."""
    domains: list[str] | None = None
    """Names from data.domains to probe at blueprint checkpoints; None: all of them (see `JobConfig.probe_domains`)."""
    histogram: HistogramConfig = field(default_factory=HistogramConfig)
    statistic: Statistic = Statistic.mean
    """The statistic of the per-batch norms, with a bootstrap CI."""
    ci_level: Annotated[float, Field(gt=0.0, le=0.999999)] = 0.95
    n_resamples: Count = 1000
    fit_method: FitMethod = FitMethod["binned-mle"]  # type: ignore[valid-type]
    fit_min_tail: Annotated[int, _ints(10)] = 100
    """Fewest values in a power-law tail for its fit to support a recommendation (docs/blueprints.md)."""
    fit_min_tail_share: Fraction = 0.1
    """Least share of a submodule's entries in the tail for its fit to support a recommendation."""
    fit_p_level: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    """Significance at which a likelihood-ratio test's preference for the exponential withholds a recommendation."""
    top_k: Fraction = 0.1
    """Fraction k of a submodule's entries whose share of gradient mass, m(k), is logged (grad/topk_share/<id>)."""
    privacy: PrivacyMode = PrivacyMode.none
    """none | noise | dp: what protects the published statistics (recorded in the file's `privacy`)."""
    noise_multiplier: Annotated[float, Field(ge=0.0, le=1e6)] = 0.0
    """z, > 0 with privacy noise or dp: the noise's std is σ = z·noise_clip (noise), z·noise_clip/n for a mean of n
    probe batches (dp)."""
    noise_clip: Annotated[float, Field(gt=0.0, le=1e30)] = 1.0
    """C: each published norm (noise) or each per-batch norm before the mean (dp) is clipped to C."""
    dp_delta: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5
    """δ of the (ε, δ) a dp blueprint states; ε follows from noise_multiplier and the queries released so far."""
    model_id: str | None = None
    """The blueprints' model id; None: the job id."""

    def sizing(self) -> ProbeSizing:
        """How many batches each probe takes (core/probe_sizing.py)."""
        return ProbeSizing(
            min_batches=self.min_batches,
            max_batches=self.batches,
            # Under DP n is fixed by the config and public (docs/blueprints.md): always `batches`.
            ci_target=None if self.privacy == PrivacyMode.dp else self.ci_target,
            ci_level=self.ci_level,
            max_share=None if self.privacy == PrivacyMode.dp else self.max_share,
        )


@with_config(STRICT)
@dataclass
class PsiConfig:
    """What Ψ, the capability the stop rule weighs against Γ, measures (§3); higher is always better. docs/psi.md."""

    kind: PsiKind = PsiKind.val_loss
    """val_loss: −validation loss (the default); domains: −Σ w_d·loss_d over held-out domains; fn: a user score."""
    name: Annotated[str, Field(pattern=NOT_BLANK, max_length=64)] | None = None
    """Logged as the MLflow param psi.name and on every figure; None: -val_loss, -domain_mix_loss or the function's
    name."""
    units: Annotated[str, Field(pattern=NOT_BLANK, max_length=64)] | None = None
    """None: nats/token for the loss kinds, "score" for fn."""
    weights: dict[str, float] = field(default_factory=dict)
    """domains: weight per domain ("general" = the job's own validation split, else a name from data.domains),
    normalised to sum 1; add one with `+psi.weights.code=1`, drop one with `~psi.weights.general`."""
    fn: str | None = None
    """fn: `package.module:function`, called on the rank-0 model at each check as fn(model, tokenizer, device) and
    returning a float, higher is better."""

    def spec(self) -> PsiSpec:
        """Ψ's definition for the core and the run's params: default name and units filled in, weights normalised."""
        weights = normalised(self.weights) if self.kind is PsiKind.domains else {}
        units = self.units or (SCORE_UNITS if self.kind is PsiKind.fn else LOSS_UNITS)
        fn = self.fn if self.kind is PsiKind.fn else None
        name = self.name or default_name(self.kind, fn)
        return PsiSpec(kind=self.kind, name=name, units=units, weights=weights, fn=fn)

    def domains(self) -> list[str]:
        """The data.domains Ψ's mix evaluates at every check besides the job's own validation split."""
        return [d for d in self.weights if d != GENERAL] if self.kind is PsiKind.domains else []

    def function(self) -> Callable[..., Any]:
        """The callable `fn` names, its module imported; InputError on psi.fn when it cannot be."""
        fix = "give package.module:function, e.g. psi.fn=orchestrator.examples.psi_score:next_token_accuracy"
        path = self.fn or ""
        module_name, sep, attr = path.partition(":")
        if not sep or not module_name.strip() or not attr.strip():
            raise InputError("psi.fn", f"must be module:function, got {shown(self.fn)}", fix)
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as exc:  # whatever the user's module raises while importing, it is the same bad input
            problem = f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
            raise InputError("psi.fn", problem[:300], fix) from None
        for part in attr.split("."):
            target = getattr(target, part, None)
        if not callable(target):
            raise InputError("psi.fn", f"{attr!r} of module {module_name!r} is not a callable"[:300], fix)
        return target


class AdaptStrategy(StrEnum):
    """`orchestrator.adapt.Strategy` by the names OmegaConf matches (its members' names are upper case)."""

    blueprint = "blueprint"
    local = "local"
    full = "full"
    last_k = "last_k"
    lisa = "lisa"
    inverse = "inverse"
    lora = "lora"


class OnDriftMode(StrEnum):
    blocks = "blocks"
    local = "local"


@with_config(STRICT)
@dataclass
class AdaptConfig:
    """`cpr adapt`: fine-tune a base model on the job's data (the target domain), training only the submodules a
    selection strategy picks (the paper's Algorithm 1; docs/adapt.md). Unused while `base` is null (pretraining)."""

    base: str | None = None
    """The model to adapt: a cpr job id (or its folder; its checkpoint is exported as by `cpr export`) or a Hugging
    Face `save_pretrained` folder (`cpr export`'s bundle). Its architecture and tokenizer become the job's."""
    step: Annotated[int, _ints(1)] | None = None
    """The base job's checkpoint step; None: its newest."""
    blueprint: str | None = None
    """`MODEL_ID[:vN]` in the local blueprint store, or a blueprint JSON file; None: the newest blueprint shipped
    with the base (its job's, or the bundle's `blueprints/`)."""
    strategy: AdaptStrategy = AdaptStrategy.blueprint
    """blueprint, local, full, last_k, lisa, inverse or lora: which submodules to train (`adapt=<strategy>`)."""
    a: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    """The blend G′ = a·Ḡ + (1 − a)·G̃ of the blueprint's and the local gradient shares (Algorithm 1 step 2)."""
    memory_gb: Annotated[float, Field(gt=0.0, le=1e6)] | None = None
    """Per-rank memory budget in GB for the frozen model plus what the trained part costs; None: no memory budget."""
    max_fraction: Fraction | None = 0.4
    """The largest share of the model's parameters trained; None: no parameter budget."""
    rho_threshold: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.7
    """Drift: below this Spearman ρ(Ḡ, G̃) the selection falls back (`on_drift`)."""
    on_drift: OnDriftMode = OnDriftMode.blocks
    """blocks: select whole transformer blocks (a kept if the blocks agree); local: a = 0."""
    probe_batches: Count = 4
    """Micro-batches per rank of the target's training split the local gradient sample G̃ is measured on."""
    lisa_interval: Count = 50
    """lisa: optimizer steps between two draws of the trained blocks."""
    lora_alpha: Annotated[float, Field(gt=0.0, le=1e6)] | None = None
    """lora: LoRA's scaling numerator; None: twice the rank."""
    joint: bool = True
    """With a `data.selection` whose manifest carries the cross-influence map: the blueprint's norms become the map's
    influence on the kept data blocks (parameters and data chosen together; docs/select.md). False: the blueprint's."""

    @property
    def enabled(self) -> bool:
        return self.base is not None


class SelectScore(StrEnum):
    """How `cpr select` ranks the corpus's windows (docs/select.md)."""

    predicted = "predicted"
    """Ĵ = f_φ(cheap features): the predicted per-example gradient norm (Algorithm 2)."""
    loss = "loss"
    """The base model's loss on the window (the loss-based baseline)."""
    random = "random"
    """A seeded random draw (the baseline every selection must beat)."""


class SelectBlocks(StrEnum):
    """The data blocks of the cross-influence map."""

    folder = "folder"
    """A window's document's top folder under the corpus root (the stdlib: its packages)."""
    cluster = "cluster"
    """k-means clusters of the windows' pooled hidden states (`select.clusters`)."""


@with_config(STRICT)
@dataclass
class SelectConfig:
    """`cpr select`: score the corpus's training windows by their predicted gradient norm under a base model and
    keep the top fraction (the paper's Algorithm 2; docs/select.md). Unused while `base` is null."""

    base: str | None = None
    """The scoring model: a cpr job id (its checkpoint, exported as by `cpr export`) or a save_pretrained folder."""
    step: Annotated[int, _ints(1)] | None = None
    """The base job's checkpoint step; None: its newest."""
    fraction: Fraction = 0.5
    """q: the share of windows kept."""
    skip_top: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """The highest-scoring share passed over before the q kept (q + skip_top ≤ 1). Gradient-norm scores rank
    degenerate windows (runs of one character, tables) highest; keeping from an offset is EL2N's remedy (Paul et al.
    2021). 0: Algorithm 2 as written."""
    score: SelectScore = SelectScore.predicted
    length_correction: bool = True
    """predicted: regress log-length out of log Ĵ (raw gradient norms favour short windows)."""
    sample: Count = 512
    """|D_small|: windows whose true per-example gradient norm J is computed (the predictor's training set)."""
    holdout: Annotated[float, Field(ge=0.1, le=0.5)] = 0.25
    """The share of D_small held out to measure the predictor's Spearman ρ against the true J."""
    min_tokens: Annotated[int, _ints(2)] = 16
    """Windows shorter than this (a document's short tail) are not scored and never kept."""
    grad_batch: Count = 16
    """Windows per vmap call of the per-example gradients (memory: grad_batch × the model's parameters)."""
    blocks: SelectBlocks = SelectBlocks.folder
    clusters: Annotated[int, _ints(2, 1024)] = 8
    """blocks=cluster: k of k-means."""
    rank: Annotated[int, _ints(1, 64)] = 3
    """Singular vectors of the cross-influence map kept in the blueprint."""
    output: str | None = None
    """Where the manifest is written; None: <runs_dir>/selections/<id>.json."""

    @property
    def enabled(self) -> bool:
        return self.base is not None


@with_config(STRICT)
@dataclass
class TelemetryConfig:
    """Per-rank energy/power/memory sampling: NVML for GPUs, codecarbon for CPU/RAM and carbon."""

    enabled: bool = True
    interval_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 2.0
    """Seconds between a rank's readings; each evaluation check also takes one, and sends the readings kept."""
    nvml: bool = True
    codecarbon: bool = True
    country_iso_code: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")] = "USA"
    """An ISO 3166-1 alpha-3 code, e.g. USA, FRA, DEU."""
    codecarbon_measure_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 1.0
    """Least seconds between two codecarbon measurements (each walks /proc); a reading sooner reuses the last."""


@with_config(STRICT)
@dataclass
class TrackingConfig:
    """MLflow: any tracking URI; None is a SQLite store under `runs_dir`."""

    uri: str | None = None
    experiment: Annotated[str, Field(pattern=NOT_BLANK)] = "cpr"
    enabled: bool = True


@with_config(STRICT)
@dataclass
class NotifyConfig:
    """Where a job's decisions are pushed (docs/notify.md): Apprise URLs (Slack, Discord, Teams, e-mail, ntfy…), a
    JSON webhook signed with HMAC-SHA256, a command with the event on stdin. Nothing set: no notifications."""

    urls: list[str] = field(default_factory=list)
    """Apprise URLs, e.g. `notify.urls=[ntfy://ntfy.sh/my-topic]`; masked in params and logs."""
    webhook: Annotated[str, Field(pattern=NOT_BLANK)] | None = None
    """An http(s) URL that gets each event as a JSON POST (masked in params and logs)."""
    secret: Annotated[str, Field(min_length=1)] | None = None
    """Signs the webhook's body: header X-CPR-Signature-256 = sha256=HMAC-SHA256(secret, body), as GitHub signs
    webhooks. Read it from the environment: `notify.secret=${oc.env:CPR_NOTIFY_SECRET}`."""
    command: Annotated[str, Field(pattern=NOT_BLANK)] | None = None
    """A program (and its arguments, split as a shell would, no shell run) that gets each event as JSON on stdin."""
    on: list[str] = field(default_factory=lambda: list(DEFAULT_EVENTS))
    """Which events are sent: stop, diverged, shadow, reallocation, blueprint, failed."""
    timeout_s: Annotated[float, Field(gt=0.0, le=300.0)] = 10.0
    """One attempt's limit (connect and read)."""
    retries: Annotated[int, _ints(0, 20)] = 3
    """Attempts after the first, with exponential backoff (backoff_s · 2^k, jittered, at most 60 s)."""
    backoff_s: Annotated[float, Field(ge=0.0, le=600.0)] = 2.0
    flush_s: Annotated[float, Field(ge=0.0, le=600.0)] = 10.0
    """An attached `cpr submit` waits at most this long at the end for the last deliveries (a detached
    controller goes on retrying)."""

    @property
    def enabled(self) -> bool:
        return bool(self.urls or self.webhook or self.command)

    def events(self) -> tuple[str, ...]:
        """The events sent (none when no channel is set); an unknown name is refused naming `notify.on`."""
        known = {e.value for e in JOB_EVENTS}
        if self.secret is not None and self.webhook is None:
            raise InputError("notify.secret", "signs the webhook's body, and no notify.webhook is set", "set both")
        for i, name in enumerate(self.on):
            if name not in known:
                raise InputError(f"notify.on[{i}]", f"unknown event {name!r}", f"one of {', '.join(sorted(known))}")
        return tuple(dict.fromkeys(self.on)) if self.enabled else ()


@with_config(STRICT)
@dataclass
class ClusterConfig:
    """Where the workers run: a local Ray instance (address None) or an existing cluster."""

    address: Annotated[str, Field(pattern=NOT_BLANK)] | None = None
    """None: start Ray on this machine; "auto" or "host:port": join a running cluster."""
    num_workers: Count = 2
    """Data-parallel ranks (one Ray actor each) the job starts with."""
    min_workers: Count | None = None
    """Fewest ranks the scheduler may shrink it to while others wait (None: num_workers, never shrunk)."""
    max_workers: Count | None = None
    """Most ranks the scheduler may grow it to while it pays above η (None: num_workers, never grown).
    A resize is a checkpoint-restart; the global batch stays micro_batch × grad_accum × num_workers sequences."""
    resize_cooldown_s: Annotated[float, Field(ge=0.0, le=1e7)] = 120.0
    """Least time between two resizes of this job (each costs a checkpoint-restart)."""
    cpus_per_worker: Count = 1
    gpus_per_worker: Annotated[int, _ints(0)] = 0
    """0 on CPU (gloo); 1 for one rank per GPU (NCCL)."""
    memory_gb_per_worker: Annotated[float, Field(gt=0.0, le=1e6)] | None = None
    """Memory a rank may use; None: the node's memory divided by the ranks placed on it."""
    backend: Backend | None = None
    """None: nccl with GPUs, gloo without."""
    num_cpus: Count | None = None
    """Local Ray only: logical CPUs to declare (None: this machine's count)."""
    namespace: str = "cpr"
    dashboard: bool = False
    """Start the Ray dashboard (local Ray or a detached head only); it has no authentication."""
    dashboard_host: str = "127.0.0.1"
    """Address the Ray dashboard listens on; 127.0.0.1 keeps it on this machine."""
    metrics_export_port: Annotated[int, _ints(1, 65535)] | None = None
    """Local Ray only: the port of this node's Ray metrics agent, where Prometheus scrapes Ray's and the controller's
    metrics (`ray_cpr_*`); None: Ray picks one and lists it in /tmp/ray/prom_metrics_service_discovery.json."""
    max_restarts: Annotated[int, _ints(0)] = 3
    """Times a job's gang may lose a rank (a killed or crashed process, a lost node) and be restarted from its last
    checkpoint before the job fails; a rank's Python exception fails the job at once."""

    def world_sizes(self) -> list[int]:
        """Every data-parallel size the job may run at, smallest first (just num_workers unless it may resize)."""
        lo = self.num_workers if self.min_workers is None else self.min_workers
        hi = self.num_workers if self.max_workers is None else self.max_workers
        return list(range(lo, hi + 1))

    def slot_unit(self) -> tuple[str, int]:
        """The pool a job's ranks draw from and the slots one rank takes: GPUs when its ranks use GPUs (a GPU is
        the scarce slot there), else CPUs."""
        return ("GPU", self.gpus_per_worker) if self.gpus_per_worker > 0 else ("CPU", self.cpus_per_worker)


@with_config(STRICT)
@dataclass
class JobConfig:
    """One pretraining job: the root of `conf/config.yaml`."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "cpr"
    """1-64 letters, digits, '_', '.', '-' (it names folders)."""
    seed: Annotated[int, _ints(0, MAX_SEED)] = 0
    detach: bool = False
    """Return at once with the job id; the job runs on in the Ray cluster."""
    interrupt_grace_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 25.0
    """An attached `cpr submit` that gets SIGTERM or SIGINT asks for a checkpoint and a STOP, and exits at most this
    many seconds later (143 or 130). Keep it under the scheduler's kill delay: Slurm's KillWait and Kubernetes'
    terminationGracePeriodSeconds are 30 s by default."""
    priority: Annotated[int, _ints(PRIORITY_MIN, PRIORITY_MAX)] = 5
    """0 (lowest) to 9 (highest): queued jobs get the pool's free slots by priority, then submission time."""
    group: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    """Jobs of one group (e.g. a sweep: `cpr submit -m train.lr=1e-3,3e-3 group=lr`) compete for its best Ψ: the
    scheduler stops a job whose forecast Ψ at its budget is below the best Ψ another already reached."""
    runs_dir: Annotated[str, Field(pattern=NOT_BLANK)] = "cpr_runs"
    """Local home of the default MLflow store, checkpoints and the controller's state."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    psi: PsiConfig = field(default_factory=PsiConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def sequences_per_step(self) -> int:
        """Sequences of one optimizer step over all ranks: DeepSpeed's train_batch_size."""
        return self.train.micro_batch * self.train.grad_accum * self.cluster.num_workers

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step over all ranks."""
        return self.train.seq_len * self.sequences_per_step

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the token budget."""
        return self.train.max_tokens // self.tokens_per_step

    def lr_schedule(self) -> LrSchedule:
        """The multiplier on train.lr per optimizer step, as the ranks' LambdaLR calls it."""
        t, total = self.train, self.total_steps
        return LrSchedule(
            kind=t.schedule.value,
            warmup_steps=t.warmup_steps,
            total_steps=total,
            floor=t.min_lr_fraction,
            shape=t.cooldown_shape,
            decay_steps=budget_decay_steps(total, t.cooldown_fraction, t.cooldown_steps),
        )

    def cooldown_plan(self) -> CooldownPlan:
        """Its STOP's cool-down settings, for the controller's tracker."""
        t = self.train
        return CooldownPlan(
            enabled=t.schedule is Schedule.wsd and self.stop.on_stop is OnStop.cooldown,
            shape=t.cooldown_shape,
            fraction=t.cooldown_fraction,
            fixed_steps=t.cooldown_steps,
            eval_interval=t.eval_interval,
            total_steps=self.total_steps,
        )

    def eval_sequences(self) -> int:
        """Held-out sequences of one evaluation over all ranks (per domain of Ψ's mix too): an equal share each."""
        return max(1, self.train.eval_sequences // self.cluster.num_workers) * self.cluster.num_workers

    def world_sizes(self) -> list[int]:
        """Every data-parallel size the job may run at, smallest first."""
        return self.cluster.world_sizes()

    def slot_unit(self) -> tuple[str, int]:
        """The Ray resource its ranks are counted in and the slots one rank takes."""
        return self.cluster.slot_unit()

    def resized(self, world: int) -> JobConfig:
        """The job at another data-parallel size with the same global batch: grad_accum absorbs the change, so the
        tokens per optimizer step, the step count and the LR schedule stay as they were."""
        t = self.train
        return dataclasses.replace(
            self,
            cluster=dataclasses.replace(self.cluster, num_workers=world),
            train=dataclasses.replace(t, grad_accum=self.sequences_per_step // (t.micro_batch * world)),
        )

    def resource_model(self, n_params: int) -> ResourceModel:
        """The per-rank bytes per parameter (optimizer, precision, ZeRO stage, world size and micro-batch
        activations): the memory check at submit and k* in its blueprints (Prop. B.1) both use it."""
        from orchestrator.core.resource_model import activation_bytes, resource_model

        m, t, d = self.model, self.train, self.deepspeed
        return resource_model(
            n_params=n_params,
            optimizer=d.optimizer.value,  # type: ignore[arg-type]
            precision=d.precision.value,  # type: ignore[arg-type]
            zero_stage=d.zero_stage,
            dp_world_size=self.cluster.num_workers,
            activation_bytes=activation_bytes(
                seq_len=t.seq_len,
                micro_batch=t.micro_batch,
                hidden=m.hidden_size,
                n_layers=m.num_layers,
                n_heads=m.num_heads,
                bytes_per_value=d.bytes_per_value,
            ),
        )

    def selection_request(
        self, submodules: Sequence[SubmoduleInput], n_params: int, linear_shapes: Sequence[LinearShape] = ()
    ) -> SelectionRequest:
        """What an adapt job asks its selection strategy (`orchestrator.adapt.select`): these submodules under its
        budget, blend and drift guard, costed by its resource model, drawn (lisa) from its seed."""
        from orchestrator.adapt import Budget, SelectionRequest

        a = self.adapt
        return SelectionRequest(
            submodules=tuple(submodules),
            resource=self.resource_model(n_params),
            budget=Budget(memory_gb=a.memory_gb, max_fraction=a.max_fraction),
            a=a.a,
            rho_threshold=a.rho_threshold,
            on_drift=a.on_drift.value,  # type: ignore[arg-type]
            lisa_interval=a.lisa_interval,
            seed=self.seed,
            linear_shapes=tuple(linear_shapes),
            partial_units=False,  # the engine freezes whole tensors: a unit trains whole or not at all
        )

    def probe_domains(self) -> list[str]:
        """The validation domains the probe measures at blueprint checkpoints (checked against data.domains)."""
        defined = list(self.data.domains)
        if self.probe.domains is None:
            return defined
        for name in self.probe.domains:
            if name not in defined:
                raise InputError(
                    "probe.domains",
                    f"unknown domain {name!r}",
                    f"define it under data.domains (defined: {', '.join(defined) or 'none'})",
                )
        return list(dict.fromkeys(self.probe.domains))

    def held_out_domains(self) -> list[str]:
        """Every data.domains entry the ranks read: the probe's (when it is on) and Ψ's mix."""
        probed = self.probe_domains() if self.probe.enabled else []
        return list(dict.fromkeys([*probed, *self.psi.domains()]))


def shown(value: Any) -> str:
    """A value as an error message shows it: repr, shortened."""
    try:
        text = repr(value)
    except ValueError:  # an integer beyond Python's digit limit for str()
        return "an integer of more than 4300 digits"
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text)} characters)"


@functools.cache
def _adapter(kind: Any) -> TypeAdapter:
    """pydantic's validator of a type, built once."""
    return TypeAdapter(kind)


def _checked(adapter: TypeAdapter, value: Any, where: str) -> Any:
    """`value` validated by `adapter`; the first violation as an InputError naming its field under `where`."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        field_name = (where + loc).lstrip(".")
        problem = error["msg"][:1].lower() + error["msg"][1:]
        if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            raise InputError(field_name, "unknown key", "check the spelling; the schema lists every key") from None
        hint = _default_of(adapter, error["loc"])
        raise InputError(field_name, f"{problem}, got {shown(error['input'])}", hint) from None


def _default_of(adapter: TypeAdapter, loc: tuple[Any, ...]) -> str | None:
    """`default: <value>` of the schema field at `loc` under the adapter's dataclass, if it has a plain one."""
    kind = getattr(adapter, "_type", None)
    default: Any = None
    for part in loc:
        fields = {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}
        if part not in fields:
            return None
        f = fields[part]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = type(default)
    if dataclasses.is_dataclass(default):
        return None
    return f"default: {default.value if isinstance(default, StrEnum) else default}"


def check_value(adapter: TypeAdapter, value: Any, where: str, requirement: str) -> None:
    """One value against a constrained type, refused as `where: must be <requirement>`."""
    try:
        adapter.validate_python(value)
    except ValidationError:
        raise InputError(where, f"must be {requirement}, got {shown(value)}", None) from None


def check_fields(config: Any, where: str = "") -> None:
    """Every field constraint of a config (a JobConfig or one of its parts) with pydantic: InputError naming the
    first field that breaks one."""
    _checked(_adapter(type(config)), config, where)
