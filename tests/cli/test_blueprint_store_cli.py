"""`cpr blueprint list|get` against a real MLflow SQLite store: what training runs published, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.cli import main
from orchestrator.blueprints import blueprint_to_dict, build_blueprint, dumps_blueprint
from tests.conftest import assert_one_line_error

SAMPLES = {"embed": [1.0, 1.2], "attn.0": [0.5, 0.6]}


def blueprint_text(model_id: str, version: int, run_id: str, step: int, *, compact: bool = False) -> str:
    bp = build_blueprint(
        model_id=model_id,
        training_checkpoint=step / 20,
        samples=SAMPLES,
        blueprint_version=version,
        run_id=run_id,
        step=step,
        tokens_seen=step * 100,
        n_resamples=50,
        created_at="2026-11-22T13:55:01Z",
        provenance={"note": "Ψ per Γ"},
    )
    if compact:  # not what dumps_blueprint writes: `get` must return the stored bytes, not a re-serialization
        return json.dumps(blueprint_to_dict(bp), separators=(",", ":"), ensure_ascii=False)
    return dumps_blueprint(bp)


def new_store(root: Path) -> tuple[str, object, str]:
    from mlflow.tracking import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("cpr", artifact_location=str(root / "artifacts"))
    return uri, client, exp_id


def publish(client, exp_id: str, job_id: str, model_id: str, texts: dict[int, str] | None = None) -> str:
    """A job's run with the publishing contract's artifacts and tags; texts maps version -> the JSON text."""
    run_id = client.create_run(exp_id, tags={"cpr.job_id": job_id, "cpr.state": "finished"}).info.run_id
    texts = texts if texts is not None else {}
    for version, text in texts.items():
        client.log_text(run_id, text, f"blueprints/v{version}/blueprint.json")
    if texts:
        client.set_tag(run_id, "cpr.blueprint.model_id", model_id)
        client.set_tag(run_id, "cpr.blueprint.latest", str(max(texts)))
        client.set_tag(run_id, "cpr.blueprint.versions", ",".join(map(str, sorted(texts))))
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Runs a (m1 v1, v2), b (shared v1), c (shared v1, v2) and d (a job that published nothing)."""
    uri, client, exp_id = new_store(tmp_path_factory.mktemp("store"))
    runs: dict[str, str] = {}
    texts: dict[tuple[str, int], str] = {}
    for job, model, versions in (("job-a", "m1", (1, 2)), ("job-b", "shared", (1,)), ("job-c", "shared", (1, 2))):
        run_id = client.create_run(exp_id, tags={"cpr.job_id": job, "cpr.state": "finished"}).info.run_id
        runs[job] = run_id
        for v in versions:
            texts[(job, v)] = blueprint_text(model, v, run_id, 10 * v, compact=(v == 2))
            client.log_text(run_id, texts[(job, v)], f"blueprints/v{v}/blueprint.json")
        client.set_tag(run_id, "cpr.blueprint.model_id", model)
        client.set_tag(run_id, "cpr.blueprint.latest", str(max(versions)))
        client.set_tag(run_id, "cpr.blueprint.versions", ",".join(map(str, versions)))
    runs["job-d"] = publish(client, exp_id, "job-d", "unused")
    return uri, runs, texts


def json_rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_list_all_as_json_and_table(cli, store):
    uri, runs, _ = store
    r = cli("blueprint", "list", "--tracking-uri", uri, "--json")
    assert r.code == 0, r.err
    rows = json_rows(r.out)
    assert [(x["model_id"], x["version"]) for x in rows] == [
        ("m1", 1),
        ("m1", 2),
        ("shared", 1),
        ("shared", 1),
        ("shared", 2),
    ]
    assert sorted((x["model_id"], x["version"], x["job_id"]) for x in rows) == [
        ("m1", 1, "job-a"),
        ("m1", 2, "job-a"),
        ("shared", 1, "job-b"),
        ("shared", 1, "job-c"),
        ("shared", 2, "job-c"),
    ]
    first = rows[0]
    assert first["run_id"] == runs["job-a"]
    assert (first["step"], first["tokens_seen"], first["training_checkpoint"]) == (10, 1000, 0.5)
    assert first["created_at"] == "2026-11-22T13:55:01Z"
    r = cli("blueprint", "list", "--tracking-uri", uri)
    assert r.code == 0, r.err
    for token in ("m1", "shared", "v2", runs["job-a"][:12], "job-c", "2,000", "2026-11-22T13:55:01Z"):
        assert token in r.out


def test_list_one_run_by_run_id_or_job_id(cli, store):
    uri, runs, _ = store
    for ref in (runs["job-a"], "job-a"):
        r = cli("blueprint", "list", "--tracking-uri", uri, "--run", ref, "--json")
        assert r.code == 0, r.err
        assert [(x["model_id"], x["version"], x["run_id"]) for x in json_rows(r.out)] == [
            ("m1", 1, runs["job-a"]),
            ("m1", 2, runs["job-a"]),
        ]


def test_list_one_model_across_runs(cli, store):
    uri, runs, _ = store
    r = cli("blueprint", "list", "--tracking-uri", uri, "--model", "shared", "--json")
    assert r.code == 0, r.err
    rows = json_rows(r.out)
    assert sorted((x["version"], x["run_id"]) for x in rows) == sorted(
        [(1, runs["job-b"]), (1, runs["job-c"]), (2, runs["job-c"])]
    )
    assert all(x["model_id"] == "shared" for x in rows)


def test_run_and_model_are_exclusive(cli, store):
    uri, _, _ = store
    r = cli("blueprint", "list", "--tracking-uri", uri, "--run", "job-a", "--model", "m1")
    assert_one_line_error(r, "--model")


