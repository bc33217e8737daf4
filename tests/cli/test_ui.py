"""`cpr ui` and the Ray dashboard listen on 127.0.0.1 unless configured otherwise: neither has authentication."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.config.compose import compose_job
from tests.conftest import assert_one_line_error, stop_process_group


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cpr_runs' / 'mlflow.db'}"


@pytest.fixture
def execs(monkeypatch) -> list[list[str]]:
    """os.execv recorded, not done: an in-process `cpr ui` must never turn pytest into an MLflow server."""
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append(list(argv)))
    return calls


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ui_listens_on_loopback_port_5000_by_default(cli, store: str, tmp_path: Path) -> None:
    result = cli("ui", "--tracking-uri", store, "--print")
    assert result.code == 0 and result.err == ""
    argv = shlex.split(result.out)
    assert argv[:4] == [sys.executable, "-m", "mlflow", "ui"]
    opts = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert opts == {
        "--backend-store-uri": store,
        "--host": "127.0.0.1",
        "--port": "5000",
        "--default-artifact-root": str(tmp_path / "cpr_runs" / "artifacts"),
    }


def test_ui_runs_the_printed_command(cli, store: str, execs: list[list[str]]) -> None:
    port = str(free_port())
    printed = cli("ui", "--tracking-uri", store, "--port", port, "--dry-run").out
    result = cli("ui", "--tracking-uri", store, "--port", port)
    assert result.code == 0 and execs == [shlex.split(printed)]
    assert f"http://127.0.0.1:{port}" in result.out


def test_another_host_is_allowed_with_a_warning(cli, store: str) -> None:
    result = cli("ui", "--tracking-uri", store, "--host", "0.0.0.0", "--print")
    assert result.code == 0 and "--host 0.0.0.0" in result.out
    assert result.err.count("\n") == 1 and "no authentication" in result.err and result.err.startswith("cpr: warning")


def test_port_in_use_is_one_line(cli, store: str, execs: list[list[str]]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert_one_line_error(cli("ui", "--tracking-uri", store, "--port", port), f"127.0.0.1:{port} is in use")
    assert execs == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--host", "no-such-host.invalid"], "--host: cannot resolve"),
        (["--host", "192.0.2.1"], "--host: cannot listen on 192.0.2.1"),  # TEST-NET-1: never this machine's
        (["--port", "70000"], "--port: 70000 is not a TCP port"),
        (["--tracking-uri", "https://u:pw@mlflow.example.com"], "https://u:***@mlflow.example.com is a tracking"),
    ],
)
def test_bad_input_is_one_line(cli, store: str, execs: list[list[str]], args: list[str], needle: str) -> None:
    result = cli("ui", "--tracking-uri", store, *args)
    assert_one_line_error(result, needle)
    assert execs == [] and "pw@" not in result.err


def test_no_store_here_is_one_line(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(cli("ui", "--print"), "run `cpr submit` here first")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ui_really_serves_on_loopback_only(store: str, tmp_path: Path) -> None:
    """The real server (≈70 s to start on 2 busy cores): answers on 127.0.0.1 and listens nowhere else."""
    import psutil

    port = free_port()
    log = (tmp_path / "ui.log").open("w")
    ui = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "ui", "--tracking-uri", store, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers it starts end with it
    )
    try:
        end = time.monotonic() + 300
        while True:
            assert ui.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < end, "the UI did not answer in 300 s"
            time.sleep(1)
        listening = {
            c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == "LISTEN" and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}
        others = [
            a.address
            for addrs in psutil.net_if_addrs().values()
            for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")
        ]
        for address in others:  # this machine's other addresses: nothing answers there
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
                pass
    finally:
        stop_process_group(ui, timeout_s=120)
        log.close()


# -- the Ray dashboard --------------------------------------------------------------------------------------
def test_local_ray_starts_without_a_dashboard_and_on_loopback(monkeypatch) -> None:
    import ray

    from orchestrator.submission import init_ray

    calls: list[dict] = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    init_ray(compose_job([]), start_head=False)
    init_ray(compose_job(["cluster.dashboard=true"]), start_head=False)
    init_ray(compose_job(["cluster.dashboard=true", "cluster.dashboard_host=0.0.0.0"]), start_head=False)
    assert [(c["include_dashboard"], c["dashboard_host"]) for c in calls] == [
        (False, "127.0.0.1"),
        (True, "127.0.0.1"),
        (True, "0.0.0.0"),
    ]


def test_a_detached_head_starts_without_a_dashboard_and_on_loopback(monkeypatch) -> None:
    from orchestrator.submission import ray_cluster

    runs: list[list[str]] = []

    def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
        runs.append(cmd)
        return subprocess.CompletedProcess(cmd, 1 if cmd[1] == "status" else 0, "", "")  # no head runs yet

    monkeypatch.setattr(ray_cluster.subprocess, "run", run)
    assert ray_cluster.start_local_head(compose_job([])) == "auto"
    assert runs[1][1:3] == ["start", "--head"]
    assert {"--include-dashboard=false", "--dashboard-host=127.0.0.1"} <= set(runs[1])
    ray_cluster.start_local_head(compose_job(["cluster.dashboard=true"]))
    assert {"--include-dashboard=true", "--dashboard-host=127.0.0.1"} <= set(runs[3])
