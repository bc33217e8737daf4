"""`data.selection`: train on the kept windows of a selection manifest (`cpr select`) instead of the whole split.

The kept windows' tokens (`kept_tokens`: in corpus order, an EOS between two windows that were not adjacent) are
written once next to the corpus's cache, `<cache>/selections/<manifest id>.bin`, and the job's PreparedData points
its `train_bin` there: the ranks draw their random windows from that stream exactly as from train.bin. The token
budget is unchanged (fewer tokens, more epochs of them); validation stays the whole held-out split, so Ψ is measured
on the same data with or without a selection. A manifest is tied to one tokenized corpus: its fingerprint (files,
split, tokenizer) and training token count must be this job's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.data.prepare import PreparedData, data_fingerprint
from orchestrator.errors import InputError

FIELD = "data.selection"


def selection_tokenizer(cfg: Any) -> str | None:
    """The tokenizer a job given `data.selection` and no `data.tokenizer` encodes its corpus with: the manifest's
    (the base model's that scored it), so the windows it lists are this job's tokens. None when there is nothing to
    fill in (no selection, a tokenizer given, a memmap corpus, a manifest that names none or one gone)."""
    if cfg.selection is None or cfg.tokenizer is not None or cfg.source == "memmap":
        return None
    from orchestrator.select.manifest import load_manifest

    tok = load_manifest(cfg.selection).corpus.get("tokenizer")
    return str(tok) if tok and Path(tok).is_file() else None


def check_selection(cfg: Any, *, against_corpus: bool = True) -> None:
    """The preflight of `data.selection` (nothing written): the file is a readable manifest and, with
    `against_corpus`, it was made for this DataConfig's corpus and tokenizer (its fingerprint; the token count is
    compared once the corpus is tokenized). `cpr adapt` checks the corpus after its base's tokenizer is known."""
    if cfg.selection is None:
        return
    from orchestrator.select.manifest import check_corpus, load_manifest

    manifest = load_manifest(cfg.selection)
    if against_corpus:
        fp, n_train = data_fingerprint(cfg)
        check_corpus(manifest, cfg.selection, fp, n_train)


def selections_dir(prepared: PreparedData) -> Path:
    """Where a corpus's selected streams go: `<cache>/selections/`, or under the user's cache when that folder
    cannot be written (a read-only memmap folder)."""
    folder = prepared.cache_dir / "selections"
    target = folder if folder.exists() else prepared.cache_dir
    if target.is_dir() and os.access(target, os.W_OK):
        return folder
    home = Path(os.environ.get("CPR_CACHE_DIR", Path.home() / ".cache" / "cpr"))
    return home / "data" / "selections" / prepared.fingerprint


def apply_selection(
    prepared: PreparedData, path: str | Path, *, log: Callable[[str], None] | None = None
) -> PreparedData:
    """`prepared` training on the kept windows of the manifest at `path`: its stream materialized once (reused
    when present), `train_bin`, `n_train_tokens` and `selection` (the manifest's id) replaced. InputError naming
    data.selection for a bad manifest or one made for another corpus or tokenizer."""
    from orchestrator.select.manifest import check_corpus, load_manifest
    from orchestrator.select.windows import kept_tokens

    if prepared.selection is not None:
        raise ValueError(f"{prepared.train_bin} is already selection {prepared.selection}")
    say = log or (lambda _line: None)
    manifest = load_manifest(path)
    check_corpus(manifest, path, prepared.fingerprint, prepared.n_train_tokens)
    selection_id = manifest.id
    out = selections_dir(prepared) / f"{selection_id}.bin"
    kept = manifest.kept_windows
    if out.exists():
        say(f"selection {selection_id}: cached tokens at {out}")
    else:
        stream = kept_tokens(prepared.tokens("train"), kept, prepared.eos_id)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            stream.tofile(tmp)
            os.replace(tmp, out)  # atomic: a concurrent job writes the same bytes
        finally:
            tmp.unlink(missing_ok=True)
        say(
            f"selection {selection_id}: {len(kept):,} of {len(manifest.windows):,} windows, {stream.size:,} of "
            f"{prepared.n_train_tokens:,} training tokens → {out}"
        )
    n_train = out.stat().st_size // np.dtype(prepared.dtype).itemsize
    return replace(prepared, train_bin=out, n_train_tokens=n_train, selection=selection_id)


def check_selected_tokens(prepared: PreparedData, seq_len: int) -> None:
    """The selected stream holds at least one training sequence (the ranks would refuse it only once started)."""
    if prepared.selection is not None and prepared.n_train_tokens < seq_len + 2:
        raise InputError(
            FIELD,
            f"selection {prepared.selection} keeps {prepared.n_train_tokens:,} training tokens, fewer than one "
            f"sequence of {seq_len + 1}",
            "keep more with `cpr select` (select.fraction) or use a shorter train.seq_len",
        )
