"""Value checks of a composed job, before any resource is taken: one InputError naming the field and the fix.

Types and unknown keys were already checked by OmegaConf against the schema; this checks ranges and how fields
fit together. Checks that need the outside world (data on disk, the Ray cluster, the tracking store) live with
the code that talks to it and run in `launch.submit` before anything starts.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from orchestrator.blueprints.builder import FIT_METHODS, GENERAL_DOMAIN, STATISTICS
from orchestrator.blueprints.store import check_model_id
from orchestrator.config.schema import DomainConfig, JobConfig, StopConfig
from orchestrator.core.gradmass import HistogramSpec
from orchestrator.core.resource_model import ResourceModel, activation_bytes, resource_model
from orchestrator.core.resources import ResourceKind
from orchestrator.core.scheduling import PRIORITY_MAX, PRIORITY_MIN
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.data.sources import SOURCES
from orchestrator.errors import InputError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
OPTIMIZERS = ("adamw", "adam")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("constant", "cosine")
BACKENDS = ("gloo", "nccl")
GPU_KINDS = (ResourceKind.GPU_HOURS, ResourceKind.VRAM_GB_HOURS)
ENERGY_KINDS = (ResourceKind.ENERGY_KWH, ResourceKind.CO2_KG)
MAX_HISTOGRAM_BINS = 4096  # the probe all-reduces groups × bins numbers: keep that small
MAX_COUNT = 10**15  # the largest count, interval or token budget a job may name (more is a typo or an attack)
MAX_SEED = 2**32 - 1
MAX_MODEL_DIM = 1 << 20  # hidden, MLP and vocabulary widths, positions
MAX_MODEL_DEPTH = 4096  # layers, heads


def _shown(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer beyond Python's digit limit for str()
        return "an integer of more than 4300 digits"
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text)} characters)"


def _check(field: str, value: Any, ok: bool, requirement: str, fix: str) -> None:
    if not ok:
        raise InputError(field, f"{requirement}, got {_shown(value)}", fix)


def _int_at_least(field: str, value: Any, minimum: int, fix: str, maximum: int = MAX_COUNT) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _check(field, value, ok, f"must be an integer ≥ {minimum}", fix)
    _check(field, value, value <= maximum, f"must be at most {maximum:,}", fix)


def _optional_int(field: str, value: Any, minimum: int, maximum: int, fix: str) -> None:
    if value is not None:
        _int_at_least(field, value, minimum, fix, maximum)


def _number_in(field: str, value: Any, lo: float, hi: float, fix: str, *, lo_open: bool = False) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**1000) < value < 2**1000:
        value = math.copysign(math.inf, value)  # beyond float range: refused below like inf, without OverflowError
    ok = isinstance(value, int | float) and math.isfinite(value) and (value > lo if lo_open else value >= lo)
    ok = ok and value <= hi
    bracket = "(" if lo_open else "["
    _check(field, value, ok, f"must be a number in {bracket}{lo:g}, {hi:g}]", fix)


def stop_rule_config(stop: StopConfig) -> StopRuleConfig:
    """The pure core's rule settings from the `stop` config group (raises InputError on bad values)."""
    return StopRuleConfig(
        resource=ResourceKind.parse(stop.resource, field="stop.resource"),
        window=stop.window,
        patience=stop.patience,
        max_loss=stop.max_loss,
        eta=stop.eta,
        eta_rel=stop.eta_rel,
        min_checks=stop.min_checks,
        min_fraction=stop.min_fraction,
        budget=stop.budget,
        estimator=stop.estimator,  # type: ignore[arg-type]
        max_nonfinite=stop.max_nonfinite,
    )