def test_get_latest_and_a_version_to_a_file_byte_for_byte(cli, store, tmp_path):
    uri, runs, texts = store
    out = tmp_path / "bp.json"
    for ref in ("m1", "job-a", runs["job-a"]):
        r = cli("blueprint", "get", ref, "--tracking-uri", uri, "-o", str(out))
        assert r.code == 0 and r.out == "", r
        assert out.read_bytes() == texts[("job-a", 2)].encode("utf-8")
        assert r.err.count("\n") == 1 and str(out) in r.err and "m1 v2" in r.err and runs["job-a"] in r.err
    r = cli("blueprint", "get", "m1", "--version", "1", "--tracking-uri", uri, "-o", str(out))
    assert r.code == 0, r.err
    assert out.read_bytes() == texts[("job-a", 1)].encode("utf-8")


def run_binary(capsysbinary, *argv: str) -> tuple[int, bytes, bytes]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsysbinary.readouterr()
    return code, captured.out, captured.err


def test_get_to_stdout_is_exactly_the_published_bytes(capsysbinary, store):
    uri, _, texts = store
    code, out, _ = run_binary(capsysbinary, "blueprint", "get", "m1", "--tracking-uri", uri)
    assert code == 0 and out == texts[("job-a", 2)].encode("utf-8")  # compact, non-ASCII, no trailing newline
    code, out, _ = run_binary(capsysbinary, "blueprint", "get", "job-a", "--version", "1", "--tracking-uri", uri)
    assert code == 0 and out == texts[("job-a", 1)].encode("utf-8")


def test_a_model_id_in_several_runs(cli, store, tmp_path):
    uri, runs, texts = store
    out = tmp_path / "bp.json"
    # v2 of `shared` is in one run only: the model id is enough (and it is the latest).
    r = cli("blueprint", "get", "shared", "--tracking-uri", uri, "-o", str(out))
    assert r.code == 0 and out.read_bytes() == texts[("job-c", 2)].encode("utf-8") and runs["job-c"] in r.err
    # v1 is in two runs: ambiguous, name both and say to pass the run id; the run id then works.
    r = cli("blueprint", "get", "shared", "--version", "1", "--tracking-uri", uri)
    assert_one_line_error(r, "RUN|MODEL_ID")
    assert runs["job-b"] in r.err and runs["job-c"] in r.err and "instead" in r.err
    r = cli("blueprint", "get", runs["job-b"], "--version", "1", "--tracking-uri", uri, "-o", str(out))
    assert r.code == 0 and out.read_bytes() == texts[("job-b", 1)].encode("utf-8")


def test_unknown_run_model_and_version(cli, store):
    uri, _, _ = store
    assert_one_line_error(cli("blueprint", "list", "--tracking-uri", uri, "--run", "no-such-job"), "--run")
    assert_one_line_error(cli("blueprint", "list", "--tracking-uri", uri, "--model", "no-such-model"), "--model")
    r = cli("blueprint", "get", "no-such-thing", "--tracking-uri", uri)
    assert_one_line_error(r, "RUN|MODEL_ID")
    assert "cpr blueprint list" in r.err
    r = cli("blueprint", "get", "m1", "--version", "7", "--tracking-uri", uri)
    assert_one_line_error(r, "--version")
    assert "published" in r.err and "1" in r.err and "2" in r.err
    for bad in ("0", "-1", "two"):
        assert_one_line_error(cli("blueprint", "get", "m1", "--version", bad, "--tracking-uri", uri), "--version")


def test_unwritable_output(cli, store, tmp_path):
    uri, _, _ = store
    r = cli("blueprint", "get", "m1", "--tracking-uri", uri, "-o", str(tmp_path / "no" / "such" / "dir" / "x.json"))
    assert_one_line_error(r, "-o")


def test_malformed_artifact_is_one_line(cli, capsys, tmp_path):
    uri, client, exp_id = new_store(tmp_path / "bad")
    good = blueprint_text("bad", 1, "r", 10)
    doc = json.loads(good)
    doc["layers"][0]["gradient_norm"] = -1.0
    publish(client, exp_id, "job-bad", "bad", {1: good, 2: json.dumps(doc), 3: "{not json"})
    capsys.readouterr()  # MLflow's own log lines from creating the store
    for version in ("2", "3"):
        r = cli("blueprint", "get", "bad", "--version", version, "--tracking-uri", uri)
        assert_one_line_error(r, f"blueprints/v{version}/blueprint.json")
        assert r.out == ""
    r = cli("blueprint", "list", "--tracking-uri", uri)
    assert_one_line_error(r, "blueprint.json")


def test_a_store_without_that_run(cli, capsys, tmp_path, monkeypatch):
    uri, _, _ = new_store(tmp_path / "empty")
    capsys.readouterr()  # MLflow's own log lines from creating the store
    assert_one_line_error(cli("blueprint", "list", "--tracking-uri", uri, "--run", "job-a"), "--run")
    assert_one_line_error(cli("blueprint", "get", "job-a", "--tracking-uri", uri), "RUN|MODEL_ID")
    r = cli("blueprint", "list", "--tracking-uri", uri, "--json")
    assert r.code == 0 and r.out == ""
    monkeypatch.chdir(tmp_path)  # no ./cpr_runs here: the default store does not exist
    assert_one_line_error(cli("blueprint", "list"), "--tracking-uri")


def test_help_documents_all_six_actions(cli):
    r = cli("blueprint", "--help")
    assert r.code == 0
    for action in ("validate", "show", "diff", "aggregate", "list", "get"):
        assert action in r.out
    for action in ("list", "get"):
        r = cli("blueprint", action, "--help")
        assert r.code == 0 and f"usage: cpr blueprint {action}" in r.out
