"""`cpr export`'s refusals (one line naming the field, exit 2, nothing written) on a job folder laid out as the
controller writes it, and the writer itself on a tiny ZeRO-0 checkpoint made here (no Ray, no DeepSpeed engine):
the bundle loads with transformers, `--force` replaces only an earlier export, a failed write leaves nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.files import write_json_atomic
from tests.cli.conftest import assert_one_line, refused, run_cli, tree

JOB_ID = "tiny-20260101-000000-abcd"
RUN_ID = "0123456789abcdef0123456789abcdef"


def make_job(root: Path, *, steps: tuple[int, ...] = (10, 20), tokenizer: bool = True) -> Path:
    """`root/cpr_runs/jobs/JOB/job.json` and a checkpoint folder with a placeholder module states file per step."""
    from orchestrator.config.compose import job_to_dict
    from orchestrator.config.schema import JobConfig

    runs = root / "cpr_runs"
    job = job_to_dict(JobConfig())
    job["name"] = "tiny"
    job["model"]["vocab_size"] = 300
    job["deepspeed"]["zero_stage"] = 0
    ckpt = runs / "checkpoints" / JOB_ID
    for step in steps:
        (ckpt / f"step{step}").mkdir(parents=True)
        (ckpt / f"step{step}" / "mp_rank_00_model_states.pt").write_bytes(b"")
    write_json_atomic(
        runs / "jobs" / JOB_ID / "job.json",
        {
            "job_id": JOB_ID,
            "job": job,
            "prepared": {"tokenizer_path": str(root / "tok" / "tokenizer.json") if tokenizer else None, "eos_id": 0},
            "run_id": RUN_ID,
            "experiment_id": "1",
            "tracking_uri": f"sqlite:///{runs / 'mlflow.db'}",
            "checkpoint_dir": str(ckpt),
        },
    )
    if tokenizer:
        (root / "tok").mkdir()
        (root / "tok" / "tokenizer.json").write_text("{}")
    return runs


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    make_job(tmp_path)
    return tmp_path


def test_an_unknown_job_is_refused(work: Path) -> None:
    refused(work, "JOB", "export", "nope", "-o", "out")
    refused(work, "JOB", "export", "../jobs", "-o", "out")


def test_a_runs_dir_without_jobs_is_refused(work: Path) -> None:
    refused(work, "--runs-dir", "export", JOB_ID, "-o", "out", "--runs-dir", "elsewhere")


def test_a_job_without_a_checkpoint_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_job(tmp_path, steps=())
    out = refused(tmp_path, "JOB", "export", JOB_ID, "-o", "out")
    assert "no checkpoint" in out.err


def test_a_step_not_saved_is_refused_with_the_saved_ones(work: Path) -> None:
    out = refused(work, "--step", "export", JOB_ID, "--step", "15", "-o", "out")
    assert "saved steps: 10, 20" in out.err
    for bad in ("-1", "ten"):
        refused(work, "--step", "export", JOB_ID, "--step", bad, "-o", "out")


def test_a_missing_output_option_is_refused(work: Path) -> None:
    refused(work, "-o", "export", JOB_ID)
    refused(work, "-o", "export", JOB_ID, "-o", " ")


def test_a_non_empty_output_is_refused_and_force_replaces_only_an_export(work: Path) -> None:
    (work / "out").mkdir()
    (work / "out" / "notes.txt").write_text("mine")
    out = refused(work, "-o", "export", JOB_ID, "-o", "out")
    assert "--force" in out.err
    out = refused(work, "-o", "export", JOB_ID, "-o", "out", "--force")
    assert "cpr_export.json" in out.err
    assert (work / "out" / "notes.txt").read_text() == "mine"


def test_an_output_that_cannot_be_written_is_refused(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (work / "file").write_text("")
    refused(work, "-o", "export", JOB_ID, "-o", "file")
    refused(work, "-o", "export", JOB_ID, "-o", "file/out")
    refused(work, "-o", "export", JOB_ID, "-o", "missing/out")
    import orchestrator.export as export

    monkeypatch.setattr(export.os, "access", lambda *a, **k: False)  # root ignores a read-only folder's mode
    out = refused(work, "-o", "export", JOB_ID, "-o", "out")
    assert "permission denied" in out.err


def test_a_tokenizer_whose_cache_is_gone_is_refused(work: Path) -> None:
    (work / "tok" / "tokenizer.json").unlink()
    refused(work, "tokenizer", "export", JOB_ID, "-o", "out")


def test_a_job_is_found_by_its_run_id_too(work: Path) -> None:
    from orchestrator.job_files import find_job

    assert find_job(work / "cpr_runs", RUN_ID).job_id == JOB_ID
    assert find_job(work / "cpr_runs", JOB_ID).run_id == RUN_ID


def test_saved_steps_are_the_step_folders_with_module_states(work: Path) -> None:
    from orchestrator.export import saved_steps

    ckpt = work / "cpr_runs" / "checkpoints" / JOB_ID
    (ckpt / "step30").mkdir()  # being written: no module states yet
    (ckpt / "universal" / "step20").mkdir(parents=True)
    (ckpt / "latest").write_text("step20")
    assert list(saved_steps(ckpt)) == [10, 20]


# --------------------------------------------------------------------------------------------- the writer


def _tiny_checkpoint(root: Path, steps: tuple[int, ...]) -> dict[int, Any]:
    """A real job folder with ZeRO-0 checkpoints of a tiny random Llama (the module states file only, as DeepSpeed
    writes it at stage 0, while the job's config says ZeRO 2: the checkpoint's own record of its stage must win), a
    trained tokenizer and 2,000 validation tokens; returns each step's state dict."""
    import numpy as np
    import torch

    from orchestrator.config.compose import job_from_dict
    from orchestrator.data.prepare import EOS, train_tokenizer
    from orchestrator.models import build_model

    runs = make_job(root, steps=steps)
    meta_path = runs / "jobs" / JOB_ID / "job.json"
    meta = json.loads(meta_path.read_text())
    tok = train_tokenizer([f"line {i} of the tiny corpus, word {i * 7 % 13}" for i in range(200)], 300)
    tok.save(str(root / "tok" / "tokenizer.json"))
    np.arange(2000, dtype=np.uint16).__mod__(tok.get_vocab_size()).tofile(root / "val.bin")
    meta["prepared"] = {
        "source": "text_dir",
        "cache_dir": str(root),
        "tokenizer_path": str(root / "tok" / "tokenizer.json"),
        "train_bin": str(root / "val.bin"),
        "val_bin": str(root / "val.bin"),
        "dtype": "uint16",
        "vocab_size": tok.get_vocab_size(),
        "eos_id": tok.token_to_id(EOS),
        "n_train_tokens": 2000,
        "n_val_tokens": 2000,
        "fingerprint": "x",
    }
    meta["job"]["model"]["vocab_size"] = tok.get_vocab_size()
    meta["job"]["train"]["seq_len"] = 32
    meta["job"]["train"]["micro_batch"] = 4
    meta["job"]["train"]["eval_sequences"] = 8
    meta["job"]["cluster"]["num_workers"] = 1
    meta["job"]["deepspeed"]["zero_stage"] = 2  # the checkpoint's own record of its stage (0) is what counts
    write_json_atomic(meta_path, meta)
    job = job_from_dict(meta["job"])
    states = {}
    for i, step in enumerate(steps):
        model = build_model(job.model, tok.get_vocab_size(), 32, seed=i)
        states[step] = model.state_dict()
        path = runs / "checkpoints" / JOB_ID / f"step{step}" / "mp_rank_00_model_states.pt"
        saved = {"module": states[step], "dp_world_size": 1, "ds_config": {"zero_optimization": {"stage": 0}}}
        torch.save({**saved, "step": step, "tokens": step * 128}, path)
    return states


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[int, Any]]:
    import orchestrator.tracking.published as published

    monkeypatch.chdir(tmp_path)
    states = _tiny_checkpoint(tmp_path, (10, 20))
    monkeypatch.setattr(published, "run_published", lambda uri, run_id: [])  # no MLflow here: none published
    return tmp_path, states


