"""Batches from token memmaps: every optimizer step's global batch is drawn from (seed, step) alone, whatever
the world size; validation is fixed."""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.data.prepare import PreparedData
from orchestrator.errors import InputError


class TrainBatches:
    """Endless (x, y) micro-batches for one rank: random windows of train.bin, deterministic per (seed, step).

    Optimizer step s trains on micro_batch × grad_accum × world_size windows drawn from (seed, s) over the whole
    split; rank r's m-th micro-batch of the step is the slice [(m·world + r)·micro_batch, +micro_batch). So the
    same sequences make up step s at any world size with the same global batch: a job resized by a
    checkpoint-restart (grad_accum absorbing the change) trains on the very data it would have (DeepSpeed
    averages over ranks and micro-steps alike). `state_dict()` is the position (step, micro-step).
    """

    def __init__(
        self,
        prepared: PreparedData,
        seq_len: int,
        micro_batch: int,
        grad_accum: int,
        rank: int,
        world_size: int,
        seed: int,
    ) -> None:
        tokens = prepared.tokens("train")
        if len(tokens) < seq_len + 2:
            raise InputError(
                "data",
                f"{len(tokens):,} training tokens are fewer than one sequence of {seq_len + 1}",
                "use more data or a shorter train.seq_len",
            )
        self.tokens = tokens
        self.n_starts = len(tokens) - seq_len - 1
        self.seq_len, self.micro_batch, self.grad_accum = seq_len, micro_batch, grad_accum
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.step, self.micro = 0, 0
        self._starts: tuple[int, np.ndarray] | None = None  # (step, the step's global window starts)

    def global_starts(self, step: int) -> np.ndarray:
        """Window starts of step `step`'s whole global batch, in rank-slice order."""
        if self._starts is None or self._starts[0] != step:
            rng = np.random.default_rng([self.seed, step])
            n = self.micro_batch * self.grad_accum * self.world_size
            self._starts = (step, rng.integers(0, self.n_starts + 1, size=n))
        return self._starts[1]

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> tuple[Any, Any]:
        import torch

        i = (self.micro * self.world_size + self.rank) * self.micro_batch
        starts = self.global_starts(self.step)[i : i + self.micro_batch]
        self.micro += 1
        if self.micro == self.grad_accum:
            self.step, self.micro = self.step + 1, 0
        chunk = np.stack([np.asarray(self.tokens[s : s + self.seq_len + 1], dtype=np.int64) for s in starts])
        t = torch.from_numpy(chunk)
        return t[:, :-1], t[:, 1:]

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "micro": self.micro}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.micro = int(state["step"]), int(state.get("micro", 0))


def val_batches(
    prepared: PreparedData, seq_len: int, batch_size: int, n_sequences: int, split: str = "val"
) -> list[tuple[Any, Any]]:
    """n_sequences windows evenly spaced over val.bin (or a probe domain's tokens), in batches of batch_size:
    the same set at every check."""
    import torch

    tokens = prepared.tokens(split)
    last = len(tokens) - seq_len - 1
    if last < n_sequences:
        where = "the validation split" if split == "val" else f"probe domain {split!r}"
        raise InputError(
            "data" if split == "val" else f"data.domains.{split}",
            f"{where} has {len(tokens):,} tokens; {n_sequences} sequences of {seq_len} "
            f"need at least {n_sequences + seq_len + 1:,}",
            "use more data, lower data.val_every or train.eval_sequences"
            if split == "val"
            else "add documents to the domain or lower probe.batches",
        )
    starts = np.linspace(0, last, n_sequences).astype(np.int64)
    chunk = torch.from_numpy(np.stack([np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts]))
    return [(chunk[i : i + batch_size, :-1], chunk[i : i + batch_size, 1:]) for i in range(0, n_sequences, batch_size)]
