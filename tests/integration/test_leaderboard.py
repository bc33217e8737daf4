"""`cpr leaderboard` ranks the runs of a real `cpr submit -m` sweep (two tiny jobs, telemetry on: codecarbon's
estimate on a CPU machine) in all four formats, and the sweep's last job logged the leaderboard page."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.integration.test_sweep import cpr, ray_head  # noqa: F401  (the fixture, stopping Ray afterwards)

pytestmark = pytest.mark.integration

SMALL = ["+experiment=debug", "train.max_tokens=20480", "probe=off"]


def test_a_sweep_is_ranked_in_every_format(tmp_path: Path, ray_head) -> None:  # noqa: F811
    done = cpr("submit", "-m", *SMALL, "train.lr=1e-3,3e-3", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    queued = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("queued ")]
    (sweep,) = [line.split()[1].rstrip(":") for line in done.stdout.splitlines() if line.startswith("sweep ")]
    client = MlflowClient(f"sqlite:///{tmp_path / 'cpr_runs' / 'mlflow.db'}")
    deadline = time.monotonic() + 500
    runs: dict = {}
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name("cpr")
        found = client.search_runs([exp.experiment_id], f"tags.`cpr.sweep` = '{sweep}'") if exp else []
        runs = {r.data.tags["cpr.job_id"]: r for r in found}
        if set(runs) == set(queued) and all(r.info.status == "FINISHED" for r in runs.values()):
            break
        time.sleep(3)
    assert set(runs) == set(queued) and all(r.info.status == "FINISHED" for r in runs.values()), runs
    fingerprints = {r.data.params["cpr.eval_set"] for r in runs.values()}
    assert len(fingerprints) == 1  # one model, one corpus, one Ψ: one evaluation set

    where = f"tags.`cpr.sweep` = '{sweep}'"
    files = {}
    for fmt in ("table", "md", "csv", "html"):
        out = tmp_path / f"board.{fmt}"
        got = cpr("leaderboard", "--filter", where, "--format", fmt, "-o", str(out), cwd=tmp_path, timeout=120)
        assert got.returncode == 0, got.stderr
        files[fmt] = out.read_text()

    rows = list(csv.DictReader(io.StringIO(files["csv"])))
    assert {r["job_id"] for r in rows} == set(queued)
    initial = {j: r.data.metrics["cpr/psi_initial"] for j, r in runs.items()}  # measured before the first step
    for r in rows:  # codecarbon's estimate on this CPU machine, and where it came from
        assert r["by"] == "energy_kwh" and r["baseline_from"] == "Ψ at step 0"
        assert float(r["psi_baseline"]) == pytest.approx(initial[r["job_id"]])
        assert float(r["psi_baseline"]) < float(r["psi"])
        assert r["energy_method"].startswith("codecarbon") and r["ranks"] == "2" and "cpu:" in r["hardware"]
        assert "energy estimated: codecarbon" in r["estimates"] and "absent, not counted" in r["estimates"]
        # ranked on energy to the run's end: CPR as defined, CO₂ from the country's grid intensity
        psi, base, gamma = float(r["psi"]), float(r["psi_baseline"]), float(r["gamma_by"])
        assert gamma > 0 and float(r["cpr"]) == pytest.approx((psi - base) / gamma)
        assert r["grid_source"].endswith("USA") and float(r["grid_g_per_kwh"]) > 0
    assert [r["rank"] for r in rows] == ["1", "2"] and float(rows[0]["cpr"]) >= float(rows[1]["cpr"])
    assert fingerprints.pop() in files["md"] and files["md"].count("\n| 1 |") == 1
    assert rows[0]["job_id"] in files["table"] and "CPR per energy_kwh" in files["table"]
    assert files["html"].startswith("<!DOCTYPE html>") and "http" not in files["html"]
    # on tokens both are ranked: the same tokens, so the higher Ψ first
    by_tokens = cpr("leaderboard", "--by", "tokens", "--format", "csv", cwd=tmp_path)
    tokens = list(csv.DictReader(io.StringIO(by_tokens.stdout)))
    assert [r["rank"] for r in tokens] == ["1", "2"] and float(tokens[0]["psi"]) >= float(tokens[1]["psi"])
    (tmp_path / "leaderboard_outputs.json").write_text(json.dumps({**files, "tokens_csv": by_tokens.stdout}))

    # a kind no run measured: refused in one line
    bad = cpr("leaderboard", "--by", "gpu_hours", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("cpr: error: --by: no run selected measured gpu_hours")

    # the sweep's last job to end logged the leaderboard page next to the sweep report
    logged = {j: {a.path for a in client.list_artifacts(r.info.run_id, "leaderboard")} for j, r in runs.items()}
    assert sorted(map(len, logged.values())) == [0, 1], logged
    (last,) = [j for j, paths in logged.items() if paths == {"leaderboard/leaderboard.html"}]
    assert client.get_run(runs[last].info.run_id).data.tags["cpr.leaderboard"] == "leaderboard/leaderboard.html"
