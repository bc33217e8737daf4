"""The install path the README's commands take is real: the CPU torch build, DeepSpeed built against it, and a
non-editable wheel that carries its own config groups."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, torch, deepspeed
from deepspeed.accelerator import get_accelerator
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "deepspeed": deepspeed.__version__,
                  "accelerator": get_accelerator()._name}))
"""


def test_cpu_torch_and_deepspeed_import_together():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["torch"].startswith("2.13.0") and info["cuda"] is None  # the CPU build, not a CUDA download
    assert info["deepspeed"].startswith("0.19.")
    assert info["accelerator"] == "cpu"


def test_an_installed_wheel_composes_its_packaged_config(tmp_path) -> None:
    """The config groups ship in the package (orchestrator/conf/): a non-editable wheel, imported from outside the
    checkout, runs `cpr submit --cfg` with no CPR_CONFIG_DIR and prints what this checkout prints."""
    import os
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    src = tmp_path / "src"  # built from a copy: the build leaves build/ and *.egg-info behind
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(".git", ".venv", "cpr_runs", "build", "*.egg-info"))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True, timeout=300)
    assert (site / "orchestrator" / "conf" / "config.yaml").is_file()
    env = {k: v for k, v in os.environ.items() if k != "CPR_CONFIG_DIR"} | {"PYTHONPATH": str(site)}
    run = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main(sys.argv[1:]))"]
    args = ["submit", "--cfg", "+experiment=debug"]
    work = tmp_path / "elsewhere"
    work.mkdir()
    installed = subprocess.run([*run, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    where = subprocess.run(
        [sys.executable, "-c", "import orchestrator; print(orchestrator.__file__)"],
        cwd=work,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert where.stdout.strip() == str(site / "orchestrator" / "__init__.py")  # the wheel, not this checkout
    here = subprocess.run([*run, *args], cwd=root, capture_output=True, text=True, timeout=300)
    assert installed.stdout == here.stdout
