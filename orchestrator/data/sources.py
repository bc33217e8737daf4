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


def _cfg_path(cfg: Any, where: str = "data") -> Path:
    if not cfg.path:
        raise InputError(f"{where}.path", f"is required for source={cfg.source}", f"e.g. {where}.path=/data/corpus")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise InputError(f"{where}.path", f"{path} does not exist", f"point {where}.path at your data")
    return path


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_sources(root: Path) -> list[Path]:
    """The standard library's own modules: no tests, third-party packages, generated tables or docs blob."""
    return sorted(
        (p for p in root.rglob("*.py") if not STDLIB_SKIP.intersection(p.relative_to(root).parts[:-1])),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def _hf_files(path: Path, glob: str | None) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.glob(glob or "**/*") if p.is_file() and p.suffix.lower() in HF_FORMATS)


def open_domain(name: str, cfg: Any) -> Corpus:
    """A probe validation domain (`data.domains.<name>`): all of its documents, read like `data` (none trained on)."""
    where = f"data.domains.{name}"
    if cfg.source not in SOURCES:
        raise InputError(f"{where}.source", f"unknown source {cfg.source!r}", f"use one of: {', '.join(SOURCES)}")
    if cfg.source == "stdlib":
        root = _stdlib_root()
        files = sorted(p for p in root.glob(cfg.glob) if p.is_file()) if cfg.glob else _stdlib_sources(root)
    elif cfg.source == "memmap":
        root = _cfg_path(cfg, where)
        if not (root / "val.bin").is_file():
            raise InputError(f"{where}.path", f"{root} has no val.bin", "a memmap domain is a folder with val.bin")
        return Corpus(source="memmap", root=root, files=(root / "val.bin",), val_every=1, max_files=None)
    else:
        root = _cfg_path(cfg, where)
        files = (
            sorted(p for p in root.glob(cfg.glob or "**/*.txt") if p.is_file())
            if cfg.source == "text_dir"
            else _hf_files(root, cfg.glob)
        )
        root = root if root.is_dir() else root.parent
    if cfg.max_files is not None:
        files = files[: cfg.max_files]
    if files and cfg.source == "hf_files" and cfg.hf_format is None and files[0].suffix.lower() not in HF_FORMATS:
        raise InputError(f"{where}.hf_format", f"cannot tell the format of {files[0].name}", "json|csv|parquet|text")
    if not files:
        raise InputError(f"{where}.glob", f"no files under {root} match {cfg.glob!r}", f"check {where}.path and .glob")
    # val_every=1: every document is a validation document.
    return Corpus(
        source=cfg.source,
        root=root,
        files=tuple(files),
        val_every=1,
        max_files=cfg.max_files,
        text_field=cfg.text_field,
        hf_format=cfg.hf_format,
    )


def _check_split(files: tuple[Path, ...], cfg: Any, where: Path) -> None:
    val_every = cfg.val_every
    if not isinstance(val_every, int) or val_every < 2:
        raise InputError(
            "data.val_every", f"must be an integer ≥ 2, got {val_every!r}", "e.g. 20: every 20th file is held out"
        )
    # The stdlib has no data.path: there only data.glob selects the files.
    field, fix = (
        ("data.glob", "check data.glob") if cfg.source == "stdlib" else ("data.path", "check data.path and data.glob")
    )
    if not files:
        raise InputError(field, f"no files under {where} match {cfg.glob or '**/*.txt'!r}", fix)
    if len(files) < val_every and cfg.source != "hf_files":
        raise InputError(
            field,
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
        root = _stdlib_root()
        files = (
            sorted((p for p in root.glob(cfg.glob) if p.is_file()), key=lambda p: p.as_posix())
            if cfg.glob
            else _stdlib_sources(root)
        )
    elif cfg.source == "text_dir":
        root = _cfg_path(cfg)
        if not root.is_dir():
            raise InputError("data.path", f"{root} is not a folder", "data=text_dir needs a folder of text files")
        files = sorted((p for p in root.glob(cfg.glob or "**/*.txt") if p.is_file()), key=lambda p: p.as_posix())
    elif cfg.source == "hf_files":
        path = _cfg_path(cfg)
        root = path if path.is_dir() else path.parent
        files = _hf_files(path, cfg.glob)
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
