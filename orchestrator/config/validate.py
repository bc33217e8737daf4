"""The checks of a composed job that need more than one field's constraint, before any resource is taken.

Types, enums and unknown keys were checked by OmegaConf, each field's range by `schema.check_fields`; this checks
how fields fit together. Checks that need the outside world (data on disk, the Ray cluster, the tracking store)
live with the code that talks to it and run in `orchestrator.submission.preflight` before anything starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from orchestrator.blueprints.store import check_model_id
from orchestrator.config.schema import (
    AdaptStrategy,
    DataConfig,
    DataSource,
    DomainConfig,
    JobConfig,
    PrivacyMode,
    Schedule,
    Statistic,
    check_fields,
)
from orchestrator.core.lr_schedule import SHAPES
from orchestrator.core.psi import GENERAL, PsiKind, PsiSpec
from orchestrator.core.resources import ResourceKind
from orchestrator.core.stop_rule import StopRuleConfig
from orchestrator.errors import InputError

GPU_KINDS = (ResourceKind.GPU_HOURS, ResourceKind.VRAM_GB_HOURS)
ENERGY_KINDS = (ResourceKind.ENERGY_KWH, ResourceKind.CO2_KG)


def validate_model_shape(job: JobConfig) -> None:
    """The heads divide the width, checked here rather than when the model is first built."""
    m = job.model
    if m.hidden_size % m.num_heads:
        raise InputError(
            "model.num_heads",
            f"hidden_size {m.hidden_size} is not divisible by {m.num_heads} heads",
            "pick num_heads that divides hidden_size",
        )
    if m.num_kv_heads is not None and m.num_heads % m.num_kv_heads:
        raise InputError("model.num_kv_heads", f"{m.num_kv_heads} does not divide num_heads {m.num_heads}", None)


def validate_world_sizes(job: JobConfig) -> None:
    """min_workers ≤ num_workers ≤ max_workers, and the global batch splits evenly at every size in between."""
    c, t = job.cluster, job.train
    if c.min_workers is not None and c.min_workers > c.num_workers:
        raise InputError("cluster.min_workers", f"{c.min_workers} is above num_workers ({c.num_workers})", None)
    if c.max_workers is not None and c.max_workers < c.num_workers:
        raise InputError("cluster.max_workers", f"{c.max_workers} is below num_workers ({c.num_workers})", None)
    steps = t.grad_accum * c.num_workers  # micro-batches per optimizer step, over all ranks
    uneven = [w for w in job.world_sizes() if steps % w]
    if uneven:
        field = "cluster.max_workers" if uneven[-1] > c.num_workers else "cluster.min_workers"
        raise InputError(
            field,
            f"the global batch of {steps} micro-batches (train.grad_accum × cluster.num_workers) does not split "
            f"evenly over {', '.join(map(str, uneven))} ranks",
            "pick sizes that divide it, or raise train.grad_accum",
        )


def validate_train(job: JobConfig) -> None:
    """The loop's sizes fit the model and each other: sequences fit the positions, checkpoints follow evaluations,
    and the budget covers one evaluation interval."""
    t, m = job.train, job.model
    if t.seq_len > m.max_position_embeddings:
        raise InputError(
            "train.seq_len",
            f"must be ≤ model.max_position_embeddings ({m.max_position_embeddings}), got {t.seq_len}",
            "shorten train.seq_len or raise model.max_position_embeddings",
        )
    if t.checkpoint_steps() % t.eval_interval:
        raise InputError(
            "train.checkpoint_interval",
            f"{t.checkpoint_interval} is not a multiple of train.eval_interval ({t.eval_interval}): a checkpoint is "
            "taken after a finite evaluation check",
            f"e.g. train.checkpoint_interval={4 * t.eval_interval}",
        )
    validate_world_sizes(job)
    least = job.tokens_per_step * t.eval_interval
    if t.max_tokens < least:
        raise InputError(
            "train.max_tokens",
            f"must cover at least one evaluation interval ({least} tokens), got {t.max_tokens}",
            "raise train.max_tokens or lower train.eval_interval",
        )
    validate_schedule(job)


def validate_schedule(job: JobConfig) -> None:
    """The decay's shape is known, and under WSD a fixed cool-down and the warm-up each fit in the budget."""
    t = job.train
    if t.cooldown_shape not in SHAPES:
        raise InputError("train.cooldown_shape", f"unknown shape {t.cooldown_shape!r}", f"one of {', '.join(SHAPES)}")
    if t.schedule is not Schedule.wsd:
        return
    total = job.total_steps
    if t.warmup_steps > total:
        raise InputError(
            "train.warmup_steps",
            f"{t.warmup_steps} warm-up steps are longer than the budget's {total} steps (train.max_tokens): the LR "
            "would never reach train.lr",
            f"shorten the warm-up (e.g. train.warmup_steps={max(1, total // 10)}) or raise train.max_tokens",
        )
    if t.cooldown_steps is not None and t.cooldown_steps >= total - t.warmup_steps:
        raise InputError(
            "train.cooldown_steps",
            f"a cool-down of {t.cooldown_steps} steps is longer than the {total - t.warmup_steps} steps the budget "
            f"leaves after warm-up ({total} steps of train.max_tokens)",
            "shorten it, or use train.cooldown_fraction",
        )


