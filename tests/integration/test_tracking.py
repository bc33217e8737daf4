"""MLflow adapter against a real SQLite store in a temp dir."""

from __future__ import annotations

import pytest

from orchestrator.errors import InputError
from orchestrator.tracking.runs import find_run, list_jobs, request_stop, stop_request
from orchestrator.tracking.uri import check_tracking_uri, default_tracking_uri
from orchestrator.tracking.writer import RunWriter, flatten_config, metric_name


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = default_tracking_uri(root)
    writer = RunWriter.create(
        uri, "cpr", "job-1", {"cpr.job_id": "job-1", "cpr.state": "running"}, artifact_location=str(root / "artifacts")
    )
    yield uri, writer, root
    writer.stop(drain_s=30)  # its thread ends with the module's tests, not in the interpreter's shutdown


def test_metrics_params_tags_artifacts_round_trip(store) -> None:
    _uri, w, root = store
    w.log_params({"a.b": "1", "long": "x" * 10_000})
    for step in range(700):
        w.log_metrics({"train/loss": 1.0 / (step + 1), "cpr/psi": -step, "energy/vm/rank0/cpu@x_kwh": step}, step=step)
    w.set_tags({"cpr.decision": "continue"})
    w.log_text("hello", "summary.json")
    (root / "t.jsonl").write_text("{}\n")
    w.log_file(str(root / "t.jsonl"))
    assert w.flush(60)
    run = w.client.get_run(w.run_id)
    assert run.data.params["a.b"] == "1" and len(run.data.params["long"]) == 6000
    hist = w.client.get_metric_history(w.run_id, "train/loss")
    assert [m.step for m in sorted(hist, key=lambda m: m.step)] == list(range(700))
    assert metric_name("energy/vm/rank0/cpu@x_kwh") in run.data.metrics
    assert run.data.tags["cpr.decision"] == "continue"
    assert {a.path for a in w.client.list_artifacts(w.run_id)} >= {"summary.json", "t.jsonl"}


def test_a_failing_store_is_retried_in_order_and_loses_nothing(store, monkeypatch) -> None:
    _uri, w, _ = store
    real = w.client.log_batch
    failures = {"n": 2}

    def flaky(*args, **kwargs):  # simulates the store being unreachable for two calls
        if failures["n"]:
            failures["n"] -= 1
            raise ConnectionError("store down")
        return real(*args, **kwargs)

    monkeypatch.setattr(w.client, "log_batch", flaky)
    for step in range(1000, 1010):
        w.log_metrics({"cpr/ratio": float(step)}, step=step)
    assert w.flush(60) and failures["n"] == 0 and "store down" in (w.last_error or "")
    steps = [m.step for m in w.client.get_metric_history(w.run_id, "cpr/ratio")]
    assert sorted(steps) == list(range(1000, 1010))


def test_jobs_are_listed_found_and_stop_requested(store) -> None:
    uri, w, _ = store
    rows = list_jobs(uri)
    assert [r.job_id for r in rows] == ["job-1"] and rows[0].state == "running"
    assert find_run(uri, "job-1") == w.run_id == find_run(uri, w.run_id)
    with pytest.raises(InputError):
        find_run(uri, "nope")
    assert stop_request(w.client, w.run_id) is None
    request_stop(uri, w.run_id)
    first = stop_request(w.client, w.run_id)
    assert first is not None and list_jobs(uri)[0].stop_requested
    request_stop(uri, w.run_id)  # a second `cpr stop` is another request (it cuts a cool-down short)
    assert stop_request(w.client, w.run_id) not in (None, first)


def test_unreachable_stores_are_refused_quickly(tmp_path) -> None:
    for uri in ("http://127.0.0.1:9", f"sqlite:///{tmp_path}/no/such/dir/mlflow.db", "gopher://x"):
        with pytest.raises(InputError) as err:
            check_tracking_uri(uri, timeout_s=2)
        assert err.value.field == "tracking.uri"
    check_tracking_uri(default_tracking_uri(tmp_path / "cpr_runs"))


def test_flatten_config() -> None:
    assert flatten_config({"a": {"b": 1, "c": None}, "d": [1, 2]}) == {"a.b": "1", "a.c": "null", "d": "[1, 2]"}
