"""`cpr export` on a real job (Ray, 2 DeepSpeed ZeRO-2 ranks, SQLite MLflow in a temp dir): the Hugging Face
directory loads with `AutoModelForCausalLM` and scores the job's validation set as the checkpoint does, consolidated
by DeepSpeed's own `zero_to_fp32` (and as the job itself logged it), within 1e-4; the tokenizer encodes as the job's
did and decodes back; the blueprints are the run's published ones, byte for byte, and valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cpr

# 60 steps of 1,024 tokens, the rule in shadow mode: a periodic checkpoint at step 40, the final one at 60, and
# blueprints at steps 2, 3 and 60 (the debug experiment's probe.checkpoints 0.03, 0.05, 1.0).
JOB = ("+experiment=debug", "stop.enforce=false", "train.max_tokens=61440")


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("export")
    done = cpr("submit", *JOB, cwd=work, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("job id:"))
    from orchestrator.job_files import find_job

    return {"work": work, "job_id": job_id, "files": find_job(work / "cpr_runs", job_id)}


def _checkpoint_loss(files, step: int) -> float:
    """The validation loss of the DeepSpeed checkpoint itself, its shards merged by DeepSpeed's zero_to_fp32."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from orchestrator.export import validation_loss
    from orchestrator.models import build_model

    job = files.job
    state = get_fp32_state_dict_from_zero_checkpoint(str(files.checkpoint_dir), tag=f"step{step}")
    model = build_model(job.model, job.model.vocab_size, job.train.seq_len, job.seed)
    model.load_state_dict(state, strict=True)
    return validation_loss(model.eval(), job, files.prepared())


def _exported_loss(files, out: Path) -> float:
    from transformers import AutoModelForCausalLM

    from orchestrator.export import validation_loss

    return validation_loss(AutoModelForCausalLM.from_pretrained(out).eval(), files.job, files.prepared())


def test_the_export_loads_scores_as_the_checkpoint_and_carries_tokenizer_and_blueprints(job: dict) -> None:
    from mlflow.tracking import MlflowClient
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    work, job_id, files = job["work"], job["job_id"], job["files"]
    done = cpr("export", job_id, "-o", "bundle", cwd=work, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = work / "bundle"
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "cpr_export.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    p = json.loads((out / "cpr_export.json").read_text())
    assert (p["job_id"], p["run_id"], p["step"], p["world_size"]) == (job_id, files.run_id, 60, 2)
    assert p["zero_stage"] == 2 and p["consolidated_by"] == "zero_to_fp32"
    assert p["checkpoint"] == str(files.checkpoint_dir / "step60")

    # The same validation loss as the checkpoint, and as the job logged at its last check.
    exported, checkpoint = _exported_loss(files, out), _checkpoint_loss(files, 60)
    assert abs(exported - checkpoint) <= 1e-4, (exported, checkpoint)
    client = MlflowClient(files.tracking_uri)
    logged = {m.step: m.value for m in client.get_metric_history(files.run_id, "val/loss")}
    assert abs(exported - logged[60]) <= 1e-4, (exported, logged[60])

    # The tokenizer encodes as the job's own did, and decodes back to the text.
    original = Tokenizer.from_file(str(files.prepared().tokenizer_path))
    tok = AutoTokenizer.from_pretrained(out)
    text = Path(json.__file__).read_text()[:2000]
    ids = tok(text)["input_ids"]
    assert ids == original.encode(text).ids
    assert tok.decode(ids) == text
    assert tok.eos_token_id == files.prepared().eos_id

    # Every version the run published, byte for byte as `cpr blueprint get` gives it, and valid.
    listed = cpr("blueprint", "list", "--run", job_id, "--json", cwd=work, timeout=120)
    versions = sorted(json.loads(line)["version"] for line in listed.stdout.splitlines())
    assert len(versions) >= 2, listed.stdout + listed.stderr
    shipped = sorted(out.glob("blueprints/v*.json"))
    assert [f.name for f in shipped] == [f"v{v}.json" for v in versions]
    assert [b["version"] for b in p["blueprints"]] == versions
    for v in versions:
        got = cpr("blueprint", "get", job_id, "--version", str(v), "-o", f"got{v}.json", cwd=work, timeout=120)
        assert got.returncode == 0, got.stderr
        assert (out / "blueprints" / f"v{v}.json").read_bytes() == (work / f"got{v}.json").read_bytes()
    valid = cpr("blueprint", "validate", *[str(f) for f in shipped], cwd=work, timeout=120)
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_an_earlier_step_exports_with_verify_and_a_missing_one_lists_the_saved(job: dict) -> None:
    work, job_id, files = job["work"], job["job_id"], job["files"]
    done = cpr("export", job_id, "--step", "40", "-o", "bundle40", "--verify", cwd=work, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    p = json.loads((work / "bundle40" / "cpr_export.json").read_text())
    assert p["step"] == 40 and p["tokens"] == 40 * 1024
    v = p["validation_loss"]
    checkpoint = _checkpoint_loss(files, 40)
    assert abs(v["exported"] - checkpoint) <= 1e-4 and abs(v["checkpoint"] - checkpoint) <= 1e-4

    missing = cpr("export", job_id, "--step", "7", "-o", "bundle7", cwd=work, timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "--step" in missing.stderr and "saved steps: 40, 60" in missing.stderr
    assert not (work / "bundle7").exists()
