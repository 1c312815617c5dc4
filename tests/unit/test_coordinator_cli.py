"""CLI plumbing of the coordinator: one-sentence errors, nodes table and JSON, serve/down."""

from __future__ import annotations

import json
import socket

import pytest

from openheap.cli.main import main
from openheap.coordinator.registry import NodeInfo
from openheap.coordinator.service import CoordinatorThread

NOT_RUNNING = "openheap: error: the coordinator is not running; start it with 'openheap up' or 'openheap serve'\n"


@pytest.mark.parametrize("args", [["nodes"], ["nodes", "--json"], ["nodes", "--remove", "x"]])
def test_not_running_is_one_sentence(run_cli, oh_home, args):
    proc = run_cli(*args, "--home", oh_home, check=False)
    assert proc.returncode == 8
    assert proc.stderr == NOT_RUNNING
    assert proc.stdout == ""


def test_not_running_in_process(oh_home, capsys):
    assert main(["nodes"]) == 8
    assert capsys.readouterr().err == NOT_RUNNING


def test_nodes_table_and_json(oh_home, capsys):
    with CoordinatorThread(oh_home, coap_port=0) as c:
        assert main(["nodes"]) == 0
        assert "no nodes have registered" in capsys.readouterr().out
        c.registry.register(NodeInfo("node01", "virtual", "0.1.0", 4 << 20, 3 << 20, 1 << 20, 7, zone="desk"),
                            "127.0.1.1", 40001, 60)
        assert main(["nodes"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["NAME", "BOARD", "ADDRESS", "STATE", "SHARES", "FREE", "LAST", "SEEN", "ZONE"]
        assert out[1].split()[:6] == ["node01", "virtual", "127.0.1.1:40001", "registered", "7", "3.0"]
        assert out[1].split()[-1] == "desk"
        assert main(["nodes", "--json"]) == 0
        nodes = json.loads(capsys.readouterr().out)
        assert {"name", "board", "address", "state", "shares", "free", "last_seen"} <= set(nodes[0])
        assert main(["nodes", "--remove", "node01"]) == 0
        assert "node01 removed" in capsys.readouterr().out
        assert main(["nodes", "--remove", "node01"]) == 1
        assert capsys.readouterr().err == "openheap: error: there is no node named node01 in the registry\n"


def test_serve_refuses_a_second_coordinator(run_cli, oh_home):
    with CoordinatorThread(oh_home, coap_port=0):
        proc = run_cli("serve", "--coap-port", "0", "--home", oh_home, check=False, timeout=30)
    assert proc.returncode == 8
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("openheap: error: a coordinator (pid ")
    assert "is already running for %s" % oh_home in lines[-1]
    assert "Traceback" not in proc.stderr


def test_serve_taken_port_is_one_sentence(run_cli, oh_home):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        proc = run_cli("serve", "--coap-port", port, "--home", oh_home, check=False, timeout=30)
    assert proc.returncode == 8
    assert proc.stderr.strip().splitlines()[-1] == (
        "openheap: error: cannot listen for CoAP on 127.0.0.1:%d: Address already in use" % port)
    assert "Traceback" not in proc.stderr


def test_default_port_falls_back_when_taken(oh_home):
    # 5683 may be taken by anyone; the coordinator then picks a free port.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", 5683))
        except OSError:
            pass  # already taken by someone else: the same situation
        with CoordinatorThread(oh_home) as c:
            assert c.coap_port != 5683


def test_down_with_nothing_running(run_cli, oh_home):
    proc = run_cli("down", "--home", oh_home)
    assert proc.stdout == "no virtual boards were running\nno coordinator was running\n"


@pytest.mark.parametrize("args, match", [
    (["up", "--nodes", "0"], "must be at least 1"),
    (["up", "--wait", "-1"], "must be from 0 to 3600"),
    (["serve", "--coap-port", "70000"], "must be from 0 to 65535"),
    (["serve", "--api-port", "x"], "must be a port number"),
])
def test_usage_errors(run_cli, oh_home, args, match):
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2
    assert match in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_start_boards_uses_fleet_extra_config_when_available():
    """Once Fleet.up takes extra_config, `up` passes the coordinator address through it."""
    from types import SimpleNamespace

    from openheap.cli.grid import start_boards

    class FakeFleet:
        def __init__(self):
            self.calls = []
            self.boards = [SimpleNamespace(name="node01", pid=11, state="running")]

        def ls(self):
            return list(self.boards)

        def up(self, n, board="virtual", fs_size=None, timeout=20.0, extra_config=None):
            self.calls.append((n, board, fs_size, extra_config))
            self.boards = [SimpleNamespace(name="node01", pid=11, state="running"),
                           SimpleNamespace(name="node02", pid=12, state="running")]
            return self.boards

    fleet = FakeFleet()
    boards, restarted = start_boards(fleet, 2, "esp32", None, "127.0.0.1:5683")
    assert fleet.calls == [(2, "esp32", None, {"coordinator": "127.0.0.1:5683"})]
    assert [b.name for b in boards] == ["node01", "node02"]
    assert restarted == ["node02"]  # node01 kept its pid