def validate_stop(job: JobConfig) -> StopRuleConfig:
    """The stop rule's settings (checked by the core), and a resource this job's telemetry measures."""
    rule = job.stop.rule_config()
    tel, kind = job.telemetry, rule.resource
    gpus = job.cluster.gpus_per_worker > 0
    if kind in ENERGY_KINDS and not (tel.enabled and (tel.codecarbon or (tel.nvml and gpus))):
        raise InputError(
            "stop.resource",
            f"{kind.value} needs energy telemetry, which this config turns off",
            "enable telemetry (telemetry=default) or stop on tokens, flops or wall_hours",
        )
    if kind in GPU_KINDS and not (gpus and tel.enabled and tel.nvml):
        raise InputError(
            "stop.resource",
            f"{kind.value} is measured by NVML on GPUs; this job has none",
            "use energy_kwh, flops, tokens or wall_hours on CPU",
        )
    return rule


# What each data source reads (orchestrator/data/sources.py): any other file-selection key is ignored by it.
_SOURCE_IGNORES: dict[DataSource, tuple[str, ...]] = {
    DataSource.stdlib: ("path", "text_field", "hf_format"),
    DataSource.text_dir: ("text_field", "hf_format"),
    DataSource.hf_files: (),
    DataSource.memmap: ("glob", "text_field", "hf_format", "max_files"),
}
# Keys the training corpus ignores besides those (a memmap corpus is already split and tokenized).
_DATA_IGNORES: dict[DataSource, tuple[str, ...]] = {
    DataSource.memmap: ("val_every", "tokenizer_vocab", "tokenizer"),
}
# Of those, the ones whose value alone is enough to refuse (a shipped experiment file may set the others for the
# sources that read them; those are refused when given on the command line).
_REFUSED_BY_VALUE = frozenset({"path", "glob", "text_field", "hf_format", "tokenizer"})


def _readers(name: str, table: dict[DataSource, tuple[str, ...]]) -> str:
    """'drop it', or the sources that read `name`."""
    readers = [s.value for s in DataSource if name not in table.get(s, ()) + _SOURCE_IGNORES[s]]
    return f"drop it, or pick a source that reads it: {', '.join(readers)}" if readers else "drop it"


