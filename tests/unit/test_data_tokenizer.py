"""Data preparation with a given tokenizer (`data.tokenizer`, an adaptation job's base model's) and the stdlib corpus
chosen by `data.glob`: small corpora in tmp_path, tokenizers trained in the test on a few texts."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config.schema import DataConfig, DomainConfig
from orchestrator.data.prepare import EOS, check_data, prepare_data, prepare_domains, train_tokenizer
from orchestrator.data.sources import open_corpus
from orchestrator.errors import InputError

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "adaptation", "shifts"]


def corpus(folder: Path, n: int = 8, words: int = 120) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i:02d}.txt").write_text(" ".join(rng.choice(WORDS, size=words)))


def save_tokenizer(path: Path, texts: list[str], vocab: int = 300) -> Path:
    """A base model's tokenizer, as `Tokenizer.save` writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    train_tokenizer(texts, vocab).save(str(path))
    return path


def data(tmp_path: Path, **kw: object) -> DataConfig:
    return DataConfig(**{"source": "text_dir", "path": str(tmp_path / "c"), "val_every": 4, "max_files": None, **kw})


def test_a_given_tokenizer_encodes_the_corpus_and_its_domains(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    corpus(tmp_path / "c")
    given = save_tokenizer(tmp_path / "base" / "tokenizer.json", ["a different text about foxes and dogs"] * 20)
    base = Tokenizer.from_file(str(given))
    # A folder holding tokenizer.json, as save_pretrained writes it; tokenizer_vocab is not read.
    p = prepare_data(data(tmp_path, tokenizer=str(tmp_path / "base"), tokenizer_vocab=5000))
    assert (p.vocab_size, p.eos_id) == (base.get_vocab_size(), base.token_to_id(EOS))
    assert p.tokenizer_path is not None and p.tokenizer_path.read_bytes() == given.read_bytes()
    text = (tmp_path / "c" / "doc00.txt").read_text()
    train = p.tokens("train").tolist()
    assert train[: train.index(p.eos_id)] == base.encode(text).ids
    assert json.loads((p.cache_dir / "meta.json").read_text())["tokenizer"] == str(given)
    trained = prepare_data(data(tmp_path, tokenizer_vocab=300))  # the job's own tokenizer: another cache
    assert trained.fingerprint != p.fingerprint and trained.tokens("train").tolist() != train

    (tmp_path / "prose").mkdir()
    (tmp_path / "prose" / "a.txt").write_text("the lazy dog shifts while the fox jumps")
    out = prepare_domains({"prose": DomainConfig(source="text_dir", path=str(tmp_path / "prose"))}, p)
    ids = out.tokens("prose").tolist()
    assert ids == [*base.encode("the lazy dog shifts while the fox jumps").ids, p.eos_id]


def test_a_changed_tokenizer_file_changes_the_fingerprint(tmp_path: Path) -> None:
    corpus(tmp_path / "c")
    path = save_tokenizer(tmp_path / "tok.json", ["one corpus of words"] * 20)
    cfg = data(tmp_path, tokenizer=str(path))
    first = prepare_data(cfg)
    assert prepare_data(cfg) == first  # the same file: the cache is reused
    save_tokenizer(path, ["the quick brown fox jumps over the lazy dog"] * 20, vocab=320)
    second = prepare_data(cfg)
    assert second.fingerprint != first.fingerprint and second.cache_dir != first.cache_dir
    assert second.tokenizer_path is not None and second.tokenizer_path.read_bytes() == path.read_bytes()


def _no_eos(path: Path) -> str:
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"the": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(path))
    return str(path)


def _corrupt(path: Path) -> str:
    path.write_text('{"version": "1.0", "model": ')
    return str(path)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda t: str(t / "missing.json"), "does not exist"),
        (lambda t: str(t), "does not exist"),  # a folder without tokenizer.json
        (lambda t: _corrupt(t / "tok.json"), "is not a readable tokenizers file"),
        (lambda t: _no_eos(t / "tok.json"), f"has no {EOS} token"),
    ],
    ids=["missing", "folder-without-tokenizer-json", "corrupt-json", "no-eos"],
)
def test_a_bad_tokenizer_is_refused_naming_data_tokenizer(tmp_path: Path, make, problem: str) -> None:
    corpus(tmp_path / "c")
    (tmp_path / "t").mkdir()
    cfg = data(tmp_path, tokenizer=make(tmp_path / "t"))
    for check in (check_data, prepare_data):  # the preflight refuses it too, before anything is written
        with pytest.raises(InputError, match=problem) as err:
            check(cfg)
        assert err.value.field == "data.tokenizer"
    assert not (tmp_path / "c" / ".cpr_cache").exists() or not any((tmp_path / "c" / ".cpr_cache").iterdir())


def test_a_memmap_corpus_refuses_a_tokenizer(tmp_path: Path) -> None:
    folder = tmp_path / "mm"
    folder.mkdir()
    np.arange(100, dtype=np.uint16).tofile(folder / "train.bin")
    np.arange(10, dtype=np.uint16).tofile(folder / "val.bin")
    (folder / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 100, "eos_id": 0}))
    tok = save_tokenizer(tmp_path / "tok.json", ["some words here"] * 10)
    cfg = DataConfig(source="memmap", path=str(folder), max_files=None, tokenizer=str(tok))
    for check in (check_data, prepare_data):
        with pytest.raises(InputError, match="memmap") as err:
            check(cfg)
        assert err.value.field == "data.tokenizer"


def test_the_stdlib_corpus_honours_data_glob(tmp_path: Path) -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    tests = open_corpus(DataConfig(source="stdlib", glob="test/test_*.py", max_files=None))
    assert tests.root == root and len(tests.files) == len([p for p in root.glob("test/test_*.py") if p.is_file()])
    assert all(f.parent == root / "test" and f.name.startswith("test_") for f in tests.files)
    assert list(tests.files) == sorted(tests.files, key=lambda p: p.as_posix())
    default = open_corpus(DataConfig(source="stdlib", max_files=None))
    assert not any("test" in f.relative_to(root).parts[:-1] for f in default.files)  # no glob: the library only
    capped = open_corpus(DataConfig(source="stdlib", glob="test/test_*.py"))
    assert capped.files == tests.files[:150]  # max_files applies as before

    p = prepare_data(
        DataConfig(source="stdlib", glob="json/*.py", val_every=2, tokenizer_vocab=300, cache_dir=str(tmp_path))
    )
    assert p.n_train_tokens > 0 and p.n_val_tokens > 0

    for glob, val_every in (("no_such_*.py", 6), ("json/__init__.py", 6)):  # nothing, or too few to split
        with pytest.raises(InputError) as err:
            open_corpus(DataConfig(source="stdlib", glob=glob, val_every=val_every))
        assert err.value.field == "data.glob" and "check data.path" not in str(err.value)
