"""`cpr notify test` against real endpoints on this machine: an Apprise `json://` URL and a signed webhook served by
a local HTTP server, and a command; a refused endpoint is a failure (exit 1), a set-up with no channel or a bad one
is refused in one line (exit 2)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestrator.notify.signing import SIGNATURE_HEADER, verify
from tests.cli.conftest import refused, run_cli


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.got.append({"path": self.path, "headers": dict(self.headers), "body": body})  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    s = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    s.got = []  # type: ignore[attr-defined]
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield s
    s.shutdown()
    s.server_close()


def test_notify_test_reaches_an_apprise_json_url_a_signed_webhook_and_a_command(
    server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    port = server.server_address[1]
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\ncat > "{tmp_path / "event.json"}"\n')
    hook.chmod(0o755)
    out = run_cli(
        "notify",
        "test",
        f"notify.urls=[json://127.0.0.1:{port}/apprise]",
        f"notify.webhook=http://127.0.0.1:{port}/hook",
        "notify.secret=abc",
        f"notify.command={hook}",
    )
    assert out.code == 0, out
    assert "apprise: sent" in out.out and "webhook: sent" in out.out and "command: sent" in out.out
    by_path = {g["path"]: g for g in server.got}  # type: ignore[attr-defined]
    apprise = json.loads(by_path["/apprise"]["body"])
    assert apprise["title"] == "cpr: test notification" and "cpr notify test" in apprise["message"]
    hook_req = by_path["/hook"]
    assert verify(hook_req["body"], "abc", hook_req["headers"][SIGNATURE_HEADER])
    assert json.loads(hook_req["body"])["event"] == "test"
    assert json.loads((tmp_path / "event.json").read_text())["event"] == "test"


def test_a_refused_endpoint_is_a_failure_not_a_crash() -> None:
    out = run_cli("notify", "test", "notify.webhook=http://127.0.0.1:9/hook", "notify.retries=0")
    assert out.code == 1 and "webhook: failed" in out.out and "Traceback" not in out.out + out.err


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ([], "notify"),
        (["notify.urls=[notaurl]"], "notify.urls[0]"),
        (["notify.webhook=ftp://example.org/x"], "notify.webhook"),
        (["notify.command=/no/such/program"], "notify.command"),
        (["notify.webhook=http://127.0.0.1:9/x", "notify.on=[stop,bogus]"], "notify.on[1]"),
        (["notify.secret=abc"], "notify.secret"),
    ],
)
def test_a_bad_or_missing_set_up_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], field: str
) -> None:
    monkeypatch.chdir(tmp_path)
    refused(tmp_path, field, "notify", "test", *overrides)