def ignored_keys(job: JobConfig) -> Iterator[tuple[str, str, str, bool]]:
    """Every key this job's choices make meaningless: (key, why, fix, whether its value alone refuses it).

    A data key is listed when its value differs from the schema's default (or null); the keys of a switched-off
    group, of a schedule that has no floor, or of a local-only cluster setting are listed whatever their value and
    refused only when the user set them on the command line (`refuse_ignored`)."""
    data_default, domain_default = DataConfig(), DomainConfig()
    for name in (*_SOURCE_IGNORES[job.data.source], *_DATA_IGNORES.get(job.data.source, ())):
        value = getattr(job.data, name)
        if value is not None and value != getattr(data_default, name):
            why = f"is ignored by data.source={job.data.source}"
            yield f"data.{name}", why, _readers(name, _DATA_IGNORES), name in _REFUSED_BY_VALUE
    if job.data.tokenizer is not None and job.data.source != DataSource.memmap:
        yield "data.tokenizer_vocab", "is ignored with data.tokenizer set (no tokenizer is trained)", "drop it", False
    for domain, cfg in job.data.domain_configs().items():
        for name in _SOURCE_IGNORES[cfg.source]:
            value = getattr(cfg, name)
            if value is not None and value != getattr(domain_default, name):
                why = f"is ignored by its source={cfg.source}"
                yield f"data.domains.{domain}.{name}", why, _readers(name, {}), True
    if job.train.schedule == Schedule.constant:
        why, fix = "is ignored by train.schedule=constant", "drop it, or set train.schedule=wsd or cosine"
        yield "train.min_lr_fraction", why, fix, False
    if job.train.schedule != Schedule.wsd:
        why = f"is ignored by train.schedule={job.train.schedule}"
        for name in ("cooldown_shape", "cooldown_fraction", "cooldown_steps"):
            yield f"train.{name}", why, "drop it, or set train.schedule=wsd, whose decay it shapes", False
        yield "stop.on_stop", why + " (only a WSD job cools down)", "drop it, or set train.schedule=wsd", False
    groups = (("probe", job.probe), ("telemetry", job.telemetry), ("tracking", job.tracking))
    for group, cfg in groups:
        if not cfg.enabled:
            for name in cfg.__dataclass_fields__:
                if name != "enabled":
                    yield f"{group}.{name}", f"is ignored with {group}.enabled=false", "drop it", False
    if not job.adapt.enabled:
        for name in job.adapt.__dataclass_fields__:
            if name != "base":
                yield f"adapt.{name}", "is read by `cpr adapt` only (adapt.base is not set)", "drop it", False
    if job.cluster.address is not None:
        for name in ("num_cpus", "metrics_export_port"):
            yield f"cluster.{name}", "applies to a local Ray only (cluster.address is set)", "drop it", False


def refuse_ignored(job: JobConfig, overrides: Iterable[str] = ()) -> None:
    """Refuse a key the job's source or groups ignore, like an unknown key: the user meant it to do something.

    Refused when set on the command line (`overrides`), and for the data sources' file selection whatever set it
    (`cpr submit data.path=/x` on the stdlib source would otherwise train on the standard library without a word)."""
    given = {o.partition("=")[0].lstrip("+~") for o in overrides}
    for key, why, fix, by_value in ignored_keys(job):
        if by_value or key in given:
            raise InputError(key, why, fix)


def validate_psi(job: JobConfig) -> PsiSpec:
    """Ψ's inputs exist: its domains under data.domains with usable weights, its function importable and callable
    (imported here, at plan time, so a typo fails in one line before anything starts)."""
    p = job.psi
    if p.weights and p.kind is not PsiKind.domains:
        raise InputError("psi.weights", f"are only read by psi=domains, not psi={p.kind.value}", "choose psi=domains")
    if p.fn is not None and p.kind is not PsiKind.fn:
        raise InputError("psi.fn", f"is only called by psi=fn, not psi={p.kind.value}", "choose psi=fn")
    if p.kind is PsiKind.domains:
        if not p.weights:
            raise InputError("psi.weights", "are empty", "e.g. +psi.weights.general=1")
        defined = list(job.data.domains)
        for name in p.weights:
            if name != GENERAL and name not in defined:
                raise InputError(
                    f"psi.weights.{name}",
                    f"unknown domain {name!r}",
                    f"use {GENERAL!r} or define it under data.domains (defined: {', '.join(defined) or 'none'})",
                )
    if p.kind is PsiKind.fn:
        if job.deepspeed.zero_stage == 3:  # rank 0's forward pass alone would wait forever for the others' shards
            raise InputError("psi.fn", "cannot run on rank 0 alone under ZeRO-3", "use deepspeed=zero2 or lower")
        p.function()
    return p.spec()


