"""Tokenize a corpus once into flat token memmaps (nanoGPT's train.bin / val.bin) with a locally trained tokenizer,
or with a given one (`data.tokenizer`: a base model's, for adaptation).

The cache sits next to the data (`<data>/.cpr_cache/<fingerprint>/`, or `~/.cache/cpr/data/` when the data's folder
is not writable, as for the stdlib) and is keyed by a fingerprint of the files (path, size, mtime), the split and
the tokenizer (the trained one's size, or the given file's sha256): a changed corpus or tokenizer is tokenized
again, an unchanged one is reused at once. Concurrent preparations of the same corpus take a file lock; the results
appear by an atomic rename.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.data.sources import Corpus, open_corpus, open_domain
from orchestrator.errors import InputError

FORMAT_VERSION = 1
EOS = "<|endoftext|>"


@dataclass(frozen=True, kw_only=True)
class PreparedData:
    """Token memmaps and the tokenizer of a corpus, ready for the workers (plain paths: they cross Ray)."""

    source: str
    cache_dir: Path
    tokenizer_path: Path | None
    train_bin: Path
    val_bin: Path
    dtype: str
    vocab_size: int
    eos_id: int
    n_train_tokens: int
    n_val_tokens: int
    fingerprint: str
    domains: dict[str, str] = field(default_factory=dict)
    """Probe validation domains: name -> flat token file (same dtype and tokenizer)."""
    selection: str | None = None
    """The id of the selection manifest (`data.selection`) whose kept windows `train_bin` holds; None: the whole
    training split (orchestrator/data/selection.py)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedData:
        paths = {"cache_dir", "tokenizer_path", "train_bin", "val_bin"}
        return cls(**{k: (Path(v) if k in paths and v is not None else v) for k, v in data.items()})

    def tokens(self, split: str) -> np.memmap:
        """Tokens of "train", "val" or a probe domain's name."""
        path = self.domains.get(split, self.train_bin if split == "train" else self.val_bin)
        return np.memmap(path, dtype=self.dtype, mode="r")


