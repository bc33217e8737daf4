"""Where documents come from: the stdlib's sources, a folder of text files, or local files read by HF datasets.

Each source lists its documents in a stable order and splits them by document: every `val_every`-th document is
held out for validation (Ψ), the rest are for training. A `memmap` source is already tokenized and lists nothing.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError

SOURCES = ("stdlib", "text_dir", "hf_files", "memmap")
STDLIB_SKIP = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__", "encodings", "pydoc_data"})
"""Tests, third-party packages, generated code-page tables (encodings/) and the docs blob (pydoc_data/)."""
HF_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """A corpus's files (for fingerprinting) and how to read its train and validation documents."""

    source: str
    root: Path
    files: tuple[Path, ...]
    val_every: int
    max_files: int | None
    text_field: str = "text"
    hf_format: str | None = None

    def split(self, index: int) -> str:
        return "val" if index % self.val_every == self.val_every - 1 else "train"

    def documents(self) -> Iterator[tuple[str, str]]:
        """(split, text) for every document, in a stable order."""
        if self.source == "hf_files":
            yield from self._hf_documents()
            return
        for i, f in enumerate(self.files):
            yield self.split(i), f.read_text(encoding="utf-8", errors="replace")

    def _hf_documents(self) -> Iterator[tuple[str, str]]:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from datasets import load_dataset

        fmt = self.hf_format or HF_FORMATS[self.files[0].suffix.lower()]
        ds = load_dataset(fmt, data_files=[str(f) for f in self.files], split="train")
        if self.text_field not in ds.column_names:
            cols = ", ".join(ds.column_names)
            raise InputError(
                "data.text_field",
                f"no column {self.text_field!r} in the files (columns: {cols})",
                "set data.text_field to the column that holds the text",
            )
        n = 0
        for row in ds:
            if self.max_files is not None and n >= self.max_files:
                break
            text = row[self.text_field]
            if isinstance(text, str) and text:
                yield self.split(n), text
                n += 1


def _cfg_path(cfg: Any) -> Path:
    if not cfg.path:
        raise InputError("data.path", f"is required for data.source={cfg.source}", "e.g. data.path=/data/corpus")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise InputError("data.path", f"{path} does not exist", "point data.path at your data")
    return path


def _check_split(files: tuple[Path, ...], cfg: Any, where: Path) -> None:
    val_every = cfg.val_every
    if not isinstance(val_every, int) or val_every < 2:
        raise InputError(
            "data.val_every", f"must be an integer ≥ 2, got {val_every!r}", "e.g. 20: every 20th file is held out"
        )
    if not files:
        raise InputError(
            "data.path", f"no files under {where} match {cfg.glob or '**/*.txt'!r}", "check data.path and data.glob"
        )
    if len(files) < val_every and cfg.source != "hf_files":
        raise InputError(
            "data.path",
            f"{len(files)} files under {where}: too few to hold out every {val_every}th for validation",
            f"add files or lower data.val_every (≥ 2) to at most {max(2, len(files))}",
        )


def open_corpus(cfg: Any) -> Corpus:
    """List the corpus a DataConfig names; InputError for a missing, empty or unreadable source."""
    if cfg.source not in SOURCES:
        raise InputError("data.source", f"unknown source {cfg.source!r}", f"use one of: {', '.join(SOURCES)}")
    if cfg.max_files is not None and (not isinstance(cfg.max_files, int) or cfg.max_files < 2):
        raise InputError(
            "data.max_files", f"must be an integer ≥ 2 or null, got {cfg.max_files!r}", "or null for all files"
        )
    if cfg.source == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(
            (p for p in root.rglob("*.py") if not STDLIB_SKIP.intersection(p.relative_to(root).parts[:-1])),
            key=lambda p: p.relative_to(root).as_posix(),
        )
    elif cfg.source == "text_dir":
        root = _cfg_path(cfg)
        if not root.is_dir():
            raise InputError("data.path", f"{root} is not a folder", "data=text_dir needs a folder of text files")
        files = sorted((p for p in root.glob(cfg.glob or "**/*.txt") if p.is_file()), key=lambda p: p.as_posix())
    elif cfg.source == "hf_files":
        path = _cfg_path(cfg)
        root = path if path.is_dir() else path.parent
        files = (
            sorted(p for p in path.glob(cfg.glob or "**/*") if p.is_file() and p.suffix.lower() in HF_FORMATS)
            if path.is_dir()
            else [path]
        )
        if files and cfg.hf_format is None and files[0].suffix.lower() not in HF_FORMATS:
            raise InputError(
                "data.hf_format",
                f"cannot tell the format of {files[0].name}",
                "set data.hf_format=json|csv|parquet|text",
            )
    else:
        root = _cfg_path(cfg)
        return Corpus(source="memmap", root=root, files=(), val_every=cfg.val_every, max_files=None)
    if cfg.max_files is not None and cfg.source != "hf_files":
        files = files[: cfg.max_files]
    files_t = tuple(files)
    _check_split(files_t, cfg, root)
    return Corpus(
        source=cfg.source,
        root=root,
        files=files_t,
        val_every=cfg.val_every,
        max_files=cfg.max_files,
        text_field=cfg.text_field,
        hf_format=cfg.hf_format,
    )
