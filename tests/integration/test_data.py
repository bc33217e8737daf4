"""Data pipeline on real files made by the test: sources, tokenizer + memmap cache, batches, bad input."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from orchestrator.data.batches import TrainBatches, val_batches
from orchestrator.data.prepare import prepare_data
from orchestrator.errors import InputError

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "pretraining", "stops"]


@dataclass
class Data:
    source: str = "text_dir"
    path: str | None = None
    glob: str | None = None
    text_field: str = "text"
    hf_format: str | None = None
    val_every: int = 4
    max_files: int | None = None
    tokenizer_vocab: int = 300
    tokenizer: str | None = None
    cache_dir: str | None = None


def corpus(folder, n: int = 12, words: int = 400) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i:02d}.txt").write_text(" ".join(rng.choice(WORDS, size=words)))


def test_text_dir_round_trips_through_the_tokenizer_and_is_cached_next_to_the_data(tmp_path) -> None:
    from tokenizers import Tokenizer

    corpus(tmp_path / "c")
    cfg = Data(path=str(tmp_path / "c"))
    first = prepare_data(cfg)
    assert first.cache_dir.parent == tmp_path / "c" / ".cpr_cache"
    tok = Tokenizer.from_file(str(first.tokenizer_path))
    train = first.tokens("train")
    first_doc = tok.decode(list(train[: list(train).index(first.eos_id)]))
    assert first_doc == (tmp_path / "c" / "doc00.txt").read_text()
    assert first.n_val_tokens > 0 and first.n_train_tokens > 2 * first.n_val_tokens
    mtime = first.train_bin.stat().st_mtime_ns
    again = prepare_data(cfg)
    assert again == first and again.train_bin.stat().st_mtime_ns == mtime  # reused, not re-tokenized
    (tmp_path / "c" / "doc03.txt").write_text("changed " * 50)
    assert prepare_data(cfg).fingerprint != first.fingerprint


def test_hf_files_jsonl_and_csv(tmp_path) -> None:
    rows = [{"text": " ".join(WORDS[i % 5 :] * 20), "id": i} for i in range(16)]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = prepare_data(Data(source="hf_files", path=str(jsonl), cache_dir=str(tmp_path / "cache")))
    assert a.n_train_tokens > 0 and a.n_val_tokens > 0
    csv = tmp_path / "t.csv"
    csv.write_text("body\n" + "".join(f"{r['text']}\n" for r in rows))
    with pytest.raises(InputError) as err:
        prepare_data(Data(source="hf_files", path=str(csv), cache_dir=str(tmp_path / "cache")))
    assert err.value.field == "data.text_field"
    b = prepare_data(Data(source="hf_files", path=str(csv), text_field="body", cache_dir=str(tmp_path / "cache")))
    assert b.n_train_tokens > 0


def test_memmap_source_is_used_as_it_is(tmp_path) -> None:
    folder = tmp_path / "mm"
    folder.mkdir()
    np.arange(5000, dtype=np.uint16).tofile(folder / "train.bin")
    np.arange(900, dtype=np.uint16).tofile(folder / "val.bin")
    (folder / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 5000, "eos_id": 0}))
    p = prepare_data(Data(source="memmap", path=str(folder)))
    assert (p.n_train_tokens, p.n_val_tokens, p.vocab_size) == (5000, 900, 5000)


def test_stdlib_with_a_file_cap(tmp_path) -> None:
    p = prepare_data(Data(source="stdlib", max_files=40, val_every=20, tokenizer_vocab=512, cache_dir=str(tmp_path)))
    assert p.vocab_size == 512 and p.n_val_tokens > 0


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda t: Data(path=str(t / "missing")), "data.path"),
        (lambda t: Data(path=None), "data.path"),
        (lambda t: Data(path=str(t / "empty")), "data.path"),
        (lambda t: Data(source="s3"), "data.source"),
        (lambda t: Data(source="memmap", path=str(t / "empty")), "data.path"),
        (lambda t: Data(path=str(t / "c"), val_every=1), "data.val_every"),
        (lambda t: Data(path=str(t / "c"), tokenizer_vocab=10), "data.tokenizer_vocab"),
    ],
)
def test_bad_data_config_names_the_field(tmp_path, make, field: str) -> None:
    (tmp_path / "empty").mkdir()
    corpus(tmp_path / "c")
    with pytest.raises(InputError) as err:
        prepare_data(make(tmp_path))
    assert err.value.field == field


def test_batches_are_deterministic_resumable_and_the_same_global_batch_at_any_world_size(tmp_path) -> None:
    corpus(tmp_path / "c", n=20, words=1000)
    p = prepare_data(Data(path=str(tmp_path / "c")))
    r0, r1 = TrainBatches(p, 16, 4, 1, 0, 2, seed=1), TrainBatches(p, 16, 4, 1, 1, 2, seed=1)
    x0, y0 = next(r0)
    assert x0.shape == (4, 16) and (x0[:, 1:] == y0[:, :-1]).all()
    assert not (next(r1)[0] == x0).all()  # ranks take different slices of the step's global batch
    again = TrainBatches(p, 16, 4, 1, 0, 2, seed=1)
    assert (next(again)[0] == x0).all()
    next(r0)
    third = next(r0)[0]
    resumed = TrainBatches(p, 16, 4, 1, 0, 2, seed=1)
    resumed.load_state_dict({"step": 2, "micro": 0})
    assert (next(resumed)[0] == third).all()

    # Step by step, 2 ranks × 1 micro-step, 1 rank × 2 micro-steps and 4 ranks of half the micro-batch × 1 all
    # train on the same sequences (a resize keeps the global batch, and so the data).
    def step_rows(world: int, micro: int, accum: int, steps: int) -> list[list[bytes]]:
        ranks = [TrainBatches(p, 16, micro, accum, r, world, seed=1) for r in range(world)]
        rows = []
        for _ in range(steps):
            rows.append(sorted(bytes(x.numpy()) for rank in ranks for _ in range(accum) for x in next(rank)[0]))
        return rows

    assert step_rows(2, 4, 1, 3) == step_rows(1, 4, 2, 3) == step_rows(4, 2, 1, 3)
    v = val_batches(p, 16, 4, 8)
    assert len(v) == 2 and all((a[0] == b[0]).all() for a, b in zip(v, val_batches(p, 16, 4, 8), strict=True))
    with pytest.raises(InputError):
        val_batches(p, 16, 4, p.n_val_tokens)


def test_probe_domains_are_tokenized_with_the_jobs_tokenizer_and_cached(tmp_path) -> None:
    from tokenizers import Tokenizer

    from orchestrator.config.schema import DomainConfig
    from orchestrator.data.prepare import prepare_domains

    corpus(tmp_path / "train")
    (tmp_path / "prose").mkdir()
    (tmp_path / "prose" / "a.txt").write_text("the lazy dog stops while the fox jumps " * 20)
    prepared = prepare_data(Data(path=str(tmp_path / "train")))
    domains = {
        "prose": DomainConfig(source="text_dir", path=str(tmp_path / "prose")),
        "docs": DomainConfig(source="stdlib", glob="pydoc_data/topics.py"),
    }
    out = prepare_domains(domains, prepared)
    assert set(out.domains) == {"prose", "docs"} and out.train_bin == prepared.train_bin
    tok = Tokenizer.from_file(str(prepared.tokenizer_path))
    ids = out.tokens("prose")
    assert ids[-1] == prepared.eos_id and tok.decode(ids[:-1].tolist()).startswith("the lazy dog stops")
    assert len(out.tokens("docs")) > 10_000
    from pathlib import Path

    cached = Path(out.domains["prose"])
    mtime = cached.stat().st_mtime_ns
    assert prepare_domains(domains, prepared).domains == out.domains  # cached: the same files, not rewritten
    assert cached.stat().st_mtime_ns == mtime
    windows = val_batches(out, 16, 2, 4, split="prose")
    assert len(windows) == 2 and windows[0][0].shape == (2, 16)


@pytest.mark.parametrize(
    ("domain", "field"),
    [
        ({"source": "text_dir"}, "data.domains.d.path"),
        ({"source": "text_dir", "path": "/no/such/dir"}, "data.domains.d.path"),
        ({"source": "text_dir", "path": "EMPTY"}, "data.domains.d.glob"),
        ({"source": "stdlib", "glob": "no_such_*.py"}, "data.domains.d.glob"),
        ({"source": "memmap", "path": "EMPTY"}, "data.domains.d.path"),
    ],
)
def test_bad_domains_name_their_field(tmp_path, domain: dict, field: str) -> None:
    from orchestrator.config.schema import DomainConfig
    from orchestrator.data.prepare import prepare_domains

    corpus(tmp_path / "train")
    (tmp_path / "empty").mkdir()
    prepared = prepare_data(Data(path=str(tmp_path / "train")))
    if domain.get("path") == "EMPTY":
        domain = {**domain, "path": str(tmp_path / "empty")}
    with pytest.raises(InputError) as err:
        prepare_domains({"d": DomainConfig(**domain)}, prepared)
    assert err.value.field == field
