"""Batches from token memmaps: each rank samples windows from its own contiguous shard; validation is fixed."""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.data.prepare import PreparedData
from orchestrator.errors import InputError


class TrainBatches:
    """Endless (x, y) batches of random windows from this rank's shard of train.bin, deterministic per (seed, rank).

    `state_dict()` is the number of batches drawn: a restarted rank reloads it and continues the same stream.
    """

    def __init__(
        self, prepared: PreparedData, seq_len: int, micro_batch: int, rank: int, world_size: int, seed: int
    ) -> None:
        tokens = prepared.tokens("train")
        shard = len(tokens) // world_size
        if shard < seq_len + 2:
            raise InputError(
                "data",
                f"{len(tokens):,} training tokens split over {world_size} ranks leave {shard} per rank, "
                f"fewer than one sequence of {seq_len + 1}",
                "use more data or a shorter train.seq_len",
            )
        self.tokens = tokens
        self.lo = rank * shard
        self.n_starts = shard - seq_len - 1
        self.seq_len, self.micro_batch = seq_len, micro_batch
        self.seed, self.rank = seed, rank
        self.drawn = 0

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> tuple[Any, Any]:
        import torch

        rng = np.random.default_rng([self.seed, self.rank, self.drawn])
        starts = self.lo + rng.integers(0, self.n_starts + 1, size=self.micro_batch)
        self.drawn += 1
        chunk = np.stack([np.asarray(self.tokens[s : s + self.seq_len + 1], dtype=np.int64) for s in starts])
        t = torch.from_numpy(chunk)
        return t[:, :-1], t[:, 1:]

    def state_dict(self) -> dict[str, int]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.drawn = int(state["drawn"])


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
