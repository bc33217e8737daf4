"""Notifications of real jobs (`cpr submit +experiment=debug`: real Ray, DeepSpeed, codecarbon, SQLite MLflow) to a
real HTTP server on this machine: the signed JSON of a rule's STOP and of the blueprints before it, with an Apprise
`json://` endpoint that accepts and never answers on the same job (it must not hold up the STOP nor the webhook);
and a shadow-mode job whose proposal a person answers with `cpr stop`, as the message says."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestrator.notify.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from tests.conftest import CPR, cpr

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-the-test"
EVENTS = "notify.on=[stop,shadow,blueprint,reallocation,failed,diverged]"


class Receiver(ThreadingHTTPServer):
    """POST /hook: recorded (arrival time, headers, body) and answered 204. POST /hang: the request is read, recorded,
    and never answered until the test ends."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hook: list[dict[str, Any]] = []
        self.hung: list[dict[str, Any]] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r for r in list(self.hook) if kind is None or r["json"]["event"] == kind]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        record = {"t": time.time(), "headers": dict(self.headers), "body": body, "json": json.loads(body or b"{}")}
        if self.path.startswith("/hang"):
            self.server.hung.append(record)
            self.server.release.wait(300)
            return
        self.server.hook.append(record)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()


def job_line(out: str, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(key))


