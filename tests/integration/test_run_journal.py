"""The run writer's write-ahead journal against a real SQLite MLflow store: writes a writer could not send (its
store unreachable: a real refused connection) are sent, in order and once, by the next writer of the run; a torn
last line is skipped; marks survive, so a retried report is recognised, in whatever order the retries come."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator.tracking.journal import Journal, Marks
from orchestrator.tracking.writer import RunWriter
from orchestrator.worker.trainer import free_port


def test_a_new_writer_sends_what_the_last_one_owed_once_and_in_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as the controller sets it: fail fast, retry later
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    created = RunWriter.create(uri, "cpr", "job", {"cpr.job_id": "job"}, artifact_location=str(tmp_path / "a"))
    assert created.flush(30)
    run_id, exp_id = created.run_id, created.experiment_id
    state = tmp_path / "jobs" / "job"
    # the first writer's store is unreachable (nothing listens on that port): everything stays owed, on disk
    down = RunWriter(MlflowClient(f"http://127.0.0.1:{free_port()}"), run_id, exp_id, state)
    for step in (5, 10, 15):
        down.log_metrics({"train/loss": 4.0 - step / 10, "lr": 1e-3}, step=step, mark="train")
    down.set_tags({"cpr.state": "running"})
    down.log_metrics({"val/loss": float("nan")}, step=10, mark="eval")
    assert not down.flush(1.0) and down.pending() >= 1 and down.last_error is not None
    owed = [json.loads(line) for line in (state / "mlflow_journal.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in owed] == [1, 2, 3, 4, 5]
    down.abandon()  # its thread would retry the dead port for ever, and log into later tests' output
    # "the controller restarted": a second writer of the run, on the same journal, with the store reachable
    up = RunWriter.attach(uri, run_id, exp_id, state)
    assert all(up.logged("train", step) for step in (5, 10, 15)) and up.logged("eval", 10)
    assert not up.logged("train", 20) and not up.logged("eval", 5) and not up.logged("probe", 5)
    up.log_metrics({"train/loss": 2.0}, step=20, mark="train")
    assert up.close("FINISHED", timeout_s=30)
    client = MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")] == [
        (5, 3.5),
        (10, 3.0),
        (15, 2.5),
        (20, 2.0),
    ]
    (val,) = client.get_metric_history(run_id, "val/loss")
    assert val.step == 10 and val.value != val.value  # NaN, journaled and sent as such
    run = client.get_run(run_id)
    assert run.data.tags["cpr.state"] == "running" and run.info.status == "FINISHED"
    assert (state / "mlflow_journal.jsonl").read_text() == ""  # drained
    assert json.loads((state / "mlflow_ack.json").read_text())["seq"] == 7
    # sending the owed writes again (a writer that died after the store took them, before its ack) adds nothing
    Journal(state).ack(0, Marks(), drained=False)
    (state / "mlflow_journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in owed))
    again = RunWriter.attach(uri, run_id, exp_id, state)
    assert again.flush(30)
    assert len(client.get_metric_history(run_id, "train/loss")) == 4
    created.stop()
    again.stop()


def test_a_torn_last_line_is_skipped_and_marks_are_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append({"seq": 1, "op": "metrics", "payload": [["a", 1.0, 0, 5]], "mark": ["train", 5]})
    journal.append({"seq": 2, "op": "metrics", "payload": [["a", 1.0, 0, 15]], "mark": ["train", 15]})
    with journal.path.open("a") as fh:
        fh.write('{"seq": 3, "op": "metr')  # the process died mid-append
    seq, marks, owed = journal.recover()
    assert seq == 0 and [r["seq"] for r in owed] == [1, 2]
    assert ("train", 5) in marks and ("train", 15) in marks and ("train", 10) not in marks
    done = Marks()
    done.add("train", 5)
    done.add("eval", 10)
    journal.ack(1, done, drained=False)
    seq, marks, owed = journal.recover()
    assert seq == 1 and [r["seq"] for r in owed] == [2]
    assert {step for step in range(20) if ("train", step) in marks} == {5, 15} and ("eval", 10) in marks


def test_a_step_below_the_highest_is_still_owed() -> None:
    """The reports a rank sent while the controller was down are retried concurrently on the restarted actor: step
    40's may be logged before step 35's, which must not then be taken for a duplicate (a CI failure once)."""
    marks = Marks()
    for step in (5, 10, 15, 20, 25, 30, 40):
        marks.add("train", step)
    assert ("train", 35) not in marks and ("train", 40) in marks
    marks.add("train", 35)
    assert ("train", 35) in marks


def test_marks_keep_the_last_steps_and_a_floor_below_them() -> None:
    marks = Marks()
    for step in range(1, Marks.KEEP + 11):
        marks.add("train", 10 * step)
    saved = marks.to_dict()["train"]
    assert saved["floor"] == 100 and len(saved["steps"]) == Marks.KEEP  # bounded, however long the run
    again = Marks(json.loads(json.dumps(marks.to_dict())))
    assert ("train", 5) in again and ("train", 100) in again and ("train", 115) not in again
    assert ("train", 10 * (Marks.KEEP + 10)) in again
    old = Marks({"train": 40})  # an acknowledgement from before marks were sets: a high-water mark
    assert ("train", 40) in old and ("train", 45) not in old


def test_cpr_sync_sends_what_an_ended_job_still_owes(tmp_path: Path, monkeypatch, capsys) -> None:
    """Ray went down with the controller before the store came back: `cpr sync` sends the journal's writes."""
    from launch.cli import main
    from orchestrator.controller.store import JobStore

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    created = RunWriter.create(uri, "cpr", "job", {"cpr.job_id": "job"}, artifact_location=str(tmp_path / "a"))
    assert created.flush(30)
    ended, running = tmp_path / "cpr_runs" / "jobs" / "ended", tmp_path / "cpr_runs" / "jobs" / "running"
    for folder, state in ((ended, "stopped"), (running, "running")):
        store = JobStore(folder)
        store.save("job.json", {"tracking_uri": uri, "run_id": created.run_id, "experiment_id": created.experiment_id})
        store.save("handle.json", {"state": state})
        down = RunWriter(MlflowClient(f"http://127.0.0.1:{free_port()}"), created.run_id, created.experiment_id, folder)
        down.log_metrics({"train/loss": 1.0 if state == "stopped" else 9.0}, step=5)
        down.close("FINISHED", timeout_s=0.5)
        down.abandon()
    monkeypatch.chdir(tmp_path)
    assert main(["sync"]) == 0
    printed = capsys.readouterr().out
    assert "ended: 2 of 2 writes sent" in printed and "running: running, its controller sends its writes" in printed
    client = MlflowClient(uri)
    assert [m.value for m in client.get_metric_history(created.run_id, "train/loss")] == [1.0]
    assert client.get_run(created.run_id).info.status == "FINISHED"
    assert (running / "mlflow_journal.jsonl").read_text() != ""  # a live job's journal is left to its controller
    created.stop()
