"""`data.selection`: a job trains on a selection manifest's kept windows (orchestrator/data/selection.py). Small
corpora tokenized in tmp_path, manifests written as `cpr select` writes them."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config.schema import DataConfig
from orchestrator.data.prepare import PreparedData, data_fingerprint, prepare_data
from orchestrator.data.selection import apply_selection, check_selected_tokens, check_selection
from orchestrator.errors import InputError
from orchestrator.select.windows import cut_windows, kept_tokens
from tests.conftest import made_manifest

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "selection", "keeps"]
SEQ_LEN = 16


def corpus(folder: Path, n: int = 10, words: int = 90) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i:02d}.txt").write_text(" ".join(rng.choice(WORDS, size=words - 7 * i)))


def data(tmp_path: Path, **kw: object) -> DataConfig:
    return DataConfig(**{"source": "text_dir", "path": str(tmp_path / "c"), "val_every": 4, "max_files": None, **kw})


def manifest(prepared: PreparedData, path: Path, *, fingerprint: str | None = None, seed: int = 0) -> Path:
    """A manifest keeping a random half of the corpus's windows, written where `path` says."""
    windows = cut_windows(prepared.tokens("train"), prepared.eos_id, SEQ_LEN)
    rng = np.random.default_rng(seed)
    kept = rng.random(len(windows)) < 0.5
    kept[0] = True
    m = made_manifest(
        windows,
        {
            "fingerprint": fingerprint or prepared.fingerprint,
            "source": prepared.source,
            "n_train_tokens": prepared.n_train_tokens,
            "tokenizer_sha256": None,
        },
        kept,
        seq_len=SEQ_LEN,
        scores=rng.random(len(windows)),
        seed=seed,
    )
    return m.write(path)


def test_the_selected_stream_is_the_kept_windows_tokens(tmp_path: Path) -> None:
    corpus(tmp_path / "c")
    cfg = data(tmp_path, tokenizer_vocab=300)
    prepared = prepare_data(cfg)
    path = manifest(prepared, tmp_path / "sel.json")
    m = json.loads(path.read_text())
    selected = apply_selection(prepared, path)

    windows = cut_windows(prepared.tokens("train"), prepared.eos_id, SEQ_LEN)
    want = kept_tokens(prepared.tokens("train"), windows.take(np.flatnonzero(m["windows"]["kept"])), prepared.eos_id)
    assert selected.tokens("train").tolist() == want.tolist()
    assert selected.selection == m["id"] and selected.n_train_tokens == want.size < prepared.n_train_tokens
    assert selected.train_bin == prepared.cache_dir / "selections" / f"{m['id']}.bin"
    assert (selected.val_bin, selected.n_val_tokens) == (prepared.val_bin, prepared.n_val_tokens)  # Ψ's data as is
    # It crosses Ray as a dict (Submission.prepared, job.json), and an older job's dict has no selection.
    plain = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(selected).items()}
    assert PreparedData.from_dict(plain) == selected
    assert PreparedData.from_dict({k: v for k, v in plain.items() if k != "selection"}).selection is None
    check_selection(replace(cfg, selection=str(path)))  # the preflight passes it too