def job_resource_model(job: JobConfig, n_params: int) -> ResourceModel:
    """The job's per-rank bytes per parameter (its optimizer, precision, ZeRO stage, world size and micro-batch
    activations): the memory check at submit and k* in its blueprints (Prop. B.1) both use it."""
    m, t = job.model, job.train
    return resource_model(
        n_params=n_params,
        optimizer=job.deepspeed.optimizer,  # type: ignore[arg-type]
        precision=job.deepspeed.precision,  # type: ignore[arg-type]
        zero_stage=job.deepspeed.zero_stage,
        dp_world_size=job.cluster.num_workers,
        activation_bytes=activation_bytes(
            seq_len=t.seq_len,
            micro_batch=t.micro_batch,
            hidden=m.hidden_size,
            n_layers=m.num_layers,
            n_heads=m.num_heads,
            bytes_per_value=2 if job.deepspeed.precision == "bf16" else 4,
        ),
    )


def world_sizes(job: JobConfig) -> list[int]:
    """Every data-parallel size the job may run at, smallest first (just num_workers unless it may resize)."""
    c = job.cluster
    lo = c.num_workers if c.min_workers is None else c.min_workers
    hi = c.num_workers if c.max_workers is None else c.max_workers
    return list(range(lo, hi + 1))


def slot_unit(job: JobConfig) -> tuple[str, int]:
    """The pool a job's ranks draw from and the slots one rank takes: GPUs when its ranks use GPUs (a GPU is the
    scarce slot there), else CPUs."""
    c = job.cluster
    return ("GPU", c.gpus_per_worker) if c.gpus_per_worker > 0 else ("CPU", c.cpus_per_worker)


