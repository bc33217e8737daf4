"""What training holds in memory on this rank, measured on a live DeepSpeed engine (ZeRO 0, 1, 2): the optimizer's
state, the gradients, the parameters. For an adaptation rank (how much freezing or LoRA saved) and for benchmarks.

The figures are logical sizes of DeepSpeed's own tensors, not the process's resident memory: they leave out
DeepSpeed's alignment padding, its transient reduction buckets and the activations.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import InputError


def training_memory(engine: Any) -> dict[str, int]:
    """This rank's training memory, in elements and bytes:

    - `total_params`: every parameter of the model (frozen ones and LoRA adapters included; a tied tensor once);
    - `trainable_params`: those with requires_grad;
    - `optimizer_state_numel`, `optimizer_state_bytes`: the per-element state of the torch optimizer inside
      DeepSpeed's wrapper (Adam's exp_avg and exp_avg_sq, not its scalar `step`): under ZeRO 1/2 (and bf16's
      optimizer at ZeRO 0) it is kept for this rank's partition of the fp32 master weights, under plain ZeRO 0 for
      every trainable parameter; DeepSpeed's alignment padding of the last partition is left out;
    - `gradient_numel`, `gradient_bytes`: the gradients the next optimizer step uses, so call this between
      `engine.backward` and `engine.step` (after the step they are freed, and both are 0): under ZeRO 1/2 this
      rank's reduced partition (the optimizer's `averaged_gradients`, padding left out), under bf16's optimizer its
      accumulation buffer in DeepSpeed's grad_accum_dtype (every rank holds all of it), under plain ZeRO 0 the
      trainable parameters' `.grad`.

    ZeRO 3 is refused (InputError): its partitions live elsewhere and are not measured here.
    """
    if engine.zero_optimization_stage() >= 3:
        raise InputError("deepspeed.zero_stage", "memory is measured under ZeRO 0, 1 and 2 only")
    params = list(engine.module.parameters())
    state_numel, state_bytes = _optimizer_state(engine.optimizer)
    grad_numel, grad_bytes = _gradients(engine.optimizer, [p for p in params if p.requires_grad])
    return {
        "total_params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "optimizer_state_numel": state_numel,
        "optimizer_state_bytes": state_bytes,
        "gradient_numel": grad_numel,
        "gradient_bytes": grad_bytes,
    }


def _paddings(wrapper: Any) -> list[int]:
    """Per param group, the alignment padding at the end of this rank's flat partition (0 on all but the last rank):
    `groups_padding` of ZeRO 1/2, `group_paddings` of the bf16 optimizer; none under plain ZeRO 0."""
    return list(getattr(wrapper, "groups_padding", None) or getattr(wrapper, "group_paddings", None) or [])


def _optimizer_state(wrapper: Any) -> tuple[int, int]:
    """(numel, bytes) of the torch optimizer's per-element state tensors (those shaped like their parameter)."""
    inner = getattr(wrapper, "optimizer", wrapper)
    paddings = _paddings(wrapper)
    numel = nbytes = 0
    for i, group in enumerate(inner.param_groups):
        pad = paddings[i] if i < len(paddings) else 0
        for p in group["params"]:
            for value in inner.state.get(p, {}).values():
                if hasattr(value, "numel") and value.numel() == p.numel() and value.dim() > 0:
                    n = value.numel() - pad
                    numel += n
                    nbytes += n * value.element_size()
    return numel, nbytes


def _gradients(wrapper: Any, trainable: list[Any]) -> tuple[int, int]:
    """(numel, bytes) of the gradients the next step uses (see `training_memory`)."""
    averaged = getattr(wrapper, "averaged_gradients", None)
    if averaged is not None and hasattr(wrapper, "partition_size"):  # ZeRO 1/2: DeepSpeedZeroOptimizer
        paddings = _paddings(wrapper)
        numel = nbytes = 0
        for i, grads in averaged.items():
            if grads is None:
                continue
            kept = [g for g in grads if not getattr(g, "_zero_padding", False)]
            n = min(sum(g.numel() for g in kept), int(wrapper.partition_size[i]) - paddings[i])
            numel += n
            nbytes += n * (kept[0].element_size() if kept else 0)
        return numel, nbytes
    flats = getattr(wrapper, "fp32_groups_actual_gradients_flat", None)
    if flats is not None:  # bf16 at ZeRO 0: BF16_Optimizer's gradient buffers, padding excluded
        if not any(any(flags) for flags in getattr(wrapper, "fp32_groups_has_gradients", [[True]])):
            return 0, 0
        return sum(g.numel() for g in flats), sum(g.numel() * g.element_size() for g in flats)
    grads = [p.grad for p in trainable if p.grad is not None]  # plain ZeRO 0: torch's own .grad
    return sum(g.numel() for g in grads), sum(g.numel() * g.element_size() for g in grads)