def test_the_stream_is_written_once_and_reused(tmp_path: Path) -> None:
    corpus(tmp_path / "c")
    prepared = prepare_data(data(tmp_path, tokenizer_vocab=300))
    path = manifest(prepared, tmp_path / "sel.json")
    lines: list[str] = []
    first = apply_selection(prepared, path, log=lines.append)
    stat = first.train_bin.stat()
    again = apply_selection(prepared, path, log=lines.append)
    assert again == first
    assert (again.train_bin.stat().st_mtime_ns, again.train_bin.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    assert "windows" in lines[0] and "cached" in lines[1]
    assert [p.name for p in first.train_bin.parent.iterdir()] == [first.train_bin.name]  # no temporary file left
    other = apply_selection(prepared, manifest(prepared, tmp_path / "other.json", seed=1))
    assert other.selection != first.selection and other.train_bin != first.train_bin


def test_a_manifest_for_another_corpus_or_tokenizer_is_refused(tmp_path: Path) -> None:
    corpus(tmp_path / "c")
    cfg = data(tmp_path, tokenizer_vocab=300)
    prepared = prepare_data(cfg)
    alien = manifest(prepared, tmp_path / "alien.json", fingerprint="0123456789abcdef")
    for check in (lambda: apply_selection(prepared, alien), lambda: check_selection(replace(cfg, selection=alien))):
        with pytest.raises(InputError) as err:
            check()
        assert err.value.field == "data.selection" and "another corpus or tokenizer" in err.value.one_line()
    # Made for this corpus under its trained 300-token tokenizer: another tokenizer's fingerprint differs.
    ours = manifest(prepared, tmp_path / "ours.json")
    with pytest.raises(InputError, match="another corpus or tokenizer"):
        check_selection(replace(cfg, tokenizer_vocab=320, selection=str(ours)))
    # Same fingerprint, another token count (a manifest edited by hand, or a corpus cut differently).
    with pytest.raises(InputError, match="another corpus"):
        apply_selection(replace(prepared, n_train_tokens=prepared.n_train_tokens + 1), ours)
    assert not (prepared.cache_dir / "selections").exists()  # nothing written for a refused manifest


def test_a_missing_file_or_a_non_manifest_is_refused_in_the_preflight(tmp_path: Path) -> None:
    corpus(tmp_path / "c")
    (tmp_path / "other.json").write_text(json.dumps({"format": "cpr-blueprint"}))
    (tmp_path / "broken.json").write_text("{not json")
    for name, words in (
        ("nope.json", "does not exist"),
        ("other.json", "not a cpr-selection"),
        ("broken.json", "JSON"),
    ):
        with pytest.raises(InputError, match=words) as err:
            check_selection(data(tmp_path, selection=str(tmp_path / name)), against_corpus=False)
        assert err.value.field == "data.selection"
    check_selection(data(tmp_path))  # unset: nothing to check


def test_a_memmap_corpus_takes_a_manifest_with_its_fingerprint(tmp_path: Path) -> None:
    folder = tmp_path / "mm"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train = rng.integers(1, 50, size=600).astype(np.uint16)
    train[::37] = 0  # EOS between documents
    train.tofile(folder / "train.bin")
    rng.integers(1, 50, size=200).astype(np.uint16).tofile(folder / "val.bin")
    (folder / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 50, "eos_id": 0}))
    cfg = DataConfig(source="memmap", path=str(folder))
    prepared = prepare_data(cfg)
    assert data_fingerprint(cfg) == (prepared.fingerprint, 600)
    path = manifest(prepared, tmp_path / "sel.json")
    check_selection(replace(cfg, selection=str(path)))
    selected = apply_selection(prepared, path)
    assert selected.train_bin.parent == folder / "selections" and 0 < selected.n_train_tokens < 600
    np.arange(601, dtype=np.uint16).tofile(folder / "train.bin")  # another memmap corpus: refused
    with pytest.raises(InputError, match="another corpus"):
        check_selection(replace(cfg, selection=str(path)))


def test_a_selection_shorter_than_one_sequence_is_refused(tmp_path: Path) -> None:
    corpus(tmp_path / "c")
    prepared = prepare_data(data(tmp_path, tokenizer_vocab=300))
    selected = apply_selection(prepared, manifest(prepared, tmp_path / "sel.json"))
    check_selected_tokens(selected, SEQ_LEN)
    check_selected_tokens(prepared, 10**6)  # no selection: the ranks check the split itself
    with pytest.raises(InputError, match="fewer than one sequence") as err:
        check_selected_tokens(selected, selected.n_train_tokens)
    assert err.value.field == "data.selection"
