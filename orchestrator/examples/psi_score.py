"""An example Ψ function for `psi=fn` (docs/psi.md): next-token accuracy of the model on a fixed held-out text.

cpr calls it on rank 0 at every evaluation check, in eval mode under torch.no_grad(), as
`fn(model, tokenizer, device) -> float` (higher is better); copy it as the start of your own task score.
"""

from __future__ import annotations

from typing import Any

HELD_OUT = '''def fibonacci(n):
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()

    def is_empty(self):
        return not self.items
'''
"""Python source written for this example (the default job trains on the standard library's sources)."""


def next_token_accuracy(model: Any, tokenizer: Any, device: Any) -> float:
    """Share of HELD_OUT's tokens the model predicts exactly (greedy argmax), in [0, 1]."""
    import torch

    if tokenizer is None:
        raise ValueError("next_token_accuracy needs the job's tokenizer; a memmap corpus has none")
    ids = tokenizer.encode(HELD_OUT).ids[: model.config.max_position_embeddings + 1]
    tokens = torch.tensor([ids], dtype=torch.long, device=device)
    logits = model(input_ids=tokens[:, :-1]).logits
    return float((logits.argmax(dim=-1) == tokens[:, 1:]).float().mean())