@pytest.fixture(scope="module")
def rule_run(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The debug job stopped by its rule, its webhook on /hook and an Apprise json:// URL on /hang (one attempt of at
    most a minute each; the end waits 3 s for what is still on its way)."""
    work = tmp_path_factory.mktemp("notify")
    done = cpr(
        "submit",
        "+experiment=debug",
        f"notify.webhook={receiver.url}/hook",
        f"notify.secret={SECRET}",
        f"notify.urls=[json://127.0.0.1:{receiver.server_address[1]}/hang]",
        "notify.timeout_s=60",
        "notify.retries=0",
        "notify.flush_s=3",
        EVENTS,
        cwd=work,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = job_line(done.stdout, "job id:")
    state = work / "cpr_runs" / "jobs" / job_id
    summary = json.loads((state / "summary.json").read_text())
    stop = [json.loads(line) for line in (state / "decisions.jsonl").read_text().splitlines()][-1]
    assert stop["action"] == "stop", stop
    return {"work": work, "out": done.stdout, "job_id": job_id, "summary": summary, "t_stop": stop["t_s"]}


def test_the_rules_stop_reaches_the_webhook_signed_with_its_figures(receiver: Receiver, rule_run: dict) -> None:
    assert rule_run["summary"]["reason"] == "marginal_return", rule_run["out"][-2000:]
    [stop] = receiver.events("stop")
    assert verify(stop["body"], SECRET, stop["headers"][SIGNATURE_HEADER])
    assert not verify(stop["body"].replace(b"marginal_return", b"budget"), SECRET, stop["headers"][SIGNATURE_HEADER])
    e = stop["json"]
    assert stop["headers"][EVENT_HEADER] == "stop" and stop["headers"][DELIVERY_HEADER] == e["id"]
    assert e["job_id"] == rule_run["job_id"] and e["reason"] == "marginal_return"
    assert e["step"] == rule_run["summary"]["step"] and e["psi"] == pytest.approx(rule_run["summary"]["psi"])
    assert e["gamma"]["energy_kwh"] > 0 and e["gamma"]["tokens"] > 0 and e["gamma_saved_fraction"] > 0
    assert e["ratio"] is not None and e["eta"] is not None and e["ratio"] < e["eta"]
    assert Path(e["checkpoint"]).is_dir() and e["checkpoint"] == rule_run["summary"]["checkpoint"]
    assert f"cpr report {rule_run['job_id']}" in e["message"]
    assert e["cooldown"]["end_step"] == e["step"] and "cool-down after it gained" in e["message"]  # sent after it
    # blueprints before it (debug: 3 % and 5 % of the budget, and the STOP's), each signed
    blueprints = receiver.events("blueprint")
    assert len(blueprints) >= 2 and all(verify(b["body"], SECRET, b["headers"][SIGNATURE_HEADER]) for b in blueprints)
    assert [b["json"]["version"] for b in blueprints] == sorted(b["json"]["version"] for b in blueprints)


def test_a_hanging_endpoint_holds_up_neither_the_stop_nor_the_other_channel(receiver: Receiver, rule_run: dict) -> None:
    assert receiver.hung, "the Apprise channel never reached its endpoint"
    assert receiver.hung[0]["json"]["title"]  # Apprise's JSON: title, message, type
    # The STOP reached the ranks in the answer to their last check: it came within a second, while the Apprise
    # endpoint held its first delivery (a blueprint's) open. No check waited out the endpoint's 60 s timeout either
    # (a check can wait seconds on a blueprint being published under the job's lock: that is not a notification's).
    wait = min(rule_run["summary"]["workers"], key=lambda w: w["rank"])["check_wait"]
    assert wait["n"] >= 5 and wait["last_s"] < 1.0 and wait["max_s"] < 30, wait
    assert receiver.hung[0]["t"] < rule_run["t_stop"]  # it hung before the STOP was decided
    # The webhook got each event within a second of the controller deciding it, while the other channel hung.
    late = [(r["json"]["event"], r["t"] - r["json"]["t_s"]) for r in receiver.events() if r["t"] - r["json"]["t_s"] > 1]
    assert late == []
    # The end waited notify.flush_s (3 s) for the hung deliveries, then counted them as failed.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{rule_run['work'] / 'cpr_runs' / 'mlflow.db'}")
    run = client.get_run(job_line(rule_run["out"], "MLflow run id:"))
    sent = len(receiver.events())
    tag = run.data.tags["cpr.notify"]
    assert tag.startswith(f"{sent} sent, ") and "failed (last: apprise: not delivered by the job's end" in tag
    params = run.data.params  # the URLs and the secret are masked
    assert "/hook" not in params["notify.webhook"] and "/hang" not in json.dumps(params)
    assert SECRET not in json.dumps(params)
    status = subprocess.run([CPR, "status"], cwd=rule_run["work"], capture_output=True, text=True, timeout=120)
    assert "notifications" in status.stdout and "failed" in status.stdout
    outbox = rule_run["work"] / "cpr_runs" / "jobs" / rule_run["job_id"] / "notifications.jsonl"
    final = {}
    for line in outbox.read_text().splitlines():
        rec = json.loads(line)
        final[rec["id"]] = rec["status"]
    assert {s for k, s in final.items() if k.endswith("@webhook")} == {"sent"}
    assert {s for k, s in final.items() if k.endswith("@apprise")} == {"failed"}


def test_a_shadow_proposal_is_sent_and_answered_with_cpr_stop(receiver: Receiver, tmp_path: Path) -> None:
    """stop.enforce=false: the rule's STOP is a proposal; the test acts as the person who reads it."""
    before = len(receiver.hook)
    proc = subprocess.Popen(
        [
            CPR,
            "submit",
            "+experiment=debug",
            "stop=shadow",
            f"notify.webhook={receiver.url}/hook",
            f"notify.secret={SECRET}",
            "notify.on=[shadow,stop]",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not [r for r in receiver.hook[before:] if r["json"]["event"] == "shadow"]:
            assert proc.poll() is None and time.monotonic() < deadline, "no proposal before the job ended"
            time.sleep(1)
        [proposal] = [r for r in receiver.hook[before:] if r["json"]["event"] == "shadow"]
        assert verify(proposal["body"], SECRET, proposal["headers"][SIGNATURE_HEADER])
        e = proposal["json"]
        assert e["stop_command"] == f"cpr stop {e['job_id']}" and "stop.enforce=false" in e["message"]
        assert e["ratio"] < e["eta"] and e["gamma"]["energy_kwh"] > 0
        command = e["stop_command"].split()
        assert command[0] == "cpr"
        stopped = subprocess.run([CPR, *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    [stop] = [r for r in receiver.hook[before:] if r["json"]["event"] == "stop"]
    assert stop["json"]["reason"] == "user" and stop["json"]["job_id"] == e["job_id"]
    assert stop["json"]["step"] > e["step"]  # it ran on past the proposal until the person stopped it


def test_notify_summary_sends_the_stores_recent_jobs(receiver: Receiver, rule_run: dict) -> None:
    done = cpr("notify", "summary", "--days", "1", f"notify.webhook={receiver.url}/hook", cwd=rule_run["work"])
    assert done.returncode == 0 and "webhook: sent" in done.stdout, done.stdout + done.stderr
    [summary] = receiver.events("summary")
    e = summary["json"]
    assert [j["job_id"] for j in e["jobs"]] == [rule_run["job_id"]] and e["by_state"] == {"stopped": 1}
    assert f"- {rule_run['job_id']}: stopped (marginal_return)" in e["message"] and e["energy_kwh"] > 0
