"""An adapt job's ranks before training (the paper's Algorithm 1 steps 1, 3 and 4; docs/adapt.md): the base model
loaded, the local gradient sample G̃ measured on the target's training split with the gradient probe, S_adapt
selected on rank 0 (`orchestrator.adapt.select`, pure) and broadcast, and the model made ready for `build_engine`:
everything outside S_adapt frozen, or LoRA applied. Under `lisa` every block stays in the optimizer and
`LisaFreezer` re-freezes them at each draw.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.config.schema import AdaptStrategy, JobConfig
from orchestrator.errors import InputError

LOCAL_DOMAIN = "target"
"""The ProbeReport domain of the local sample (the job's own training split)."""


@dataclass
class AdaptedModel:
    """The model to hand `build_engine`, which parameters train, and the selection that decided it."""

    model: Any
    trainable: Callable[[str], bool]
    selection: dict[str, Any]
    """`Selection.to_dict()`: S_adapt with every unit's Ḡ, G̃, shares, G′, CI width, weight, ρ, drift, fallback."""
    lisa: LisaFreezer | None = None


class LisaFreezer:
    """LISA's draw applied to the model: at each `lisa_interval` boundary only the always-on ids and the drawn blocks
    require grad. Exact under ZeRO 0 only (validated): DeepSpeed then skips a parameter without a gradient, and
    torch's AdamW leaves it (and its moments) untouched; the moments of every block ever drawn stay allocated."""

    def __init__(self, model: Any, schedule: Any, groups: dict[str, Any]) -> None:
        from orchestrator.blueprints.grouping import group_of

        self.schedule = schedule
        self.params = [(p, group_of(n, groups)) for n, p in model.named_parameters()]
        self.active: frozenset[str] | None = None

    def at(self, step: int) -> bool:
        """Set requires_grad for optimizer step `step`; True when the draw changed. Between two draws (every
        `interval` steps) nothing is computed: this runs at every training step."""
        if self.active is not None and step % self.schedule.interval:
            return False
        active = self.schedule.active(step)
        if active == self.active:
            return False
        self.active = active
        for p, gid in self.params:
            p.requires_grad_(gid in active)
            if gid not in active:
                p.grad = None  # a zero gradient would still move it through Adam's moments
        return True


def load_base(job: JobConfig) -> Any:
    """The base model (a Hugging Face folder, resolved at submission) in fp32, as the ranks train it."""
    import torch

    from orchestrator.models import model_class

    assert job.adapt.base is not None
    return model_class(job.model.arch).from_pretrained(job.adapt.base, torch_dtype=torch.float32)


def local_norms(model: Any, job: JobConfig, prepared: Any, rank: int, world: int) -> dict[str, float] | None:
    """G̃ᵢ: the mean per-batch gradient norm of every submodule on `adapt.probe_batches` micro-batches per rank of
    the target's training split (the probe's statistic, as a blueprint's `gradient_norm`); rank 0 gets them."""
    from orchestrator.data.batches import val_batches
    from orchestrator.worker.probe import GradientProbe

    t, a = job.train, job.adapt
    probe = GradientProbe(model, job.probe.histogram.spec())
    windows = val_batches(prepared, t.seq_len, t.micro_batch, a.probe_batches * t.micro_batch * world, split="train")
    mine = windows[rank::world][: a.probe_batches]
    report = probe.measure(mine, step=0, tokens=0, domain=LOCAL_DOMAIN, label="adapt")
    if report is None:
        return None
    return {gid: statistics.fmean(norms) for gid, norms in report.batch_norms.items()}


def choose(job: JobConfig, model: Any, norms: dict[str, float]) -> dict[str, Any]:
    """Rank 0: S_adapt by the job's strategy from the blueprint (if any) and the local sample."""
    from orchestrator.adapt import SubmoduleInput, inputs_from_blueprint, select
    from orchestrator.adapt.selection import as_config_error
    from orchestrator.blueprints import load_blueprint
    from orchestrator.blueprints.grouping import group_parameters
    from orchestrator.worker.lora import linear_shapes

    named = [(n, p.numel()) for n, p in model.named_parameters()]
    groups = {gid: g.n_params for gid, g in group_parameters(named).items()}
    a = job.adapt
    if a.blueprint is not None:
        subs = inputs_from_blueprint(load_blueprint(a.blueprint), norms, groups)
    else:  # a strategy that reads no blueprint: the local sample stands on both sides
        subs = tuple(
            SubmoduleInput(id=g, n_params=n, blueprint_norm=norms[g], local_norm=norms[g]) for g, n in groups.items()
        )
    shapes = linear_shapes(model) if a.strategy is AdaptStrategy.lora else ()
    req = job.selection_request(subs, sum(groups.values()), shapes)
    try:
        return select(a.strategy.value, req).to_dict()
    except InputError as err:
        raise as_config_error(err, req.budget) from None


def adapt_model(job: JobConfig, prepared: Any, rank: int, world: int, broadcast: Callable[[Any], Any]) -> AdaptedModel:
    """Algorithm 1 up to training: load, sample, select (rank 0, then `broadcast` to all), freeze or apply LoRA.
    A refusal of the selection (an InputError) is raised on every rank, so none waits on the others."""
    from orchestrator.adapt import LisaSchedule, LoraDescriptor, trainable_names
    from orchestrator.blueprints.grouping import group_parameters

    model = load_base(job)
    norms = local_norms(model, job, prepared, rank, world)
    said: dict[str, Any]
    if rank == 0:
        assert norms is not None
        try:
            said = {"selection": choose(job, model, norms)}
        except InputError as err:
            said = {"error": [err.field, err.problem, err.fix]}
    else:
        said = {}
    said = broadcast(said)
    if "error" in said:
        raise InputError(*said["error"])
    sel = said["selection"]
    named = [(n, p.numel()) for n, p in model.named_parameters()]
    groups = group_parameters(named)
    names = [n for n, _ in named]
    if sel.get("lora"):
        from orchestrator.worker.lora import apply_lora, lora_trainable

        lora = dict(sel["lora"], targets=tuple(sel["lora"]["targets"]))
        model = apply_lora(model, LoraDescriptor(**lora), alpha=job.adapt.lora_alpha)
        return AdaptedModel(model=model, trainable=lora_trainable, selection=sel)
    if sel.get("schedule"):
        s = sel["schedule"]
        schedule = LisaSchedule(
            always=tuple(s["always"]),
            blocks=tuple(tuple(b) for b in s["blocks"]),
            n_active=s["n_active"],
            interval=s["interval"],
            seed=s["seed"],
        )
        every = set(schedule.always).union(*schedule.blocks)  # all of them in the optimizer; the draw freezes
        keep = trainable_names(names, groups, [g for g in groups if g in every])
        return AdaptedModel(
            model=model, trainable=keep.__contains__, selection=sel, lisa=LisaFreezer(model, schedule, groups)
        )
    keep = trainable_names(names, groups, sel["chosen"])
    return AdaptedModel(model=model, trainable=keep.__contains__, selection=sel)


def measure(before_step: dict[str, int], after_step: dict[str, int], step: int, base_params: int) -> dict[str, Any]:
    """This rank's memory as its engine held it at its first step (`training_memory`: the gradients between backward
    and step, the optimizer state after the step allocated it), and what the optimizer state would be with every one
    of the base's `base_params` trained (its bytes per trained parameter times those): the memory S_adapt saved."""
    m = {**after_step, "gradient_numel": before_step["gradient_numel"], "gradient_bytes": before_step["gradient_bytes"]}
    per_param = m["optimizer_state_bytes"] / max(1, m["trainable_params"])
    full = per_param * base_params
    return {
        **m,
        "step": step,
        "optimizer_state_bytes_if_full": full,
        "memory_saved_bytes": full - m["optimizer_state_bytes"],
    }
