"""The unit of selection: a window, i.e. a document's consecutive run of at most seq_len + 1 training tokens.

The training split is its documents' tokens, each followed by EOS, in one flat array (orchestrator/data/prepare.py).
Cutting each document at its own boundaries keeps a window's text from two documents, so a window's score is one
document's; a document's last window is shorter, and so is every window of a short document: the lengths vary, which
is why raw gradient norms need the length correction (orchestrator/select/scores.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Windows:
    """Parallel arrays, one entry per window, in token order: where it starts in train.bin, how many tokens it
    has (input and target: length − 1 predictions), and the index of its document in the training split."""

    start: np.ndarray
    length: np.ndarray
    doc: np.ndarray

    def __len__(self) -> int:
        return int(self.start.size)

    @property
    def tokens(self) -> int:
        return int(self.length.sum())

    def take(self, index: np.ndarray) -> Windows:
        return Windows(self.start[index], self.length[index], self.doc[index])


def doc_bounds(tokens: np.ndarray, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every document: each ends just after its EOS (a last document without one ends the array)."""
    ends = np.flatnonzero(np.asarray(tokens) == eos_id) + 1
    if ends.size == 0 or ends[-1] != len(tokens):
        ends = np.append(ends, len(tokens))
    starts = np.concatenate([[0], ends[:-1]])
    keep = ends > starts
    return starts[keep].astype(np.int64), ends[keep].astype(np.int64)


def cut_windows(tokens: np.ndarray, eos_id: int, seq_len: int, min_tokens: int = 2) -> Windows:
    """Every document cut into windows of seq_len + 1 tokens from its start (the last one shorter); windows shorter
    than `min_tokens` (≥ 2: an input and a target) are left out."""
    if seq_len < 1 or min_tokens < 2:
        raise ValueError(f"seq_len {seq_len} must be ≥ 1 and min_tokens {min_tokens} ≥ 2")
    width = seq_len + 1
    d_start, d_end = doc_bounds(tokens, eos_id)
    per_doc = -(-(d_end - d_start) // width)
    doc = np.repeat(np.arange(d_start.size), per_doc)
    first = np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    start = d_start[doc] + (np.arange(doc.size) - first) * width
    length = np.minimum(width, d_end[doc] - start)
    keep = length >= min_tokens
    return Windows(start[keep].astype(np.int64), length[keep].astype(np.int64), doc[keep].astype(np.int64))


def kept_tokens(tokens: np.ndarray, windows: Windows, eos_id: int) -> np.ndarray:
    """The kept windows' tokens as one training stream: in corpus order, with an EOS between two windows that were
    not adjacent (a document cut short must not run into an unrelated one without its separator)."""
    order = np.argsort(windows.start, kind="stable")
    parts: list[np.ndarray] = []
    end = -1
    for s, n in zip(windows.start[order], windows.length[order], strict=True):
        if parts and s != end and int(parts[-1][-1]) != eos_id:
            parts.append(np.asarray([eos_id], dtype=tokens.dtype))
        parts.append(np.asarray(tokens[s : s + n]))
        end = s + n
    return np.concatenate(parts) if parts else np.zeros(0, dtype=tokens.dtype)
