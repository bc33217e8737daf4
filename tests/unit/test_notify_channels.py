"""The notification channels against real local endpoints: an HTTP server on 127.0.0.1, a listening socket that
never answers, a closed port, small scripts; and the checks that refuse a bad notify setting by its field."""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import orchestrator
from orchestrator.errors import InputError
from orchestrator.notify.channels import (
    AppriseChannel,
    CommandChannel,
    Delivery,
    DeliveryError,
    WebhookChannel,
    deliver,
    mask_url,
)
from orchestrator.notify.checks import channels_of, check_apprise_url, check_command, check_webhook_url
from orchestrator.notify.signing import body_of, verify

EVENT = {
    "id": "ev-1",
    "event": "stop",
    "title": "cpr stopped job-7",
    "message": "Ψ fell below 0.1\nstep 1200",
    "psi": 0.08,
}
SECRET = "hook-s3cret"


class Server:
    """Records each POST (path, headers, body) and answers with `status`."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append((self.path, dict(self.headers), body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_webhook_delivers_a_signed_body(server: Server) -> None:
    WebhookChannel(f"http://127.0.0.1:{server.port}/hooks/cpr", SECRET, timeout_s=2).send(EVENT)
    [(path, headers, body)] = server.requests
    assert path == "/hooks/cpr"
    assert body == body_of(EVENT) and json.loads(body)["psi"] == 0.08
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"cpr/{orchestrator.__version__}"
    assert headers["X-CPR-Event"] == "stop" and headers["X-CPR-Delivery"] == "ev-1"
    assert verify(body, SECRET, headers["X-CPR-Signature-256"])


def test_webhook_without_secret_sends_no_signature(server: Server) -> None:
    WebhookChannel(f"http://127.0.0.1:{server.port}/", None, timeout_s=2).send(EVENT)
    assert "X-CPR-Signature-256" not in server.requests[0][1]


def test_http_500_fails_and_deliver_retries_with_capped_jittered_backoff(server: Server) -> None:
    server.status = 500
    channel = WebhookChannel(f"http://127.0.0.1:{server.port}/x?token=abc", SECRET, timeout_s=2)
    with pytest.raises(DeliveryError, match="HTTP 500") as info:
        channel.send(EVENT)
    assert "abc" not in str(info.value) and "/***" in str(info.value)
    server.requests.clear()
    delays: list[float] = []
    result = deliver(channel, EVENT, retries=3, backoff_s=40.0, sleep=delays.append)
    assert isinstance(result, Delivery) and not result.ok
    assert result.attempts == 4 and len(server.requests) == 4
    assert "HTTP 500" in (result.error or "")
    assert len(delays) == 3
    assert all(0 <= d <= cap for d, cap in zip(delays, [40.0, 60.0, 60.0], strict=True))


def test_redirects_are_not_followed(server: Server) -> None:
    server.status = 302
    with pytest.raises(DeliveryError, match="HTTP 302"):
        WebhookChannel(f"http://127.0.0.1:{server.port}/", None, timeout_s=2).send(EVENT)
    assert len(server.requests) == 1


def test_deliver_succeeds_after_a_failure_and_stops_early_on_request() -> None:
    class Flaky:
        name = "webhook"

        def __init__(self, failures: int) -> None:
            self.failures, self.calls = failures, 0

        def send(self, event: object) -> None:
            self.calls += 1
            if self.calls <= self.failures:
                raise RuntimeError("boom https://u:pw@h/secret-path")

    ok = deliver(Flaky(1), EVENT, retries=5, backoff_s=0.01, sleep=lambda s: None)
    assert ok.ok and ok.attempts == 2 and ok.error is None
    stopped = deliver(Flaky(10), EVENT, retries=5, backoff_s=0.01, sleep=lambda s: None, should_stop=lambda: True)
    assert not stopped.ok and stopped.attempts == 1
    assert stopped.error == "RuntimeError: boom https://***@h/***"  # any exception is a failed attempt, masked


def test_hanging_server_fails_in_about_the_timeout(hanging_port: int) -> None:
    channel = WebhookChannel(f"http://127.0.0.1:{hanging_port}/", None, timeout_s=0.2)
    start = time.monotonic()
    with pytest.raises(DeliveryError, match="timed out"):
        channel.send(EVENT)
    assert 0.15 < time.monotonic() - start < 1.5


def test_refused_connection_fails_fast(closed_port: int) -> None:
    start = time.monotonic()
    result = deliver(WebhookChannel(f"http://127.0.0.1:{closed_port}/", None, 5), EVENT, retries=0, backoff_s=1)
    assert not result.ok and result.attempts == 1 and "refused" in (result.error or "").lower()
    assert time.monotonic() - start < 1.0


def test_apprise_json_delivers_title_and_message(server: Server) -> None:
    AppriseChannel([f"json://127.0.0.1:{server.port}/apprise"], timeout_s=2).send(EVENT)
    [(path, _, body)] = server.requests
    posted = json.loads(body)
    assert path == "/apprise"
    assert posted["title"] == EVENT["title"] and posted["message"] == EVENT["message"]


def test_apprise_failures_raise_masked(server: Server, hanging_port: int) -> None:
    server.status = 500
    with pytest.raises(DeliveryError, match=r"json://127\.0\.0\.1:\d+/\*\*\*"):
        AppriseChannel([f"json://127.0.0.1:{server.port}/tok3n"], timeout_s=2).send(EVENT)
    start = time.monotonic()
    with pytest.raises(DeliveryError):
        AppriseChannel([f"json://127.0.0.1:{hanging_port}/tok3n"], timeout_s=0.2).send(EVENT)
    assert time.monotonic() - start < 1.5  # timeout_s is apprise's connect and read timeout


def _script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hook.py"
    path.write_text(f"#!{sys.executable}\n{text}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_command_receives_the_body_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = _script(
        tmp_path,
        "import os, sys\n"
        "open(sys.argv[1], 'wb').write(os.environ['CPR_EVENT'].encode() + b'|' + sys.stdin.buffer.read())\n",
    )
    CommandChannel([str(script), str(out)], timeout_s=5).send(EVENT)
    assert out.read_bytes() == b"stop|" + body_of(EVENT)


def test_command_nonzero_exit_quotes_the_last_stderr_line(tmp_path: Path) -> None:
    script = _script(tmp_path, "import sys\nsys.stderr.write('warming up\\n' + 'x' * 400 + '\\n')\nsys.exit(3)\n")
    with pytest.raises(DeliveryError, match=r"exit status 3: x+$") as info:
        CommandChannel([str(script)], timeout_s=5).send(EVENT)
    assert len(str(info.value).rsplit(": ", 1)[1]) == 300  # the last line, truncated


def test_command_timeout_kills_its_process_group(tmp_path: Path) -> None:
    script = tmp_path / "hang.sh"
    script.write_text("#!/bin/sh\nsleep 30\necho done\n")  # sh forks sleep, which holds the pipes
    script.chmod(0o755)
    start = time.monotonic()
    with pytest.raises(DeliveryError, match="timed out"):
        CommandChannel([str(script)], timeout_s=0.2).send(EVENT)
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://hooks.example.com:8443/services/T0/B0/XyZ?token=1", "https://hooks.example.com:8443/***"),
        ("http://user:pw@10.0.0.5/", "http://***@10.0.0.5"),
        ("https://hooks.example.com", "https://hooks.example.com"),
        ("slack://TokenA/TokenB/TokenC", "slack://***"),
        ("discord://webhook_id/webhook_token", "discord://***"),
        ("json://127.0.0.1:8080/path", "json://127.0.0.1:8080/***"),
        ("mailto://user:pw@gmail.com", "mailto://***"),
        ("not a url", "***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize("url", ["slack://onlyonetoken", "nosuchscheme://host/x", "hooks.slack.com/x"])
def test_check_refuses_a_bad_apprise_url_by_field(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match=r"^notify\.urls\[1\]: ") as info:
        check_apprise_url(url, "notify.urls[1]")
    assert "onlyonetoken" not in str(info.value)
    assert capsys.readouterr() == ("", "")  # apprise's own log lines (the URL in full) stay quiet


def test_checks_accept_good_settings_and_build_channels(tmp_path: Path) -> None:
    check_apprise_url("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "notify.urls[0]")
    assert channels_of(None, None, None, None, 5) == []
    channels = channels_of(["json://localhost/a", "discord://1/2"], "https://h/x", "s", ["sh"], 5)
    assert [c.name for c in channels] == ["apprise[0]", "apprise[1]", "webhook", "command"]  # told apart


@pytest.mark.parametrize("url", ["ftp://host/x", "https://", "hooks.example.com/x"])
def test_check_refuses_a_non_http_webhook(url: str) -> None:
    with pytest.raises(InputError, match=r"^notify\.webhook: "):
        check_webhook_url(url, "notify.webhook")


def test_check_refuses_missing_and_non_executable_commands(tmp_path: Path) -> None:
    plain = tmp_path / "not-executable.sh"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    for argv, why in [
        ([], "needs a program"),
        (["no-such-program-cpr"], "not on PATH"),
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(plain)], "not executable"),
    ]:
        with pytest.raises(InputError, match=rf"^notify\.command: .*{why}"):
            check_command(argv, "notify.command")
    check_command([str(Path(sys.executable))], "notify.command")
    assert os.access(sys.executable, os.X_OK)