def test_the_bundle_loads_with_transformers_and_holds_the_checkpoint(tiny: tuple[Path, dict[int, Any]]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work, states = tiny
    done = run_cli("export", JOB_ID, "--step", "10", "-o", "out", "--verify")
    assert done.code == 0, done.err
    assert "at step 10" in done.out and "validation loss" in done.out
    out = work / "out"
    assert {"model.safetensors", "config.json", "tokenizer.json", "cpr_export.json"} <= set(os.listdir(out))
    assert not list(out.glob("*.bin")) and not list(work.glob(".out.*"))  # safetensors only; no staging left
    model = AutoModelForCausalLM.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, states[10][name]), name
    tok = AutoTokenizer.from_pretrained(out)
    text = "line 3 of the tiny corpus"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token == "<|endoftext|>" and model.config.eos_token_id == tok.eos_token_id
    p = json.loads((out / "cpr_export.json").read_text())
    assert (p["job_id"], p["run_id"], p["step"], p["world_size"], p["zero_stage"]) == (JOB_ID, RUN_ID, 10, 1, 0)
    assert p["consolidated_by"] == "module_states" and p["blueprints"] == []
    v = p["validation_loss"]
    assert abs(v["checkpoint"] - v["exported"]) <= 1e-4

    again = run_cli("export", JOB_ID, "-o", "out")  # the default is the newest step; the folder is taken
    assert_one_line(again, "-o")
    forced = run_cli("export", JOB_ID, "-o", "out", "--force")
    assert forced.code == 0, forced.err
    assert json.loads((out / "cpr_export.json").read_text())["step"] == 20


def test_a_failed_write_leaves_nothing(tiny: tuple[Path, dict[int, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.export as export

    work, _ = tiny
    before = tree(work)

    def broken(path: Path, length: int) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "hf_tokenizer", broken)
    assert_one_line(run_cli("export", JOB_ID, "-o", "out"), "No space left on device")
    assert tree(work) == before


def test_verify_refuses_a_model_that_scores_otherwise(
    tiny: tuple[Path, dict[int, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import orchestrator.export as export

    work, _ = tiny
    before = tree(work)
    reload = export._reload

    def perturbed(folder: Path) -> Any:
        model = reload(folder)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(3.0)
        return model

    monkeypatch.setattr(export, "_reload", perturbed)
    done = run_cli("export", JOB_ID, "-o", "out", "--verify")
    assert done.code == 1 and "differs from the checkpoint's" in done.err and "Traceback" not in done.err
    assert tree(work) == before
