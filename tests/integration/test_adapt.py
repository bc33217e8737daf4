"""`cpr adapt` end to end (real Ray, 2 DeepSpeed ranks on gloo, SQLite MLflow and codecarbon in a temp dir): a short
debug pretraining job is the base (its checkpoint exported, its blueprint taken), the standard library's test suite
the target domain. An adaptation trains S_adapt only: in its final checkpoint every frozen submodule is the base's
bit for bit and every chosen one moved; the target's validation loss falls; MLflow holds every submodule's Ḡ, G̃,
G′ and the memory the engine measured. LoRA runs on the same path with only its adapters in the optimizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cpr

pytestmark = pytest.mark.integration

BASE = ("+experiment=debug", "stop=shadow", "train.max_tokens=65536")  # 64 steps; blueprints at 2, 4 and 64
TARGET = (
    "data.glob=test/test_*.py",
    "data.max_files=120",
    "train.seq_len=64",
    "train.micro_batch=8",
    "train.max_tokens=40960",  # 40 steps
    "train.eval_interval=10",
    "train.lr=2e-3",
    "stop=shadow",
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("adapt")
    done = cpr("submit", *BASE, cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("job id:"))
    return {"work": work, "job_id": job_id}


def adapt(base: dict[str, Any], *overrides: str) -> tuple[str, str, Any]:
    """Run `cpr adapt BASE TARGET… overrides…`; (its job id, its output, an MlflowClient of the store)."""
    from mlflow.tracking import MlflowClient

    done = cpr("adapt", base["job_id"], *TARGET, *overrides, cwd=base["work"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("job id:"))
    client = MlflowClient(f"sqlite:///{base['work'] / 'cpr_runs' / 'mlflow.db'}")
    return job_id, done.stdout, client


def summary(base: dict[str, Any], job_id: str) -> dict[str, Any]:
    return json.loads((base["work"] / "cpr_runs" / "jobs" / job_id / "summary.json").read_text())


def test_blueprint_adaptation_trains_only_the_chosen_submodules(base: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import load_file

    from orchestrator.blueprints.grouping import group_of, group_parameters
    from orchestrator.export import consolidate

    job_id, out, client = adapt(base, "adapt.max_fraction=0.4")
    s = summary(base, job_id)
    a = s["adapt"]
    assert a["strategy"] == "blueprint" and a["chosen"] and 0 < a["trainable_params"] <= 0.4 * a["total_params"]
    assert a["blueprint"].endswith(".json") and Path(a["base"], "config.json").is_file()
    assert f"adapt (blueprint): trained {a['trainable_params']:,} of {a['total_params']:,}" in out

    # The final checkpoint against the base: frozen submodules bit for bit, chosen ones moved.
    base_sd = load_file(str(next(Path(a["base"]).glob("*.safetensors"))))
    adapted = consolidate(Path(s["checkpoint"]), 2).state_dict
    groups = group_parameters((n, t.numel()) for n, t in adapted.items())
    for name, tensor in adapted.items():
        same = torch.equal(tensor, base_sd[name])
        assert same != (group_of(name, groups) in a["chosen"]), name

    # MLflow: every submodule's figures, the chosen set, the measured memory; the target's loss fell.
    run = client.get_run(s["run_id"])
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["cpr.adapt.strategy"] == "blueprint" and tags["cpr.adapt.chosen"].split(", ") == list(a["chosen"])
    for gid in groups:
        for figure in ("blueprint_norm", "local_norm", "blended", "ci_weight", "trained_fraction"):
            assert f"adapt/{figure}/{gid}" in metrics, (figure, gid)
    m = a["measured"]
    assert m["trainable_params"] == a["trainable_params"] and m["optimizer_state_bytes"] > 0
    assert metrics["adapt/memory_saved_bytes"] == m["memory_saved_bytes"] > 0
    # Adam's two fp32 moments of this rank's half of the trained parameters (ZeRO-2 partitions them over 2 ranks)
    assert m["optimizer_state_bytes"] == pytest.approx(2 * 4 * a["trainable_params"] / 2, rel=0.01)
    assert "adapt/selection.json" in {f.path for f in client.list_artifacts(s["run_id"], "adapt")}
    losses = [h.value for h in client.get_metric_history(s["run_id"], "val/loss")]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_lora_adaptation_keeps_only_its_adapters_in_the_optimizer(base: dict[str, Any]) -> None:
    job_id, out, _ = adapt(base, "adapt=lora", "adapt.max_fraction=0.2")
    a = summary(base, job_id)["adapt"]
    assert a["strategy"] == "lora" and a["lora"]["rank"] >= 1 and a["chosen"] == {}
    assert a["trainable_params"] == a["lora"]["trainable_params"] <= 0.2 * a["total_params"]
    m = a["measured"]
    assert m["trainable_params"] == a["trainable_params"]
    assert m["optimizer_state_bytes"] == 2 * 4 * a["trainable_params"] // 2  # the adapters' moments, in halves
    assert "adapt (lora): trained" in out and "LoRA rank" in out

    # `cpr export` merges the adapters into the base's layers: the bundle scores as the adapted model did.
    import torch
    from transformers import AutoModelForCausalLM

    from orchestrator.adapt import LoraDescriptor
    from orchestrator.export import consolidate, validation_loss
    from orchestrator.job_files import find_job
    from orchestrator.worker.lora import apply_lora

    done = cpr("export", job_id, "-o", "lora-bundle", "--verify", cwd=base["work"], timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job = find_job(base["work"] / "cpr_runs", job_id)
    lora = a["lora"]
    peft_model = apply_lora(
        AutoModelForCausalLM.from_pretrained(a["base"], torch_dtype=torch.float32),
        LoraDescriptor(**{**lora, "targets": tuple(lora["targets"])}),
    )
    peft_model.load_state_dict(consolidate(Path(summary(base, job_id)["checkpoint"]), 2).state_dict, strict=True)
    merged = AutoModelForCausalLM.from_pretrained(str(base["work"] / "lora-bundle"))
    adapted_loss = validation_loss(peft_model.eval(), job.job, job.prepared())
    assert validation_loss(merged.eval(), job.job, job.prepared()) == pytest.approx(adapted_loss, abs=1e-4)


def test_a_checkpoint_folder_names_its_job_and_step(base: dict[str, Any]) -> None:
    import yaml

    ckpts = sorted((base["work"] / "cpr_runs" / "checkpoints" / base["job_id"]).glob("step*"))
    folder = ckpts[0]  # any saved step, not only the newest
    done = cpr("adapt", str(folder), "--cfg", cwd=base["work"], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    job = yaml.safe_load(done.stdout)
    step = int(folder.name.removeprefix("step"))
    assert job["adapt"]["step"] == step and job["adapt"]["base"].endswith(f"{base['job_id']}-step{step}")


def test_the_sweep_report_names_each_adaptation_by_its_strategy(base: dict[str, Any]) -> None:
    ids = sorted(p.name for p in (base["work"] / "cpr_runs" / "jobs").glob("adapt-*"))
    assert len(ids) >= 2
    done = cpr("report", "--sweep", *ids, "-o", "sweep", cwd=base["work"], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (base["work"] / "sweep" / "report.html").read_text()
    assert "(blueprint)" in page and "(lora)" in page


def test_a_blueprint_published_to_mlflow_only_is_fetched_from_there(base: dict[str, Any]) -> None:
    import yaml

    store = base["work"] / "cpr_runs" / "blueprints"
    hidden = base["work"] / "blueprints-elsewhere"
    published = (store / base["job_id"] / "v2" / "blueprint.json").read_bytes()
    store.rename(hidden)  # as on a machine that has the run store (or a tracking server) but not the files
    try:
        done = cpr("adapt", base["job_id"], "--cfg", f"adapt.blueprint={base['job_id']}:v2", cwd=base["work"])
    finally:
        hidden.rename(store)
    assert done.returncode == 0, done.stderr[-2000:]
    path = Path(yaml.safe_load(done.stdout)["adapt"]["blueprint"])
    assert path.name == f"{base['job_id']}-v2.json" and path.read_bytes() == published
