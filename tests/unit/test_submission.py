"""The submission API without Ray: one composition and one check per job, Hydra's sweep expansion and output
folder made with Hydra's public API, and cpr's Hydra launcher giving a refused sweep back through its JobReturns."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.config.compose import compose_job
from orchestrator.errors import InputError
from orchestrator.submission import MAX_SWEEP_JOBS, expand_sweep, open_run_dir, plan_job, plan_sweep
from orchestrator.submission import plan as plan_module


def test_a_sweep_expands_as_hydras_basic_sweeper_does() -> None:
    sweep = expand_sweep(["+experiment=debug", "train.lr=1e-3,3e-3", "seed=range(1,3)", "hydra.job.chdir=false"])
    assert sweep.jobs == (
        ("+experiment=debug", "train.lr=0.001", "seed=1"),
        ("+experiment=debug", "train.lr=0.001", "seed=2"),
        ("+experiment=debug", "train.lr=0.003", "seed=1"),
        ("+experiment=debug", "train.lr=0.003", "seed=2"),
    )
    assert sweep.hydra_overrides == ("hydra.job.chdir=false",)
    # a key given twice keeps its first place and its last value
    assert expand_sweep(["seed=1,2", "name=a", "seed=3"]).jobs == (("seed=3", "name=a"),)


def test_every_job_of_a_sweep_is_composed_named_and_checked_once(monkeypatch) -> None:
    checked: list[str] = []
    real = plan_module.validate_job
    monkeypatch.setattr(
        plan_module, "validate_job", lambda job, overrides=(): (checked.append(job.name), real(job, overrides))[1]
    )
    sweep, config = plan_sweep(["+experiment=debug", "train.lr=1e-3,3e-3"])
    assert checked == ["debug-0", "debug-1"]
    assert [(p.job.name, p.job.detach, p.job.train.lr) for p in sweep.jobs] == [
        ("debug-0", True, 1e-3),
        ("debug-1", True, 3e-3),
    ]
    assert sweep.sweep_id.startswith("sweep-")
    assert config.hydra.mode.name == "MULTIRUN" and list(config.hydra.overrides.task)[-1] == "train.lr=1e-3,3e-3"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ([f"seed=range(0,{MAX_SWEEP_JOBS + 1})"], f"--multirun: the sweep expands to {MAX_SWEEP_JOBS + 1} jobs"),
        (["seed=1,2", "name=same"], "name: the sweep gives several jobs the name 'same'"),
        (
            ["seed=1,2", "priority=12"],
            "job #0 (seed=1 priority=12): priority: input should be less than or equal to 9, got 12",
        ),
        (["seed=interval(0,1)"], "overrides: seed: an interval sweep has no discrete values"),
    ],
)
def test_a_bad_sweep_is_refused_whole(overrides: list[str], needle: str) -> None:
    with pytest.raises(InputError) as err:
        plan_sweep(overrides)
    assert needle in err.value.one_line()


def test_a_single_job_is_checked_once(monkeypatch) -> None:
    checked: list[str] = []
    monkeypatch.setattr(plan_module, "validate_job", lambda job, overrides=(): checked.append(job.name))
    plan = plan_job(["+experiment=debug"])
    assert checked == ["debug"] and plan.job == compose_job(["+experiment=debug"])


def test_the_run_folder_holds_what_hydra_writes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        plan = plan_job(["+experiment=debug", "train.lr=1e-3"])
        out = open_run_dir(plan)
    finally:
        for h in root.handlers:
            if h not in handlers:
                h.close()
        root.handlers[:], root.level = handlers, level
    assert out is not None and out.parent.parent == tmp_path / "cpr_runs" / "hydra"
    hydra_dir = out / ".hydra"
    assert sorted(p.name for p in hydra_dir.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) == ["+experiment=debug", "train.lr=1e-3"]
    assert yaml.safe_load((hydra_dir / "config.yaml").read_text())["train"]["lr"] == 1e-3
    hydra = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]
    assert (hydra["mode"], hydra["job"]["name"], hydra["runtime"]["output_dir"]) == ("RUN", "submit", str(out))
    assert (out / "submit.log").exists()  # Hydra's job logging writes there


APP = """
import hydra

from orchestrator.config.compose import register_schema

register_schema()


@hydra.main(config_path="pkg://orchestrator.conf", config_name="config", version_base="1.3")
def app(cfg):
    raise RuntimeError("cpr's launcher queues the jobs: no task runs here")


app()
"""


def test_a_hydra_app_with_cprs_launcher_gets_a_refused_sweep_back_as_its_error(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    done = subprocess.run(
        [sys.executable, "app.py", "-m", "hydra/launcher=cpr", "+experiment=debug", "seed=1,2", "priority=12"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},  # this checkout's cpr
    )
    assert done.returncode != 0
    assert (
        "InputError: job #0 (+experiment=debug seed=1 priority=12): priority: input should be less than or equal to 9"
        in done.stderr
    )
    assert not (tmp_path / "cpr_runs" / "jobs").exists()
