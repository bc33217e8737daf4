"""Shared test helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from launch.cli import main

# Shared 2-core machines are noisy: a per-example deadline would make property tests flaky, not stricter.
settings.register_profile("cpr", deadline=None, print_blob=True)
settings.load_profile("cpr")

ENGINE_DIRS = tuple(Path(__file__).parent / d for d in ("integration", "e2e"))
"""Every test under these starts real engines (Ray, DeepSpeed, MLflow, a venv)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the engine tests `integration`, so `make test` (and a bare `pytest`) leaves them to `make
    test-integration`."""
    for item in items:
        if any(d in item.path.parents for d in ENGINE_DIRS):
            item.add_marker(pytest.mark.integration)


CPR = str(Path(sys.executable).with_name("cpr"))
"""The installed `cpr` entry point of this interpreter's environment."""


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def _spare_pytests_stderr() -> None:
    """An in-process `cpr submit` starts Hydra's job logging, which closes every log handler; absl's handler (loaded
    by an earlier test through dp-accounting) then closes the stream it took at import unless that stream is the
    current sys.stderr: under capsys it is pytest's own captured stderr, and pytest crashes at its next snapshot. A
    `cpr` process never meets this (its stderr is the same throughout), so absl's handler gets the real stderr here."""
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


@pytest.fixture
def cli(capsys) -> Callable[..., CliResult]:
    """Run `cpr ARGS...` in-process; argparse's own exits are caught and their code returned."""

    def run(*argv: str) -> CliResult:
        _spare_pytests_stderr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, needle: str) -> None:
    """The bad-input contract: exit 2, one line on stderr naming the field, no traceback."""
    assert result.code == 2, result
    assert result.err.startswith("cpr: error:"), result.err
    assert result.err.count("\n") == 1, result.err
    assert needle in result.err, result.err
    assert "Traceback" not in result.err


def cpr(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`cpr ARGS...` as a subprocess in `cwd`, output captured."""
    return subprocess.run([CPR, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real `cpr submit +experiment=debug` (Ray, 2 DeepSpeed ranks, SQLite MLflow under `work/cpr_runs`), shared
    by the tests of a module: the end-to-end checks (tests/integration/test_submit_e2e.py) and the browser's
    (tests/browser). A minute or two on 2 cores."""
    work = tmp_path_factory.mktemp("submit")
    done = cpr("submit", "+experiment=debug", cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id = next(
        line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("MLflow run id:")
    )
    job_id = next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("job id:"))
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / 'cpr_runs' / 'mlflow.db'}"
    return {
        "work": work,
        "out": done.stdout,
        "run_id": run_id,
        "job_id": job_id,
        "uri": uri,
        "client": MlflowClient(uri),
    }


def stop_process_group(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """End a server started with `start_new_session=True` and every process it forked: SIGTERM, then SIGKILL."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def made_manifest(
    windows: object, corpus: dict, kept: object, *, seq_len: int, scores: object = None, **fields: object
) -> object:
    """A selection manifest made by hand (not by `cpr select`): these windows of the corpus named, `kept` kept;
    scores 0 unless given, one block, a random selection of seed 0 at q = 0.5 unless `fields` say otherwise."""
    import numpy as np

    from orchestrator.select import SelectionManifest

    n = len(windows)  # type: ignore[arg-type]
    values: dict = {
        "min_tokens": 2,
        "base": {"folder": "base", "job_id": None, "step": None},
        "score": "random",
        "length_correction": False,
        "fraction": 0.5,
        "seed": 0,
        "block": np.zeros(n, dtype=np.int64),
        "loss": np.zeros(n),
        "predicted": np.zeros(n),
        "block_kind": "folder",
        "block_names": ("all",),
        **fields,
    }
    return SelectionManifest(
        corpus=corpus,
        seq_len=seq_len,
        windows=windows,
        scores=np.zeros(n) if scores is None else scores,
        kept=kept,
        **values,
    )