def validate_privacy(job: JobConfig) -> None:
    """Noise needs a privacy mode and a mode needs noise; a DP release bounds the sensitivity of a mean only."""
    p = job.probe
    if p.privacy == PrivacyMode.none and p.noise_multiplier > 0:
        raise InputError(
            "probe.noise_multiplier",
            "adds noise only with probe.privacy=noise or dp",
            "set probe.privacy=dp for a stated ε and δ, or probe.privacy=noise, or drop noise_multiplier",
        )
    if p.privacy != PrivacyMode.none and p.noise_multiplier == 0:
        raise InputError(
            "probe.noise_multiplier",
            f"must be > 0 with probe.privacy={p.privacy}",
            "e.g. probe.noise_multiplier=1.0",
        )
    if p.privacy == PrivacyMode.dp and p.statistic != Statistic.mean:
        raise InputError(
            "probe.statistic",
            f"must be mean with probe.privacy=dp, got {p.statistic}: the mechanism bounds the sensitivity of a mean",
            "set probe.statistic=mean",
        )


def validate_job(job: JobConfig, overrides: Iterable[str] = ()) -> StopRuleConfig:
    """Check every value of a job (and that none of its `overrides` is ignored); returns the stop rule's config."""
    check_fields(job)
    refuse_ignored(job, overrides)
    validate_model_shape(job)
    validate_train(job)
    if job.cluster.backend == "nccl" and job.cluster.gpus_per_worker == 0:
        raise InputError("cluster.backend", "nccl needs GPUs", "set cluster.gpus_per_worker=1 or backend=gloo")
    job.data.domain_configs()
    validate_psi(job)
    if job.probe.enabled:  # a disabled probe's domains and bins are never used
        job.probe_domains()
        job.probe.histogram.spec()
        if job.probe.model_id is not None:
            check_model_id(job.probe.model_id)
        if job.probe.min_batches > job.probe.batches:
            raise InputError(
                "probe.min_batches",
                f"{job.probe.min_batches} is more than probe.batches={job.probe.batches}",
                "probe.batches is the most a probe takes: raise it, or lower probe.min_batches",
            )
        validate_privacy(job)
    validate_adapt(job)
    job.notify.events()
    return validate_stop(job)


def validate_adapt(job: JobConfig) -> None:
    """An adapt job's settings that need more than one field (docs/adapt.md)."""
    a = job.adapt
    if not a.enabled:
        return
    if job.probe.enabled:
        raise InputError(
            "probe.enabled",
            "an adapt job publishes no blueprints (its frozen submodules have no gradient to measure)",
            "use probe=off (`cpr adapt` sets it)",
        )
    if a.strategy == AdaptStrategy.lisa and job.deepspeed.zero_stage != 0:
        raise InputError(
            "adapt.strategy",
            f"lisa re-freezes blocks between steps, which ZeRO-{job.deepspeed.zero_stage}'s flat partitions do not "
            "allow (a frozen block would still move through Adam's moments)",
            "add deepspeed=zero0",
        )
    if a.strategy != AdaptStrategy.full and a.memory_gb is None and a.max_fraction is None:
        raise InputError("adapt.max_fraction", f"adapt={a.strategy.value} needs a budget", "set it or adapt.memory_gb")
    if a.strategy == AdaptStrategy.lora and a.max_fraction is None:
        raise InputError("adapt.max_fraction", "lora's rank is matched to a parameter budget", "set it, e.g. 0.2")
