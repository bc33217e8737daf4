"""The gradient probe (§5, App. A): per-submodule gradient statistics of validation batches, on each rank's LOCAL
gradients, under any ZeRO stage, without moving a gradient between ranks.

A tensor hook on every parameter sees the rank's full micro-batch gradient of that parameter as autograd produces
it, before DeepSpeed reduces anything (under ZeRO-3 too: the parameter is gathered for its backward). The hook
folds it into per-group sums of squares and a magnitude histogram at once, so nothing is kept. During the probe
DeepSpeed's own "coalesce" switch (`optimizer._coalesce_grad_reduction`, the flag behind
`engine.coalesce_grad_reduction()`) keeps ZeRO 1-3 from reducing; ZeRO 0 reduces only in `engine.backward`, which
the probe does not call. Afterwards the probe's gradients are dropped and the optimizer's accumulation state reset,
so training continues exactly as without it. Ranks then combine [batches × groups] sums of squares (all-gather) and
[groups × bins] histogram counts and sums (all-reduce): sizes set by the number of submodules and bins only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.blueprints.grouping import ParamGroup, group_of, group_parameters
from orchestrator.core.gradmass import HistogramSpec
from orchestrator.core.probe_sizing import ProbeSizing, enough_batches
from orchestrator.core.reports import ProbeReport
from orchestrator.errors import InputError


@dataclass(frozen=True)
class ProbeCost:
    """What one probe call cost this rank: seconds, and bytes sent through collectives."""

    seconds: float
    bytes_communicated: int


def _is_engine(obj: Any) -> bool:
    """A DeepSpeed engine, not a plain torch module."""
    from deepspeed import DeepSpeedEngine

    return isinstance(obj, DeepSpeedEngine)


def _numel(p: Any) -> int:
    """A parameter's full element count (ZeRO-3 keeps only a shard in `p`, the full size in `ds_numel`)."""
    return int(getattr(p, "ds_numel", p.numel()))


