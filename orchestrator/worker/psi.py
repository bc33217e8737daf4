"""Ψ at an evaluation check (`orchestrator.core.psi`), the same number on every rank: the held-out loss, each domain
loss of Ψ's mix, or the user's function of the rank-0 model, broadcast to the others (docs/psi.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from orchestrator.core.psi import GENERAL, PsiKind, domain_mix


class PsiMeter:
    """One rank's share of Ψ's evaluation; `measure` is collective: every rank calls it at the same check."""

    def __init__(
        self,
        job: Any,
        prepared: Any,
        engine: Any,
        *,
        rank: int,
        world_size: int,
        all_reduce: Callable[[list[float]], list[float]],
    ) -> None:
        from orchestrator.data.batches import val_batches

        self.spec = job.psi.spec()
        self.engine, self.rank, self.all_reduce = engine, rank, all_reduce
        t, n = job.train, job.eval_sequences()

        def share(split: str) -> list[tuple[Any, Any]]:
            """This rank's equal share of the split's fixed held-out windows, on its device."""
            windows = val_batches(prepared, t.seq_len, t.micro_batch, n, split=split)
            mine = windows[rank::world_size][: max(1, len(windows) // world_size)]
            return [(x.to(engine.device), y.to(engine.device)) for x, y in mine]

        self.sets = {GENERAL: share("val"), **{d: share(d) for d in job.psi.domains()}}
        self.fn: Callable[..., Any] | None = None
        self.tokenizer: Any = None
        if self.spec.kind is PsiKind.fn and rank == 0:
            self.fn = job.psi.function()
            if prepared.tokenizer_path is not None:
                from tokenizers import Tokenizer

                self.tokenizer = Tokenizer.from_file(str(prepared.tokenizer_path))

    def measure(self, step: int) -> tuple[float, float, dict[str, float]]:
        """(validation loss, Ψ, each domain's loss for psi=domains), all-reduced: equal on every rank.

        A user function's non-finite score, or its exception, fails every rank with one message (no rank waits
        for another forever); under a non-finite validation loss Ψ is non-finite too, the divergence guard's case."""
        from orchestrator.worker.engine import evaluate

        parts = [evaluate(self.engine, batches) for batches in self.sets.values()]
        sums = self.all_reduce([x for loss_sum, count in parts for x in (loss_sum, float(count))])
        losses = {d: sums[2 * i] / sums[2 * i + 1] for i, d in enumerate(self.sets)}
        val_loss = losses[GENERAL]
        if self.spec.kind is PsiKind.val_loss:
            return val_loss, -val_loss, {}
        if self.spec.kind is PsiKind.domains:
            return val_loss, domain_mix(losses, self.spec.weights), {d: losses[d] for d in self.spec.weights}
        score, error = self._score() if self.rank == 0 else (0.0, None)
        (score,) = self.all_reduce([score])  # the others add 0: rank 0's score reaches every rank
        if not math.isfinite(score) and math.isfinite(val_loss):
            why = error or f"returned {score!r}"
            raise RuntimeError(f"psi.fn {self.spec.fn} at step {step}: {why}; Ψ must be a finite float")
        return val_loss, score, {}

    def _score(self) -> tuple[float, str | None]:
        """The user's function on this (rank 0's) model, in eval mode without gradients: (score, error or None)."""
        import torch

        assert self.fn is not None
        self.engine.eval()
        try:
            with torch.no_grad():
                value = self.fn(self.engine.module, self.tokenizer, self.engine.device)
            return float(value), None
        except Exception as exc:  # the user's code: every rank must learn it failed, not only this one
            return math.nan, f"raised {type(exc).__name__}: {exc}"[:500]
        finally:
            self.engine.train()
