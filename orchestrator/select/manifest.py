"""The selection manifest `cpr select` writes and `data.selection` reads (docs/select.md): every window of the
corpus with its score and whether it is kept, the corpus and base it was made for, the predictor's quality and the
provenance. A manifest is tied to one tokenized corpus: its fingerprint (files, split, tokenizer) must match."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import InputError
from orchestrator.select.windows import Windows

MANIFEST_FORMAT = "cpr-selection"
FORMAT_VERSION = 1
FIELD = "data.selection"
_COLUMNS = ("start", "length", "doc", "block", "score", "kept", "loss", "predicted")


@dataclass(frozen=True, kw_only=True)
class SelectionManifest:
    """A selection: the windows (parallel columns), what was kept, and what it was made from."""

    corpus: dict[str, Any]
    """fingerprint, source, n_train_tokens, tokenizer_sha256: the tokenized corpus the windows index."""
    seq_len: int
    min_tokens: int
    base: dict[str, Any]
    """folder, job_id, step: the model that scored the windows."""
    score: str
    length_correction: bool
    fraction: float
    seed: int
    skip_top: float = 0.0
    """The highest-scoring share passed over before the kept fraction (select.skip_top)."""
    windows: Windows
    block: np.ndarray
    """Index into `block_names` per window."""
    scores: np.ndarray
    kept: np.ndarray
    """Boolean per window."""
    loss: np.ndarray
    """The base model's mean token loss per window."""
    predicted: np.ndarray
    """log Ĵ per window: f_φ's prediction, before any length correction."""
    block_kind: str
    block_names: tuple[str, ...]
    predictor: dict[str, Any] | None = None
    length_bias: dict[str, float] | None = None
    cross_influence: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None

    @property
    def kept_windows(self) -> Windows:
        return self.windows.take(np.flatnonzero(self.kept))

    def summary(self) -> dict[str, int | float]:
        kept = self.kept_windows
        return {
            "windows": len(self.windows),
            "kept": len(kept),
            "tokens": self.windows.tokens,
            "kept_tokens": kept.tokens,
            "kept_token_share": kept.tokens / max(1, self.windows.tokens),
        }

    def kept_blocks(self) -> dict[str, float]:
        """Each block's share of the kept windows."""
        idx, n = np.unique(self.block[self.kept], return_counts=True)
        total = max(1, int(n.sum()))
        return {self.block_names[int(i)]: int(c) / total for i, c in zip(idx, n, strict=True)}

    def rescored(
        self, score: str, *, length_correction: bool, fraction: float, skip_top: float = 0.0
    ) -> SelectionManifest:
        """The selection `cpr select` would have made from the same scoring pass with another score, correction or
        fraction (its columns hold the loss and f_φ's prediction of every window): for comparing selections."""
        from orchestrator.select.scores import choose, window_scores

        scores, bias = window_scores(
            score,
            log_predicted=self.predicted,
            loss=self.loss,
            length=self.windows.length,
            length_correction=length_correction,
            seed=self.seed,
        )
        kept = np.zeros(len(self.windows), dtype=bool)
        kept[choose(scores, len(self.windows), fraction, self.seed, skip_top)] = True
        return replace(
            self,
            score=score,
            length_correction=length_correction,
            fraction=fraction,
            skip_top=skip_top,
            scores=scores,
            kept=kept,
            length_bias=bias.to_dict(),
        )

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": self.created_at,
            "corpus": self.corpus,
            "seq_len": self.seq_len,
            "min_tokens": self.min_tokens,
            "base": self.base,
            "score": self.score,
            "length_correction": self.length_correction,
            "fraction": self.fraction,
            "skip_top": self.skip_top,
            "seed": self.seed,
            "summary": self.summary(),
            "predictor": self.predictor,
            "length_bias": self.length_bias,
            "blocks": {"kind": self.block_kind, "names": list(self.block_names)},
            "cross_influence": self.cross_influence,
            "provenance": self.provenance,
            "windows": {
                "start": self.windows.start.tolist(),
                "length": self.windows.length.tolist(),
                "doc": self.windows.doc.tolist(),
                "block": self.block.tolist(),
                "score": [round(float(s), 6) for s in self.scores],
                "kept": self.kept.astype(int).tolist(),
                "loss": [round(float(v), 6) for v in self.loss],
                "predicted": [round(float(v), 6) for v in self.predicted],
            },
        }
        body["id"] = manifest_id(body)
        return body

    @property
    def id(self) -> str:
        return str(self.to_dict()["id"])

    def write(self, path: Path) -> Path:
        """The manifest as JSON at `path` (written beside it and renamed: a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def manifest_id(body: dict[str, Any]) -> str:
    """sha256 of the manifest without its id and creation time: equal selections have equal ids."""
    core = {k: v for k, v in body.items() if k not in ("id", "created_at", "provenance")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


def _bad(path: Path, problem: str, fix: str = "write it again with `cpr select`") -> InputError:
    return InputError(FIELD, f"{path}: {problem}", fix)


def load_manifest(path: str | Path) -> SelectionManifest:
    """A manifest file, checked: its format, its columns of one length, its kept windows inside the corpus it names.
    InputError naming data.selection otherwise."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(FIELD, f"{p} does not exist", "give the manifest `cpr select` printed")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _bad(p, f"not readable JSON ({type(exc).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
        raise _bad(p, f"not a {MANIFEST_FORMAT} manifest", "give a manifest `cpr select` wrote")
    if d.get("format_version") != FORMAT_VERSION:
        raise _bad(p, f"format_version {d.get('format_version')!r}; this cpr reads {FORMAT_VERSION}")
    try:
        cols = {c: np.asarray(d["windows"][c]) for c in _COLUMNS}
        names = tuple(str(n) for n in d["blocks"]["names"])
        n_train = int(d["corpus"]["n_train_tokens"])
        str(d["corpus"]["fingerprint"])
        m = SelectionManifest(
            corpus=dict(d["corpus"]),
            seq_len=int(d["seq_len"]),
            min_tokens=int(d["min_tokens"]),
            base=dict(d["base"]),
            score=str(d["score"]),
            length_correction=bool(d["length_correction"]),
            fraction=float(d["fraction"]),
            skip_top=float(d.get("skip_top", 0.0)),
            seed=int(d["seed"]),
            windows=Windows(
                cols["start"].astype(np.int64), cols["length"].astype(np.int64), cols["doc"].astype(np.int64)
            ),
            block=cols["block"].astype(np.int64),
            scores=cols["score"].astype(float),
            kept=cols["kept"].astype(bool),
            loss=cols["loss"].astype(float),
            predicted=cols["predicted"].astype(float),
            block_kind=str(d["blocks"]["kind"]),
            block_names=names,
            predictor=d.get("predictor"),
            length_bias=d.get("length_bias"),
            cross_influence=d.get("cross_influence"),
            provenance=dict(d.get("provenance") or {}),
            created_at=d.get("created_at"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(p, f"malformed ({type(exc).__name__}: {exc})"[:200]) from None
    sizes = {c: v.shape for c, v in cols.items()}
    if len(set(sizes.values())) != 1 or cols["start"].ndim != 1:
        raise _bad(p, f"its window columns differ in length ({sizes})")
    w = m.windows
    if len(w) and (w.start.min() < 0 or (w.start + w.length).max() > n_train or w.length.min() < 2):
        raise _bad(p, f"a window lies outside the corpus's {n_train:,} training tokens")
    if len(w) and (m.block.min() < 0 or m.block.max() >= len(names)):
        raise _bad(p, "a window's block is not among its block names")
    if not m.kept.any():
        raise _bad(p, "it keeps no window")
    return m


def check_corpus(m: SelectionManifest, path: str | Path, fingerprint: str, n_train_tokens: int | None) -> None:
    """The manifest was made for this tokenized corpus: same fingerprint (files, split, tokenizer) and token count
    (None: not tokenized yet, as in the preflight; the fingerprint alone is compared)."""
    want = m.corpus.get("fingerprint")
    have = int(m.corpus.get("n_train_tokens", -1))
    if want != fingerprint or (n_train_tokens is not None and have != n_train_tokens):
        count = "" if n_train_tokens is None else f" ({n_train_tokens} tokens)"
        raise InputError(
            FIELD,
            f"{path} was made for corpus {want} ({m.corpus.get('n_train_tokens')} training tokens), this job's data "
            f"is {fingerprint}{count}: another corpus or tokenizer",
            "run `cpr select` on this job's data (same data.* and tokenizer)",
        )
