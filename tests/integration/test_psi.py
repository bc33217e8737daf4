"""Ψ as the job defines it, on real Ray, DeepSpeed (2 CPU ranks) and a SQLite MLflow store: `psi=fn` logs the user
function's score as Ψ under its name and units, `psi=domains` the weighted mix and each domain's loss."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.core import names
from tests.conftest import cpr

SMALL = ["+experiment=debug", "train.max_tokens=20480", "probe=off", "telemetry=off"]  # 20 steps, 2 checks


def submitted(tmp_path, *overrides: str) -> tuple[MlflowClient, str, str]:
    """`cpr submit SMALL overrides…` to its end: (client, run id, output)."""
    done = cpr("submit", *SMALL, *overrides, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id = next(
        line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("MLflow run id:")
    )
    return MlflowClient(f"sqlite:///{tmp_path / 'cpr_runs' / 'mlflow.db'}"), run_id, done.stdout


def by_step(client: MlflowClient, run_id: str, metric: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, metric)}


def test_a_user_function_is_psi_with_its_name_and_units(tmp_path) -> None:
    client, run_id, out = submitted(
        tmp_path, "psi=fn", "psi.fn=orchestrator.examples.psi_score:next_token_accuracy", "psi.units=fraction"
    )
    run = client.get_run(run_id)
    params, tags = run.data.params, run.data.tags
    assert (params["psi.kind"], params["psi.name"], params["psi.units"]) == ("fn", "next_token_accuracy", "fraction")
    assert params["psi.higher_is_better"] == "true"
    assert (tags[names.PSI_NAME], tags[names.PSI_UNITS]) == ("next_token_accuracy", "fraction")
    psi, loss = by_step(client, run_id, names.PSI), by_step(client, run_id, names.VAL_LOSS)
    assert sorted(psi) == sorted(loss) == [10, 20]
    assert all(0.0 <= v <= 1.0 for v in psi.values())  # the function's accuracy, not −loss
    assert all(psi[s] != -loss[s] for s in psi)
    assert "fraction (next_token_accuracy, higher is better" in out


def test_a_domain_mix_is_psi_and_each_domains_loss_is_logged(tmp_path) -> None:
    client, run_id, _ = submitted(tmp_path, "psi=domains", "+psi.weights.tests=3")
    params = client.get_run(run_id).data.params
    assert (params["psi.kind"], params["psi.name"], params["psi.weights"]) == (
        "domains",
        "-domain_mix_loss",
        "general:0.25,tests:0.75",
    )
    psi = by_step(client, run_id, names.PSI)
    general = by_step(client, run_id, names.domain_loss("general"))
    tests = by_step(client, run_id, names.domain_loss("tests"))
    assert by_step(client, run_id, names.VAL_LOSS) == general and sorted(psi) == [10, 20]
    for step, value in psi.items():
        assert value == pytest.approx(-(0.25 * general[step] + 0.75 * tests[step]), rel=1e-12)
        assert tests[step] != general[step]


def test_a_function_that_fails_fails_the_job_with_its_message_not_a_hang(tmp_path) -> None:
    """Rank 0's function raises (here `float(model, tokenizer, device)`): every rank learns it through the same
    all-reduce that broadcasts Ψ, so the job fails with the function's error where Ψ is first measured: at step 0,
    before its first update (the baseline `cpr/psi_initial`), no compute spent."""
    done = cpr("submit", *SMALL, "psi=fn", "psi.fn=builtins:float", cwd=tmp_path, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "job failed" in done.stdout
    assert "psi.fn builtins:float at step 0: raised TypeError" in done.stdout
