"""The install path the README's commands take is real: the CPU torch build, and DeepSpeed built against it."""

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
