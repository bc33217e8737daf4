"""The data blocks of the cross-influence map (orchestrator/submission/select.py): a document's top folder, with the
corpus's own split, or k-means clusters of the windows' pooled states."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config.schema import DataConfig, DataSource, JobConfig, SelectBlocks, SelectConfig
from orchestrator.errors import InputError
from orchestrator.submission.select import ROOT_BLOCK, _blocks, block_labels


def corpus(root: Path) -> JobConfig:
    for rel in ("a.txt", "b.txt", "news/1.txt", "news/2.txt", "news/3.txt", "code/x/1.txt", "code/2.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"text of {rel}\n")
    data = DataConfig(name="t", source=DataSource.text_dir, path=str(root), val_every=3, max_files=None)
    return JobConfig(data=data)


def test_folder_blocks_follow_the_training_files(tmp_path: Path) -> None:
    job = corpus(tmp_path)
    labels, kind = block_labels(job, n_docs=5)  # 7 files, every 3rd held out: 5 training documents
    assert kind == "folder"
    # sorted files: a, b, code/2, code/x/1, news/1, news/2, news/3; held out: code/2 (i=2), news/2 (i=5)
    assert labels == [ROOT_BLOCK, ROOT_BLOCK, "code", "news", "news"]
    with pytest.raises(InputError) as err:
        block_labels(job, n_docs=6)  # a file that held the end-of-text token would split into two documents
    assert err.value.field == "select.blocks" and "blocks=cluster" in (err.value.fix or "")


def test_cluster_blocks_are_k_means_of_the_pooled_states() -> None:
    job = JobConfig(select=SelectConfig(blocks=SelectBlocks.cluster, clusters=3))
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat([0, 1, 2], 40)
    pooled = centres[truth] + rng.normal(scale=0.5, size=(120, 2))
    assert block_labels(job, n_docs=1) is None
    block, names, kind = _blocks(job, None, np.zeros(120, dtype=np.int64), pooled)
    assert kind == "cluster" and names == ("c0", "c1", "c2")
    for c in range(3):  # each true cluster is one block
        assert len(set(block[truth == c])) == 1
    assert len(set(block)) == 3
    again, _, _ = _blocks(dataclasses.replace(job), None, np.zeros(120, dtype=np.int64), pooled)
    np.testing.assert_array_equal(block, again)  # seeded


def test_folder_blocks_refuse_a_corpus_of_rows(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    data = DataConfig(name="t", source=DataSource.hf_files, path=str(tmp_path / "rows.jsonl"), max_files=None)
    with pytest.raises(InputError) as err:
        block_labels(JobConfig(data=data), n_docs=1)
    assert err.value.field == "select.blocks"
