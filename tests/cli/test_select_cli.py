"""`cpr select`'s refusals (docs/bad-input.md): q outside (0, 1], no base, a base whose weights do not match its
config, a sample larger than the corpus, a data.selection on the select job itself. Each is one line naming the
field, exit 2, and Ray is not started. The base is a tiny save_pretrained folder made here, with a tokenizer
trained here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import assert_one_line, refused, run_cli

CORPUS = ("data.glob=json/*.py", "data.val_every=2", "data.max_files=null")
"""The standard library's json package: a handful of files, tokenized in a second."""


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a 300-token BPE tokenizer trained on two texts, saved as `cpr export` would."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from orchestrator.data.prepare import train_tokenizer

    folder = tmp_path_factory.mktemp("base")
    texts = [Path(json.__file__).read_text(), Path(json.__file__).with_name("decoder.py").read_text()]
    tok = train_tokenizer(texts, 300)
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=88,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("q", ["0", "1.5", "-0.2"])
def test_a_fraction_outside_0_1_is_refused(hostile: Path, base_folder: Path, q: str) -> None:
    refused(hostile, "select.fraction", "select", str(base_folder), f"select.fraction={q}")


def test_more_skipped_and_kept_than_there_is_is_refused(hostile: Path, base_folder: Path) -> None:
    refused(hostile, "select.skip_top", "select", str(base_folder), "select.fraction=0.5", "select.skip_top=0.6")


def test_no_base_is_refused(hostile: Path) -> None:
    refused(hostile, "select.base", "select")


def test_a_missing_base_is_refused(hostile: Path) -> None:
    refused(hostile, "select.base", "select", "no-such-job")


def test_a_selection_job_takes_no_data_selection(hostile: Path, base_folder: Path) -> None:
    refused(hostile, "data.selection", "select", str(base_folder), "data.selection=/x.json")


def test_a_model_override_is_refused(hostile: Path, base_folder: Path) -> None:
    refused(hostile, "model", "select", str(base_folder), "model=llama-20m")


def test_weights_that_do_not_match_the_config_are_refused(hostile: Path, base_folder: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad-base"
    shutil.copytree(base_folder, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (bad / "config.json").write_text(json.dumps(cfg))
    out = refused(hostile, "select.base", "select", str(bad))
    assert "has shape [32, 88], its config.json makes [32, 96]" in out.err


def test_a_sample_larger_than_the_corpus_is_refused(base_folder: Path, tmp_path: Path, monkeypatch) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    out = run_cli("select", str(base_folder), *CORPUS, f"data.cache_dir={tmp_path / 'cache'}", "select.sample=100000")
    assert_one_line(out, "select.sample")
    assert "windows" in out.err
    assert not ray.is_initialized()