class GradientProbe:
    """Per-submodule gradient statistics of one engine's model, measured on batches of this rank."""

    def __init__(self, engine: Any, spec: HistogramSpec) -> None:
        """`engine`: a DeepSpeed engine, or a plain torch module (an adaptation's base model, probed on the target
        domain before its engine exists: `orchestrator/worker/adapting.py`)."""
        import torch

        self.engine = engine
        self.module = engine.module if _is_engine(engine) else engine
        self.device = engine.device if _is_engine(engine) else next(engine.parameters()).device
        self.spec = spec
        named = list(self.module.named_parameters())
        self.groups: dict[str, ParamGroup] = group_parameters((n, _numel(p)) for n, p in named if p.requires_grad)
        self.ids = list(self.groups)
        index = {gid: i for i, gid in enumerate(self.ids)}
        self._params = [(p, index[group_of(n, self.groups)]) for n, p in named if p.requires_grad]
        self._edges = torch.tensor(spec.edges(), dtype=torch.float64)
        self.last_cost = ProbeCost(0.0, 0)

    @contextlib.contextmanager
    def _no_reduction(self) -> Iterator[None]:
        """Backward passes inside leave gradients local (no reduction at any ZeRO stage); on exit they are dropped.

        The switches are those `engine.coalesce_grad_reduction()` sets (the engine's `inside_no_sync_ctxt` and the
        ZeRO optimizer's `_coalesce_grad_reduction`), without its flush on exit: the probe's gradients are dropped.
        """
        engine = self.engine if _is_engine(self.engine) else None
        opt = engine.optimizer if engine is not None else None
        zero = hasattr(opt, "_coalesce_grad_reduction")
        was_training = self.module.training
        self.module.eval()  # no dropout: the probe must not draw from the training RNG
        if engine is not None:
            engine.inside_no_sync_ctxt = True
        if zero:
            opt._coalesce_grad_reduction = True
        try:
            yield
        finally:
            if engine is not None:
                engine.inside_no_sync_ctxt = False
            if zero:
                opt._coalesce_grad_reduction = False
            for p, _ in self._params:
                p.grad = None
            if zero:
                # ZeRO's micro-step counter and backward bookkeeping, as after an optimizer step.
                opt.zero_grad(set_to_none=True)
            if was_training:
                self.module.train()

    @staticmethod
    def _so_far(sumsq: Any, elapsed_s: float, world: int) -> tuple[list[list[float]], float, int]:
        """Every rank's per-batch norms so far and the slowest rank's time (the same on every rank), with the bytes
        this rank sent for them."""
        import torch
        import torch.distributed as dist

        if world == 1:
            return sumsq.sqrt().tolist(), elapsed_s, 0
        rows = [torch.zeros_like(sumsq) for _ in range(world)]
        dist.all_gather(rows, sumsq)
        elapsed = torch.tensor([elapsed_s], dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        return torch.cat(rows).sqrt().tolist(), float(elapsed.item()), sumsq.numel() * 8 + 8

    def measure(
        self,
        batches: Sequence[tuple[Any, Any]],
        *,
        step: int,
        tokens: int,
        domain: str,
        label: str | None,
        sizing: ProbeSizing | None = None,
        budget_s: float | None = None,
    ) -> ProbeReport | None:
        """Probe `batches` (this rank's share) and combine over ranks; rank 0 gets the report, others None.

        With `sizing`, the probe may stop before the last batch (`core/probe_sizing.py`): after each batch past the
        floor the ranks gather that batch's norms and the slowest rank's time, and all decide alike."""
        import time

        import torch
        import torch.distributed as dist
        import torch.nn.functional as F

        t0 = time.perf_counter()
        n_groups, n_bins = len(self.ids), self.spec.n_bins
        sumsq = torch.zeros(len(batches), n_groups, dtype=torch.float64)
        counts = torch.zeros(n_groups, n_bins, dtype=torch.int64)
        sums = torch.zeros(n_groups, n_bins, dtype=torch.float64)
        nonfinite = torch.zeros(1, dtype=torch.float64)
        edges = self._edges
        current = [0]

        def hook_for(gi: int) -> Any:
            def hook(grad: Any) -> None:
                g = grad.detach().reshape(-1).to(torch.float64).abs()
                bad = ~torch.isfinite(g)
                if bool(bad.any()):
                    nonfinite.add_(float(bad.sum()))
                    g = torch.where(bad, torch.zeros_like(g), g)
                sumsq[current[0], gi] += torch.dot(g, g)
                # side="right" as in MagnitudeHistogram.add: bin i+1 holds [edges[i], edges[i+1]).
                idx = torch.bucketize(g, edges, right=True)
                counts[gi] += torch.bincount(idx, minlength=n_bins)
                sums[gi] += torch.bincount(idx, weights=g, minlength=n_bins)

            return hook

        world = dist.get_world_size() if dist.is_initialized() else 1
        sent = 0
        done = 0
        handles = [p.register_hook(hook_for(gi)) for p, gi in self._params]
        try:
            with self._no_reduction():
                for b, (x, y) in enumerate(batches):
                    current[0] = b
                    logits = self.module(input_ids=x.to(self.device)).logits
                    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.to(logits.device).reshape(-1))
                    loss.backward()
                    done = b + 1
                    if sizing is not None and sizing.min_batches <= done < len(batches):
                        norms, elapsed, cost = self._so_far(sumsq[:done], time.perf_counter() - t0, world)
                        sent += cost
                        if enough_batches(norms, done=done, elapsed_s=elapsed, budget_s=budget_s, sizing=sizing):
                            break
        finally:
            for h in handles:
                h.remove()
        sumsq = sumsq[:done]
        if world > 1:
            gathered = [torch.zeros_like(sumsq) for _ in range(world)]
            dist.all_gather(gathered, sumsq)
            dist.all_reduce(counts)
            dist.all_reduce(sums)
            dist.all_reduce(nonfinite)
            sent += sumsq.numel() * 8 + counts.numel() * 8 + sums.numel() * 8 + 8
            sumsq = torch.cat(gathered)
        overflow = int(counts[:, -1].sum())
        if overflow:  # every rank sees the same reduced counts, so all of them stop here together
            raise InputError(
                "probe.histogram.hi",
                f"{overflow} gradient magnitudes at step {step} are ≥ {self.spec.hi:g}, beyond the histogram",
                "raise probe.histogram.hi",
            )
        self.last_cost = ProbeCost(time.perf_counter() - t0, sent)
        if dist.is_initialized() and dist.get_rank() != 0:
            return None
        per_batch = sumsq.tolist()
        return ProbeReport(
            step=step,
            tokens=tokens,
            domain=domain,
            label=label,
            ids=list(self.ids),
            groups={gid: {"prefixes": list(g.prefixes), "n_params": g.n_params} for gid, g in self.groups.items()},
            batch_norms={gid: [math.sqrt(row[i]) for row in per_batch] for i, gid in enumerate(self.ids)},
            histograms={
                gid: {
                    "spec": self.spec.to_dict(),
                    "counts": [int(v) for v in counts[i].tolist()],
                    "sums": [float(v) for v in sums[i].tolist()],
                    "sumsq": float(sumsq[:, i].sum()),
                }
                for i, gid in enumerate(self.ids)
            },
            nonfinite=int(nonfinite.item()),
            seconds=self.last_cost.seconds,
            bytes_communicated=sent,
        )
