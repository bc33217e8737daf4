"""`cpr blueprint list` and `cpr blueprint get` against a real SQLite MLflow store in a temp dir, with versions
published the way the controller publishes them (`record_version`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.blueprints import build_blueprint, dumps_blueprint
from orchestrator.tracking.published import record_version
from orchestrator.tracking.uri import default_tracking_uri
from orchestrator.tracking.writer import RunWriter
from tests.conftest import assert_one_line_error


def _text(model_id: str, version: int, run_id: str, step: int) -> str:
    bp = build_blueprint(
        model_id=model_id,
        training_checkpoint=step / 1000,
        samples={"embed": [1.0, 1.2, 0.9], "attn.0": [0.5, 0.6, 0.4]},
        blueprint_version=version,
        run_id=run_id,
        step=step,
        tokens_seen=step * 100,
        n_resamples=50,
        provenance={"checkpoint": f"{step / 1000:g}"},
    )
    return dumps_blueprint(bp)


def _publish(writer: RunWriter, model_id: str, steps: list[int], first: int = 1) -> dict[int, str]:
    texts, versions = {}, []
    for i, step in enumerate(steps):
        v = first + i
        texts[v] = _text(model_id, v, writer.run_id, step)
        versions.append(v)
        record_version(writer, model_id=model_id, version=v, text=texts[v], versions=versions)
    assert writer.flush(60)
    return texts


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    uri = default_tracking_uri(root)
    art = str(root / "artifacts")
    a = RunWriter.create(uri, "cpr", "job-a", {"cpr.job_id": "job-a"}, artifact_location=art)
    b = RunWriter.create(uri, "cpr", "job-b", {"cpr.job_id": "job-b"}, artifact_location=art)
    c = RunWriter.create(uri, "cpr", "job-c", {"cpr.job_id": "job-c"}, artifact_location=art)
    texts = {
        "a": _publish(a, "model-a", [500, 800, 1000]),
        "b": _publish(b, "shared", [100]),
        "c": _publish(c, "shared", [200, 300], first=1),  # another run of the same model also has a v1
    }
    bad = RunWriter.create(uri, "cpr", "job-bad", {"cpr.job_id": "job-bad"}, artifact_location=art)
    record_version(bad, model_id="broken", version=1, text='{"model_id": "broken"', versions=[1])
    assert bad.flush(60)
    return {"uri": uri, "runs": {"a": a.run_id, "b": b.run_id, "c": c.run_id}, "texts": texts, "root": root}


def test_list_all_by_run_job_and_model(cli, store) -> None:
    uri = store["uri"]
    result = cli("blueprint", "list", "--run", "job-a", "--tracking-uri", uri, "--json")
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [(r["model_id"], r["version"], r["step"], r["checkpoint"]) for r in rows] == [
        ("model-a", 1, 500, "0.5"),
        ("model-a", 2, 800, "0.8"),
        ("model-a", 3, 1000, "1"),
    ]
    assert {r["run_id"] for r in rows} == {store["runs"]["a"]} and rows[0]["job_id"] == "job-a"
    by_run_id = cli("blueprint", "list", "--run", store["runs"]["a"], "--tracking-uri", uri, "--json")
    assert by_run_id.out == result.out
    shared = cli("blueprint", "list", "--model", "shared", "--tracking-uri", uri, "--json")
    assert [(json.loads(x)["job_id"], json.loads(x)["version"]) for x in shared.out.splitlines()] == [
        ("job-b", 1),
        ("job-c", 1),
        ("job-c", 2),
    ]
    table = cli("blueprint", "list", "--model", "model-a", "--tracking-uri", uri)
    assert table.code == 0 and "model-a" in table.out and "v3" in table.out


def test_get_writes_exactly_the_published_bytes(cli, store, tmp_path: Path) -> None:
    uri, texts = store["uri"], store["texts"]
    out = tmp_path / "bp.json"
    result = cli("blueprint", "get", "job-a", "--version", "2", "-o", str(out), "--tracking-uri", uri)
    assert result.code == 0, result.err
    assert out.read_bytes() == texts["a"][2].encode()
    assert "model-a v2" in result.err and result.out == ""
    latest = tmp_path / "latest.json"
    assert cli("blueprint", "get", "model-a", "-o", str(latest), "--tracking-uri", uri).code == 0
    assert latest.read_bytes() == texts["a"][3].encode()


def test_get_to_standard_output_prints_the_bytes_and_nothing_else(store, capsysbinary) -> None:
    from launch.cli import main

    assert main(["blueprint", "get", store["runs"]["c"], "--tracking-uri", store["uri"]]) == 0
    assert capsysbinary.readouterr().out == store["texts"]["c"][2].encode()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["list", "--run", "nope"], "--run"),
        (["list", "--model", "nope"], "--model"),
        (["get", "nope"], "RUN|MODEL_ID"),
        (["get", "job-a", "--version", "7"], "--version"),
        (["get", "shared", "--version", "1"], "RUN|MODEL_ID"),  # two runs hold a v1 of this model
        (["get", "job-bad"], "blueprints/v1/blueprint.json: is not valid JSON"),  # not a blueprint
        (["get", "job-a", "-o", "/no/such/dir/bp.json"], "-o"),
        (["list"], "blueprints/v1/blueprint.json: is not valid JSON"),  # every version read is validated
        (["list", "--run", "job-a", "--model", "model-a"], "--model"),  # one filter at a time
    ],
)
def test_bad_requests_are_one_line(cli, store, args: list[str], field: str) -> None:
    result = cli("blueprint", *args, "--tracking-uri", store["uri"])
    assert_one_line_error(result, field)


def test_a_store_without_that_run_or_unreachable_is_one_line(cli, store, tmp_path: Path, capsys) -> None:
    empty = default_tracking_uri(tmp_path / "other")
    RunWriter.create(empty, "cpr", "x", {"cpr.job_id": "x"}, artifact_location=str(tmp_path / "a")).close()
    capsys.readouterr()  # MLflow's own log lines from creating that store
    assert_one_line_error(cli("blueprint", "get", store["runs"]["a"], "--tracking-uri", empty), "RUN|MODEL_ID")
    assert_one_line_error(cli("blueprint", "list", "--tracking-uri", "http://127.0.0.1:9"), "tracking.uri")
    assert_one_line_error(cli("blueprint", "get", "job-a", "--version", "0", "--tracking-uri", store["uri"]), "version")


def test_help_documents_all_six_actions(cli) -> None:
    result = cli("blueprint", "--help")
    assert result.code == 0
    for action in ("validate", "show", "diff", "aggregate", "list", "get"):
        assert action in result.out
