"""Telemetry sources name their node by host name and Ray node id, so two Ray nodes on one host stay apart."""

from __future__ import annotations

import socket
import sys
from types import SimpleNamespace

import pytest

from orchestrator.telemetry.sampler import node_name, ray_node_id

NODE_A = "1a2b3c4d" + "0" * 48
NODE_B = "5e6f7a8b" + "0" * 48


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(socket, "gethostname", lambda: "vm7.example.org")
    return "vm7"


def fake_ray(node_id: str, *, initialized: bool = True) -> SimpleNamespace:
    context = SimpleNamespace(get_node_id=lambda: node_id)
    return SimpleNamespace(is_initialized=lambda: initialized, get_runtime_context=lambda: context)


def test_outside_ray_a_node_is_its_short_host_name(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert ray_node_id() is None and node_name() == host
    monkeypatch.setitem(sys.modules, "ray", fake_ray(NODE_A, initialized=False))
    assert ray_node_id() is None and node_name() == host


def test_in_ray_two_nodes_of_one_host_get_two_names(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", fake_ray(NODE_A))
    assert ray_node_id() == NODE_A and node_name() == f"{host}-1a2b3c4d"
    monkeypatch.setitem(sys.modules, "ray", fake_ray(NODE_B))
    assert node_name() == f"{host}-5e6f7a8b"
    assert node_name(NODE_A) == f"{host}-1a2b3c4d"  # an explicit id wins over this process's


def test_a_name_is_one_path_part_so_sources_read_node_rank_meter(host: str) -> None:
    assert "/" not in node_name(NODE_A) and node_name(NODE_A).count("-") == 1
