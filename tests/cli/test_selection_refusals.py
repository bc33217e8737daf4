"""`data.selection` refused in one line (exit 2) before anything starts, by `cpr submit` and `cpr adapt`: a missing
manifest, a file that is not one, a manifest made for another corpus or tokenizer. A manifest made for the job's
corpus reaches the launch. Manifests are written here with only the fields the checks read filled in."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config.compose import compose_job
from orchestrator.data.prepare import data_fingerprint
from orchestrator.select.windows import Windows
from tests.cli.conftest import Launched, refused, run_cli, tree
from tests.cli.test_adapt_cli import make_base
from tests.conftest import made_manifest

TEXT_DIR = ("data=text_dir", "data.path=c", "data.val_every=3")


def write_manifest(path: Path, fingerprint: str) -> str:
    """A two-window manifest for the corpus of `fingerprint` (1,000 training tokens, it says)."""
    made_manifest(
        Windows(np.array([0, 17]), np.array([17, 17]), np.array([0, 0])),
        {"fingerprint": fingerprint, "source": "text_dir", "n_train_tokens": 1000, "tokenizer_sha256": None},
        np.array([True, False]),
        seq_len=16,
        scores=np.array([0.5, 0.25]),
    ).write(path)
    return str(path)


def corpus(folder: Path) -> None:
    folder.mkdir()
    for i in range(6):
        (folder / f"doc{i}.txt").write_text(f"document {i} of a tiny corpus " * 20)


def fingerprint_of(*overrides: str) -> str:
    return data_fingerprint(compose_job(list(overrides)).data)[0]


def test_a_missing_or_foreign_file_is_refused(hostile: Path) -> None:
    (hostile / "blueprint.json").write_text(json.dumps({"format": "cpr-blueprint", "layers": []}))
    assert "does not exist" in refused(hostile, "data.selection", "submit", "data.selection=nope.json").err
    assert "not a cpr-selection" in refused(hostile, "data.selection", "submit", "data.selection=blueprint.json").err


def test_a_manifest_for_another_corpus_or_tokenizer_is_refused(hostile: Path) -> None:
    corpus(hostile / "c")
    corpus(hostile / "d")
    (hostile / "d" / "doc0.txt").write_text("another text")
    other_corpus = write_manifest(
        hostile / "d.json", fingerprint_of("data=text_dir", f"data.path={hostile / 'd'}", "data.val_every=3")
    )
    other_tokenizer = write_manifest(
        hostile / "v300.json", fingerprint_of(*TEXT_DIR, "data.tokenizer_vocab=300")
    )  # the job trains text_dir's 8192-token tokenizer
    for manifest in (other_corpus, other_tokenizer):
        out = refused(hostile, "data.selection", "submit", *TEXT_DIR, f"data.selection={manifest}")
        assert "another corpus or tokenizer" in out.err and "cpr select" in out.err
    ours = write_manifest(hostile / "ours.json", fingerprint_of(*TEXT_DIR))
    before = tree(hostile)
    with pytest.raises(Launched):  # its own corpus's manifest passes every check
        run_cli("submit", *TEXT_DIR, f"data.selection={ours}")
    assert tree(hostile) == before


def test_cpr_adapt_checks_the_manifest_against_the_bases_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    make_base(tmp_path)
    refused(tmp_path, "data.selection", "adapt", "base", "data.selection=nope.json")
    stdlib = compose_job([]).data
    trained = write_manifest(tmp_path / "trained.json", data_fingerprint(stdlib)[0])  # the job's own tokenizer's
    out = refused(tmp_path, "data.selection", "adapt", "base", f"data.selection={trained}")
    assert "another corpus or tokenizer" in out.err
    tokenizer = str((tmp_path / "base" / "tokenizer.json").resolve())
    ours = write_manifest(tmp_path / "ours.json", data_fingerprint(replace(stdlib, tokenizer=tokenizer))[0])
    done = run_cli("adapt", "base", "--cfg", f"data.selection={ours}")
    assert done.code == 0, done.err