def fingerprint(corpus: Corpus, tokenizer_vocab: int | None, tokenizer_sha256: str | None = None) -> str:
    """Files (path, size, mtime), split and tokenizer (the trained one's size or the given file's sha256): what the
    prepared tokens depend on."""
    key: list[Any] = [
        FORMAT_VERSION,
        corpus.source,
        corpus.val_every,
        corpus.max_files,
        tokenizer_vocab,
        corpus.text_field,
        corpus.hf_format,
    ]
    if tokenizer_sha256 is not None:  # appended only when given: a trained tokenizer's caches keep their names
        key.append(tokenizer_sha256)
    h = hashlib.sha256()
    h.update(json.dumps(key).encode())
    for f in corpus.files:
        st = f.stat()
        h.update(f"{f.relative_to(corpus.root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def eval_set_fingerprint(prepared: PreparedData, domains: list[str], params: dict[str, str], sequences: int) -> str:
    """What Ψ is measured on, as 16 hex digits (param `cpr.eval_set`): the corpus's fingerprint (its files, split
    and tokenizer fix the held-out split), each of Ψ's domains' token file (name and size), the sequences a check
    evaluates and their length, and Ψ's definition (`psi.*` params). Two runs with the same one report Ψ on the same
    held-out tokens, so their Ψ may be compared (`cpr leaderboard`)."""
    key: dict[str, Any] = {
        "corpus": prepared.fingerprint,
        "domains": {d: [Path(prepared.domains[d]).name, Path(prepared.domains[d]).stat().st_size] for d in domains},
        "sequences": sequences,
        "seq_len": params.get("train.seq_len"),
        "psi": {k: v for k, v in sorted(params.items()) if k.startswith("psi.")},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_base(corpus: Corpus, cfg: Any) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    home = Path(os.environ.get("CPR_CACHE_DIR", Path.home() / ".cache" / "cpr")) / "data"
    if corpus.source == "stdlib":
        return home
    beside = corpus.root / ".cpr_cache"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    return home


def _load(cache: Path, source: str, fp: str) -> PreparedData:
    meta = json.loads((cache / "meta.json").read_text())
    tok = cache / "tokenizer.json"
    return PreparedData(
        source=source,
        cache_dir=cache,
        tokenizer_path=tok if tok.exists() else None,
        train_bin=cache / "train.bin",
        val_bin=cache / "val.bin",
        dtype=meta["dtype"],
        vocab_size=int(meta["vocab_size"]),
        eos_id=int(meta["eos_id"]),
        n_train_tokens=int(meta.get("n_train_tokens", 0)),
        n_val_tokens=int(meta.get("n_val_tokens", 0)),
        fingerprint=fp,
    )


def _memmap_source(corpus: Corpus) -> PreparedData:
    root = corpus.root
    for name in ("train.bin", "val.bin", "meta.json"):
        if not (root / name).is_file():
            raise InputError(
                "data.path", f"{root} has no {name}", "a memmap folder holds train.bin, val.bin and meta.json"
            )
    try:
        meta = json.loads((root / "meta.json").read_text())
        dtype, vocab, eos = str(meta["dtype"]), int(meta["vocab_size"]), int(meta.get("eos_id", 0))
        np.dtype(dtype)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            "data.path",
            f"{root / 'meta.json'} is not valid ({exc})",
            'write {"dtype": "uint16", "vocab_size": N, "eos_id": K}',
        ) from None
    if dtype not in ("uint16", "uint32") or vocab < 2:
        raise InputError(
            "data.path", f"meta.json: dtype {dtype!r}, vocab_size {vocab}", "dtype uint16 or uint32, vocab_size ≥ 2"
        )
    n = {s: (root / f"{s}.bin").stat().st_size // np.dtype(dtype).itemsize for s in ("train", "val")}
    meta_fp = hashlib.sha256(json.dumps([meta, n]).encode()).hexdigest()[:16]
    return PreparedData(
        source="memmap",
        cache_dir=root,
        tokenizer_path=None,
        train_bin=root / "train.bin",
        val_bin=root / "val.bin",
        dtype=dtype,
        vocab_size=vocab,
        eos_id=eos,
        n_train_tokens=n["train"],
        n_val_tokens=n["val"],
        fingerprint=meta_fp,
    )


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """Byte-level BPE trained on the train split only (no download: HF tokenizers' trainer, locally)."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False)
    return tok


@dataclass(frozen=True)
class GivenTokenizer:
    """The tokenizer `data.tokenizer` names: its file, the bytes read from it once (hashed, parsed and copied into
    the cache: a file changed meanwhile cannot make them disagree), their sha256 and the `tokenizers.Tokenizer`."""

    path: Path
    data: bytes = field(repr=False)
    sha256: str
    tokenizer: Any

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce fits below it (added tokens included, gaps in the ids too)."""
        ids = self.tokenizer.get_vocab(with_added_tokens=True).values()
        return max(self.tokenizer.get_vocab_size(with_added_tokens=True), max(ids, default=-1) + 1)


def given_tokenizer(cfg: Any) -> GivenTokenizer | None:
    """`data.tokenizer` read (a tokenizer.json, or a folder holding one); None when it is not set.

    InputError naming `data.tokenizer` for a memmap corpus (its ids are already made), a missing path, a file
    `tokenizers` cannot read, or a tokenizer without the EOS token the documents are separated by."""
    if cfg.tokenizer is None:
        return None
    field = "data.tokenizer"
    if cfg.source == "memmap":
        raise InputError(field, "is ignored by data.source=memmap: its token ids are already made", "drop it")
    path = Path(cfg.tokenizer).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise InputError(field, f"{path} does not exist", "point it at a tokenizer.json or a folder that holds one")
    from tokenizers import Tokenizer

    try:
        data = path.read_bytes()
        tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot parse
        raise InputError(
            field, f"{path} is not a readable tokenizers file ({exc})", "save it with Tokenizer.save or save_pretrained"
        ) from None
    if tok.token_to_id(EOS) is None:
        raise InputError(
            field, f"{path} has no {EOS} token", f"use a tokenizer that has {EOS}: it separates the documents"
        )
    return GivenTokenizer(path=path, data=data, sha256=hashlib.sha256(data).hexdigest(), tokenizer=tok)


def encode(tok: Any, texts: list[str], eos_id: int, dtype: str) -> np.ndarray:
    """All documents' tokens, each followed by EOS, as one flat array (no other special tokens: a given tokenizer's
    post-processor, e.g. a BOS, is not applied)."""
    parts = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        parts.append(np.asarray(enc.ids, dtype=dtype))
        parts.append(np.asarray([eos_id], dtype=dtype))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _fingerprint_of(cfg: Any, corpus: Corpus, given: GivenTokenizer | None) -> str:
    """The cache key of a text corpus: its files and split, and the given tokenizer's sha256 or the trained one's
    size (InputError naming data.tokenizer_vocab for a size no tokenizer can be trained to)."""
    if given is not None:
        return fingerprint(corpus, None, given.sha256)  # data.tokenizer_vocab is not read: nothing is trained
    if not isinstance(cfg.tokenizer_vocab, int) or not 256 < cfg.tokenizer_vocab <= 1 << 20:
        raise InputError(
            "data.tokenizer_vocab", f"must be an integer in (256, 1048576], got {cfg.tokenizer_vocab!r}", "e.g. 4096"
        )
    return fingerprint(corpus, cfg.tokenizer_vocab)


def data_fingerprint(cfg: Any) -> tuple[str, int | None]:
    """The fingerprint `prepare_data` gives this DataConfig's corpus, and its training tokens where known without
    tokenizing (a memmap's); only file listings and a given tokenizer are read, nothing is written."""
    corpus = open_corpus(cfg)
    given = given_tokenizer(cfg)
    if corpus.source == "memmap":
        memmap = _memmap_source(corpus)
        return memmap.fingerprint, memmap.n_train_tokens
    return _fingerprint_of(cfg, corpus, given), None


def check_data(cfg: Any) -> None:
    """The corpus a DataConfig names is there (files listed, a memmap's meta.json read, a given tokenizer loaded);
    nothing is written."""
    corpus = open_corpus(cfg)
    given_tokenizer(cfg)
    if corpus.source == "memmap":
        _memmap_source(corpus)


def prepare_data(cfg: Any, *, log: Callable[[str], None] | None = None) -> PreparedData:
    """The corpus of a DataConfig as token memmaps, from the cache when nothing changed."""
    say = log or (lambda _line: None)
    corpus = open_corpus(cfg)
    given = given_tokenizer(cfg)
    if corpus.source == "memmap":
        return _memmap_source(corpus)
    fp = _fingerprint_of(cfg, corpus, given)
    base = cache_base(corpus, cfg)
    cache = base / fp
    if (cache / "meta.json").exists():
        say(f"{corpus.source}: {len(corpus.files)} files, cached tokens at {cache}")
        return _load(cache, corpus.source, fp)
    base.mkdir(parents=True, exist_ok=True)
    with (base / f".{fp}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be preparing the same corpus: wait for it
        if (cache / "meta.json").exists():
            return _load(cache, corpus.source, fp)
        t0 = time.perf_counter()
        splits: dict[str, list[str]] = {"train": [], "val": []}
        for split, text in corpus.documents():
            splits[split].append(text)
        if not splits["train"] or not splits["val"]:
            raise InputError(
                "data.path",
                f"{corpus.root}: {len(splits['train'])} training and {len(splits['val'])} validation documents",
                "add documents or lower data.val_every",
            )
        if given is None:
            say(
                f"{corpus.source}: training a {cfg.tokenizer_vocab}-token BPE tokenizer on "
                f"{len(splits['train'])} documents"
            )
            tok = train_tokenizer(splits["train"], cfg.tokenizer_vocab)
            vocab = tok.get_vocab_size()
        else:
            say(f"{corpus.source}: encoding with the tokenizer {given.path}")
            tok, vocab = given.tokenizer, given.vocab_size
        dtype = "uint16" if vocab <= 65535 else "uint32"
        eos_id = tok.token_to_id(EOS)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{fp}."))
        try:
            n = {}
            for split, texts in splits.items():
                ids = encode(tok, texts, eos_id, dtype)
                ids.tofile(tmp / f"{split}.bin")
                n[split] = int(ids.size)
            if given is None:
                tok.save(str(tmp / "tokenizer.json"))
            else:
                (tmp / "tokenizer.json").write_bytes(given.data)  # the same bytes: downstream reads it as before
            meta = {
                "dtype": dtype,
                "vocab_size": vocab,
                "eos_id": eos_id,
                "n_train_tokens": n["train"],
                "n_val_tokens": n["val"],
                "source": corpus.source,
                "root": str(corpus.root),
                "files": len(corpus.files),
                "format_version": FORMAT_VERSION,
                **({} if given is None else {"tokenizer": str(given.path), "tokenizer_sha256": given.sha256}),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            os.replace(tmp, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        say(
            f"{corpus.source}: {n['train']:,} train / {n['val']:,} val tokens "
            f"in {time.perf_counter() - t0:.1f} s → {cache}"
        )
        return _load(cache, corpus.source, fp)


def prepare_domains(
    domains: dict[str, Any], prepared: PreparedData, *, log: Callable[[str], None] | None = None
) -> PreparedData:
    """`prepared` with each probe domain's documents tokenized by the job's tokenizer (cached like the corpus)."""
    say = log or (lambda _line: None)
    paths: dict[str, str] = {}
    for name, cfg in domains.items():
        corpus = open_domain(name, cfg)
        if corpus.source == "memmap":
            paths[name] = str(corpus.files[0])
            continue
        if prepared.tokenizer_path is None:
            raise InputError(
                f"data.domains.{name}.source",
                "needs the job's tokenizer, and a memmap corpus has none",
                "give the domain as a memmap folder (val.bin) tokenized like the training data",
            )
        h = hashlib.sha256(f"{FORMAT_VERSION}|{prepared.fingerprint}|{fingerprint(corpus, None)}".encode())
        out = prepared.cache_dir / "domains" / f"{name}-{h.hexdigest()[:16]}.bin"
        if not out.exists():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(prepared.tokenizer_path))
            texts = [text for _split, text in corpus.documents()]
            ids = encode(tok, texts, prepared.eos_id, prepared.dtype)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(f".{os.getpid()}.tmp")
            ids.tofile(tmp)
            os.replace(tmp, out)  # atomic: a concurrent preparer writes the same bytes
            say(f"domain {name}: {len(corpus.files)} files, {ids.size:,} tokens → {out}")
        paths[name] = str(out)
    return replace(prepared, domains=paths)