def resized(job: JobConfig, world: int) -> JobConfig:
    """The job at another data-parallel size with the same global batch: grad_accum absorbs the change, so the
    tokens per optimizer step, the step count and the LR schedule stay as they were."""
    t = job.train
    sequences = t.micro_batch * t.grad_accum * job.cluster.num_workers
    return dataclasses.replace(
        job,
        cluster=dataclasses.replace(job.cluster, num_workers=world),
        train=dataclasses.replace(t, grad_accum=sequences // (t.micro_batch * world)),
    )


def checkpoint_interval(job: JobConfig) -> int:
    """Steps between periodic checkpoints: train.checkpoint_interval, or every 4th evaluation check (0: none)."""
    t = job.train
    return 4 * t.eval_interval if t.checkpoint_interval is None else t.checkpoint_interval


def validate_world_sizes(job: JobConfig) -> None:
    """min_workers ≤ num_workers ≤ max_workers, and the global batch splits evenly at every size in between."""
    c, t = job.cluster, job.train
    for name, value in (("cluster.min_workers", c.min_workers), ("cluster.max_workers", c.max_workers)):
        if value is not None:
            _int_at_least(name, value, 1, "or null for cluster.num_workers")
    if c.min_workers is not None and c.min_workers > c.num_workers:
        raise InputError("cluster.min_workers", f"{c.min_workers} is above num_workers ({c.num_workers})", None)
    if c.max_workers is not None and c.max_workers < c.num_workers:
        raise InputError("cluster.max_workers", f"{c.max_workers} is below num_workers ({c.num_workers})", None)
    _number_in("cluster.resize_cooldown_s", c.resize_cooldown_s, 0.0, 1e7, "seconds, e.g. 120")
    steps = t.grad_accum * c.num_workers  # micro-batches per optimizer step, over all ranks
    uneven = [w for w in world_sizes(job) if steps % w]
    if uneven:
        field = "cluster.max_workers" if uneven[-1] > c.num_workers else "cluster.min_workers"
        raise InputError(
            field,
            f"the global batch of {steps} micro-batches (train.grad_accum × cluster.num_workers) does not split "
            f"evenly over {', '.join(map(str, uneven))} ranks",
            "pick sizes that divide it, or raise train.grad_accum",
        )


def tokens_per_step(job: JobConfig) -> int:
    t = job.train
    return t.seq_len * t.micro_batch * t.grad_accum * job.cluster.num_workers


def domain_configs(job: JobConfig) -> dict[str, DomainConfig]:
    """`data.domains` as DomainConfig objects; unknown keys and wrong types name their field."""
    out: dict[str, DomainConfig] = {}
    known = {f.name: f for f in dataclasses.fields(DomainConfig)}
    for name, raw in job.data.domains.items():
        where = f"data.domains.{name}"
        _check(
            where,
            name,
            isinstance(name, str) and bool(NAME_RE.match(name)) and name != GENERAL_DOMAIN,
            f"must be a name of letters, digits, '_', '.', '-' other than {GENERAL_DOMAIN!r}",
            "e.g. data.domains.code",
        )
        if isinstance(raw, DomainConfig):
            out[name] = raw
            continue
        _check(where, raw, isinstance(raw, dict), "must be a mapping of source, path, glob, ...", "see DomainConfig")
        for key, value in raw.items():
            if key not in known:
                raise InputError(f"{where}.{key}", "unknown key", f"use {', '.join(known)}")
            if key == "max_files":
                ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
                _check(f"{where}.{key}", value, ok, "must be an integer ≥ 1 or null", "or leave it out for all files")
            else:
                ok = isinstance(value, str) or (value is None and key not in ("source", "text_field"))
                _check(f"{where}.{key}", value, ok, "must be a string", "see DomainConfig in the schema")
        d = DomainConfig(**raw)
        _check(
            f"{where}.source", d.source, d.source in SOURCES, f"must be one of {', '.join(SOURCES)}", "e.g. text_dir"
        )
        if d.source != "stdlib" and not (d.path and d.path.strip()):
            raise InputError(f"{where}.path", f"is required for source={d.source}", f"e.g. {where}.path=/data/code")
        out[name] = d
    return out


def probe_domains(job: JobConfig) -> list[str]:
    """The validation domains the probe measures at blueprint checkpoints (checked against data.domains)."""
    defined = list(job.data.domains)
    if job.probe.domains is None:
        return defined
    for name in job.probe.domains:
        if name not in defined:
            raise InputError(
                "probe.domains",
                f"unknown domain {name!r}",
                f"define it under data.domains (defined: {', '.join(defined) or 'none'})",
            )
    return list(dict.fromkeys(job.probe.domains))


def histogram_spec(job: JobConfig) -> HistogramSpec:
    """The probe's histogram bins. A range too narrow for the gradients is met by the first probe, which then
    fails the job naming probe.histogram.hi (the worker's check: nothing may land at or above hi)."""
    h = job.probe.histogram
    _number_in("probe.histogram.lo", h.lo, 0.0, 1.0, "e.g. 1e-12", lo_open=True)
    _number_in("probe.histogram.hi", h.hi, 0.0, 1e30, "e.g. 1e4", lo_open=True)
    _check("probe.histogram.hi", h.hi, h.hi > h.lo, f"must be above probe.histogram.lo ({h.lo:g})", "e.g. 1e4")
    _int_at_least("probe.histogram.bins_per_decade", h.bins_per_decade, 1, "e.g. 8")
    spec = HistogramSpec(lo=float(h.lo), hi=float(h.hi), bins_per_decade=h.bins_per_decade)
    _check(
        "probe.histogram.bins_per_decade",
        h.bins_per_decade,
        spec.n_bins <= MAX_HISTOGRAM_BINS,
        f"gives {spec.n_bins} bins over {h.lo:g}..{h.hi:g}, more than {MAX_HISTOGRAM_BINS}",
        "fewer bins per decade or a narrower range",
    )
    return spec


def validate_model_shape(job: JobConfig) -> None:
    """The model's sizes are positive, bounded and fit together (heads divide the width): checked here, before the
    data is prepared, rather than when the model is first built."""
    m = job.model
    for name, most in (
        ("hidden_size", MAX_MODEL_DIM),
        ("num_layers", MAX_MODEL_DEPTH),
        ("num_heads", MAX_MODEL_DEPTH),
        ("max_position_embeddings", MAX_MODEL_DIM),
    ):
        _int_at_least(f"model.{name}", getattr(m, name), 1, "use a positive integer", most)
    _optional_int("model.num_kv_heads", m.num_kv_heads, 1, m.num_heads, "a divisor of model.num_heads, or null")
    _optional_int("model.intermediate_size", m.intermediate_size, 1, 4 * MAX_MODEL_DIM, "or null for the default")
    _optional_int("model.vocab_size", m.vocab_size, 2, MAX_MODEL_DIM, "or null for the tokenizer's size")
    if m.hidden_size % m.num_heads:
        raise InputError(
            "model.num_heads",
            f"hidden_size {m.hidden_size} is not divisible by {m.num_heads} heads",
            "pick num_heads that divides hidden_size",
        )
    if m.num_kv_heads is not None and m.num_heads % m.num_kv_heads:
        raise InputError("model.num_kv_heads", f"{m.num_kv_heads} does not divide num_heads {m.num_heads}", None)


def validate_data(job: JobConfig) -> None:
    """The `data` group's values (that its path is set and its files exist is checked at submit, before anything is
    written: a shipped config leaves data.path for the command line)."""
    d = job.data
    _check("data.source", d.source, d.source in SOURCES, f"must be one of {', '.join(SOURCES)}", "e.g. data=text_dir")
    _int_at_least("data.val_every", d.val_every, 2, "e.g. 20: every 20th document is held out")
    _optional_int("data.max_files", d.max_files, 2, MAX_COUNT, "or null for all files")
    _int_at_least("data.tokenizer_vocab", d.tokenizer_vocab, 257, "e.g. 4096", MAX_MODEL_DIM)


def validate_probe(job: JobConfig) -> None:
    """Checks of the `probe` group (only when it is enabled: a disabled probe's values are never used)."""
    p = job.probe
    domain_configs(job)
    if not p.enabled:
        return
    _int_at_least("probe.interval", p.interval, 1, "optimizer steps between probes, e.g. 250")
    _int_at_least("probe.batches", p.batches, 1, "validation batches per rank and domain, e.g. 4")
    _check("probe.checkpoints", p.checkpoints, len(p.checkpoints) > 0, "must name at least one fraction", "[0.5, 1.0]")
    for f in p.checkpoints:
        _number_in(
            "probe.checkpoints", f, 0.0, 1.0, "fractions of train.max_tokens, e.g. [0.5, 0.8, 1.0]", lo_open=True
        )
    probe_domains(job)
    histogram_spec(job)
    _check("probe.statistic", p.statistic, p.statistic in STATISTICS, "must be mean or median", "probe.statistic=mean")
    _number_in("probe.ci_level", p.ci_level, 0.0, 0.999999, "e.g. 0.95", lo_open=True)
    _int_at_least("probe.n_resamples", p.n_resamples, 1, "bootstrap resamples, e.g. 1000")
    _check(
        "probe.fit_method",
        p.fit_method,
        p.fit_method in FIT_METHODS,
        f"must be one of {', '.join(FIT_METHODS)}",
        "probe.fit_method=binned-mle",
    )
    _number_in("probe.top_k", p.top_k, 0.0, 1.0, "e.g. 0.1: the top 10 % of entries", lo_open=True)
    _number_in("probe.noise_multiplier", p.noise_multiplier, 0.0, 1e6, "0 for no noise")
    _number_in("probe.noise_clip", p.noise_clip, 0.0, 1e30, "e.g. 1.0", lo_open=True)
    if p.model_id is not None:
        check_model_id(p.model_id)


def validate_job(job: JobConfig) -> StopRuleConfig:
    """Check every value of a job; returns the stop rule's config (already validated)."""
    _check(
        "name",
        job.name,
        bool(NAME_RE.match(job.name)),
        "must be 1-64 letters, digits, '_', '.', '-'",
        "e.g. name=llama-sweep",
    )
    _int_at_least("seed", job.seed, 0, "use a non-negative 32-bit integer", MAX_SEED)
    _check(
        "priority",
        job.priority,
        isinstance(job.priority, int) and PRIORITY_MIN <= job.priority <= PRIORITY_MAX,
        f"must be an integer in {PRIORITY_MIN}..{PRIORITY_MAX}",
        "9 is the most urgent, 5 the default",
    )
    if job.group is not None:
        _check(
            "group",
            job.group,
            bool(NAME_RE.match(str(job.group))),
            "must be 1-64 letters, digits, '_', '.', '-'",
            "e.g. group=lr-sweep, or null",
        )
    _check("runs_dir", job.runs_dir, bool(job.runs_dir.strip()), "must not be empty", "e.g. runs_dir=cpr_runs")

    m = job.model
    _check(
        "model.arch", m.arch, m.arch in ("llama", "gpt2"), "must be llama or gpt2", "model=llama-2m or model=gpt2-small"
    )
    validate_model_shape(job)
    _number_in("model.dropout", m.dropout, 0.0, 0.9, "0 for pretraining on small data")
    validate_data(job)

    d = job.deepspeed
    _check(
        "deepspeed.zero_stage", d.zero_stage, d.zero_stage in (0, 1, 2, 3), "must be 0, 1, 2 or 3", "deepspeed=zero2"
    )
    _check(
        "deepspeed.precision",
        d.precision,
        d.precision in PRECISIONS,
        "must be fp32 or bf16",
        "deepspeed.precision=fp32",
    )
    _check(
        "deepspeed.optimizer",
        d.optimizer,
        d.optimizer in OPTIMIZERS,
        "must be adamw or adam",
        "deepspeed.optimizer=adamw",
    )

    t = job.train
    _int_at_least("train.seq_len", t.seq_len, 2, "a sequence needs an input and a target token")
    _check(
        "train.seq_len",
        t.seq_len,
        t.seq_len <= m.max_position_embeddings,
        f"must be ≤ model.max_position_embeddings ({m.max_position_embeddings})",
        "shorten train.seq_len or raise model.max_position_embeddings",
    )
    _int_at_least("train.micro_batch", t.micro_batch, 1, "sequences per rank per micro-step, e.g. 8")
    _int_at_least("train.grad_accum", t.grad_accum, 1, "use 1 for no accumulation")
    _number_in("train.lr", t.lr, 0.0, 10.0, "e.g. train.lr=3e-3", lo_open=True)
    _check(
        "train.schedule", t.schedule, t.schedule in SCHEDULES, "must be constant or cosine", "train.schedule=constant"
    )
    _int_at_least("train.warmup_steps", t.warmup_steps, 0, "use 0 for no warm-up")
    _number_in("train.min_lr_fraction", t.min_lr_fraction, 0.0, 1.0, "e.g. 0.1")
    _number_in("train.weight_decay", t.weight_decay, 0.0, 10.0, "e.g. 0.1")
    _number_in("train.beta1", t.beta1, 0.0, 0.999999, "e.g. 0.9")
    _number_in("train.beta2", t.beta2, 0.0, 0.999999, "e.g. 0.95")
    _number_in("train.grad_clip", t.grad_clip, 0.0, 1e6, "0 turns clipping off")
    _int_at_least("train.eval_interval", t.eval_interval, 1, "optimizer steps between evaluations, e.g. 25")
    _int_at_least("train.eval_sequences", t.eval_sequences, 1, "held-out sequences per evaluation, e.g. 64")
    _int_at_least("train.report_interval", t.report_interval, 1, "optimizer steps between reports, e.g. 5")
    if t.checkpoint_interval is not None:
        _int_at_least("train.checkpoint_interval", t.checkpoint_interval, 0, "0 checkpoints only at the end")
    if checkpoint_interval(job) % t.eval_interval:
        raise InputError(
            "train.checkpoint_interval",
            f"{t.checkpoint_interval} is not a multiple of train.eval_interval ({t.eval_interval}): a checkpoint is "
            "taken after a finite evaluation check",
            f"e.g. train.checkpoint_interval={4 * t.eval_interval}",
        )
    _int_at_least("train.keep_checkpoints", t.keep_checkpoints, 1, "periodic checkpoints kept, e.g. 2")
    _int_at_least("cluster.max_restarts", job.cluster.max_restarts, 0, "0 fails the job when a rank dies")
    _int_at_least("cluster.num_workers", job.cluster.num_workers, 1, "data-parallel ranks, e.g. 2")
    _optional_int(
        "cluster.metrics_export_port", job.cluster.metrics_export_port, 1, 65535, "a free TCP port, e.g. 8080, or null"
    )
    validate_world_sizes(job)
    per_step = tokens_per_step(job)
    _check(
        "train.max_tokens",
        t.max_tokens,
        isinstance(t.max_tokens, int) and t.max_tokens >= per_step * t.eval_interval,
        f"must cover at least one evaluation interval ({per_step * t.eval_interval} tokens)",
        "raise train.max_tokens or lower train.eval_interval",
    )
    _int_at_least("train.max_tokens", t.max_tokens, 1, "the job's token budget, e.g. 4194304")
    if t.threads_per_worker is not None:
        _int_at_least("train.threads_per_worker", t.threads_per_worker, 1, "or null for cluster.cpus_per_worker")

    c = job.cluster
    _int_at_least("cluster.cpus_per_worker", c.cpus_per_worker, 1, "CPU slots per rank, e.g. 1")
    _int_at_least("cluster.gpus_per_worker", c.gpus_per_worker, 0, "0 on CPU, 1 for one rank per GPU")
    if c.backend is not None:
        _check("cluster.backend", c.backend, c.backend in BACKENDS, "must be gloo, nccl or null", "null picks for you")
        if c.backend == "nccl" and c.gpus_per_worker == 0:
            raise InputError("cluster.backend", "nccl needs GPUs", "set cluster.gpus_per_worker=1 or backend=gloo")
    if c.memory_gb_per_worker is not None:
        _number_in("cluster.memory_gb_per_worker", c.memory_gb_per_worker, 0.0, 1e6, "or null", lo_open=True)
    if c.num_cpus is not None:
        _int_at_least("cluster.num_cpus", c.num_cpus, 1, "or null for this machine's count")
    if c.address is not None:
        _check("cluster.address", c.address, bool(c.address.strip()), "must not be empty", "null for local Ray")

    tel = job.telemetry
    _number_in("telemetry.interval_s", tel.interval_s, 0.0, 3600.0, "e.g. 1.0", lo_open=True)
    _number_in("telemetry.codecarbon_measure_s", tel.codecarbon_measure_s, 0.0, 3600.0, "e.g. 1.0", lo_open=True)
    _check(
        "telemetry.country_iso_code",
        tel.country_iso_code,
        bool(re.fullmatch(r"[A-Za-z]{3}", tel.country_iso_code)),
        "must be a 3-letter ISO 3166-1 alpha-3 code",
        "e.g. USA, FRA, DEU",
    )
    _check(
        "tracking.experiment",
        job.tracking.experiment,
        bool(job.tracking.experiment.strip()),
        "must not be empty",
        "e.g. cpr",
    )

    validate_probe(job)

    for name in ("window", "patience", "min_checks", "max_nonfinite"):  # their lower bounds: StopRuleConfig's
        value = getattr(job.stop, name)
        _check(
            f"stop.{name}",
            value,
            not isinstance(value, int) or value <= MAX_COUNT,
            f"must be ≤ {MAX_COUNT:,}",
            "use a smaller value",
        )
    rule = stop_rule_config(job.stop)
    kind = rule.resource
    energy_measured = tel.enabled and (tel.codecarbon or (tel.nvml and c.gpus_per_worker > 0))
    if kind in ENERGY_KINDS and not energy_measured:
        raise InputError(
            "stop.resource",
            f"{kind.value} needs energy telemetry, which this config turns off",
            "enable telemetry (telemetry=default) or stop on tokens, flops or wall_hours",
        )
    if kind in GPU_KINDS and (c.gpus_per_worker == 0 or not (tel.enabled and tel.nvml)):
        raise InputError(
            "stop.resource",
            f"{kind.value} is measured by NVML on GPUs; this job has none",
            "use energy_kwh, flops, tokens or wall_hours on CPU",
        )
    return rule
