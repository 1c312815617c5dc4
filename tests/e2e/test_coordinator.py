"""End to end: the coordinator as a process (``openheap serve``, ``up``, ``nodes``, ``down``).

* a fake node (aiocoap, in this process) registers with ``openheap serve``,
  refreshes, goes silent (unreachable), comes back;
* ``openheap up --nodes 2`` starts a background coordinator and two virtual
  boards running the real firmware, which register by themselves; ``nodes``
  shows them at the addresses ``sim ls`` gives; a killed board becomes
  unreachable while the other keeps refreshing; ``down`` stops everything;
* with the stand-in firmware (which never registers) ``up`` says so in one
  sentence and does not hang.

The tests that need boards to register skip, with the reason, while the
firmware has no registration support (no "coordinator" in firmware/ohnode/).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ohtest import openheap_command, reap, wait_for
from openheap.coordinator.rd import encode_registration
from openheap.coordinator.registry import NodeInfo

REPO = Path(__file__).resolve().parents[2]
NOT_RUNNING = "openheap: error: the coordinator is not running; start it with 'openheap up' or 'openheap serve'"


def firmware_registers() -> bool:
    """Whether the board firmware registers with a coordinator at all."""
    return any("coordinator" in p.read_text() for p in (REPO / "firmware" / "ohnode").glob("*.py"))


needs_registration = pytest.mark.skipif(
    not firmware_registers(),
    reason="the firmware has no coordinator registration yet (no 'coordinator' in firmware/ohnode/*.py), "
    "so virtual boards cannot register")


def _nodes(run_cli, home) -> dict:
    return {n["name"]: n for n in json.loads(run_cli("nodes", "--json", "--home", home).stdout)}


def _sim(run_cli, home) -> dict:
    return {b["name"]: b for b in json.loads(run_cli("sim", "ls", "--json", "--home", home).stdout)}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Serve:
    """``openheap serve`` in the background, with its stderr in a file."""

    def __init__(self, home: Path, *args):
        self.home = home
        self.log = home.parent / "serve.log"
        home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(openheap_command() + ["serve", "--home", str(home), *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "wb"))
        api = home / "coordinator" / "api.json"
        wait_for(lambda: self.proc.poll() is not None or (api.is_file() and "coap_port" in api.read_text()),
                 timeout=20)
        assert self.proc.poll() is None, self.log.read_text()
        self.info = json.loads(api.read_text())
        assert self.info["pid"] == self.proc.pid

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


class FakeNode:
    """A node made of an aiocoap server context on its own UDP port; it sends
    its registrations from that port, like a board."""

    def __init__(self, coordinator_port: int, name="fake01"):
        self.coordinator = coordinator_port
        self.name = name
        self.location = None

    async def __aenter__(self):
        import aiocoap
        import aiocoap.resource

        from openheap.coordinator.service import _local_port, open_coap_server

        self.ctx = await open_coap_server(aiocoap.resource.Site(), "127.0.0.1", 0)
        self.port = _local_port(self.ctx)
        self.aiocoap = aiocoap
        return self

    async def __aexit__(self, *exc):
        await self.ctx.shutdown()

    async def post(self, path, query=(), **info):
        aiocoap = self.aiocoap
        base = dict(name=self.name, board="esp8266", firmware="0.1.0", fs_total=1 << 20, fs_free=900_000,
                    max_share=65536, shares_held=0, heap_total=38000)
        base.update(info)
        msg = aiocoap.Message(code=aiocoap.POST, uri="coap://127.0.0.1:%d/%s" % (self.coordinator, path),
                              payload=encode_registration(NodeInfo(**base)))
        msg.opt.uri_query = tuple(query)
        return await asyncio.wait_for(self.ctx.request(msg).response, 10)

    async def register(self, lifetime: int, **info):
        rsp = await self.post("rd", ("ep=" + self.name, "lt=%d" % lifetime), **info)
        assert rsp.code == self.aiocoap.CREATED, rsp
        self.location = "/".join(rsp.opt.location_path)
        return rsp

    async def refresh(self, **info):
        return await self.post(self.location, **info)


def test_serve_with_a_fake_node(run_cli, oh_home):
    serve = Serve(oh_home, "--coap-port", "0", "--grace", "0.5")
    try:
        coap_port = serve.info["coap_port"]

        async def scenario():
            async with FakeNode(coap_port) as node:
                await node.register(lifetime=2, shares_held=3, zone="kitchen")
                nodes = _nodes(run_cli, oh_home)
                assert list(nodes) == ["fake01"]
                n = nodes["fake01"]
                assert n["address"] == "127.0.0.1:%d" % node.port  # the registration's source
                assert (n["state"], n["board"], n["shares"], n["free"], n["zone"]) == (
                    "registered", "esp8266", 3, 900_000, "kitchen")
                table = run_cli("nodes", "--home", oh_home).stdout
                assert "fake01" in table and "127.0.0.1:%d" % node.port in table and "registered" in table
                # refreshing keeps it registered past its lifetime
                for _ in range(3):
                    await asyncio.sleep(1)
                    rsp = await node.refresh(shares_held=4)
                    assert rsp.code == node.aiocoap.CHANGED
                assert _nodes(run_cli, oh_home)["fake01"]["state"] == "registered"
                # silent past lifetime + grace: unreachable, not gone
                await asyncio.sleep(3)
                n = _nodes(run_cli, oh_home)["fake01"]
                assert n["state"] == "unreachable" and n["shares"] == 4
                # back again with the same registration
                rsp = await node.refresh()
                assert rsp.code == node.aiocoap.CHANGED
                assert _nodes(run_cli, oh_home)["fake01"]["state"] == "registered"
                # an unknown registration id: 4.04, and the node registers again
                node.location = "rd/unknown"
                assert (await node.refresh()).code == node.aiocoap.NOT_FOUND

        asyncio.run(scenario())
        status = json.loads(subprocess.run(
            openheap_command() + ["nodes", "--json", "--home", str(oh_home)], capture_output=True, text=True).stdout)
        assert len(status) == 1
    finally:
        assert serve.stop() == 0
    log = serve.log.read_text()
    assert "node fake01 registered from 127.0.0.1:" in log
    assert "node fake01 is unreachable" in log and "node fake01 is back" in log
    assert "Traceback" not in log
    assert not (oh_home / "coordinator" / "api.json").exists()
    proc = run_cli("nodes", "--home", oh_home, check=False)
    assert proc.returncode == 8 and proc.stderr.strip() == NOT_RUNNING


@needs_registration
def test_up_nodes_down(run_cli, oh_home):
    """The newcomer's path: up --nodes 2 / nodes --json / down / up again."""
    try:
        up = run_cli("up", "--nodes", "2", "--home", oh_home, timeout=90)
        assert "coordinator started (pid" in up.stdout
        assert "2 virtual boards running, 2 registered with the coordinator" in up.stdout, up.stdout + up.stderr
        assert up.stderr == ""
        info = json.loads((oh_home / "coordinator" / "api.json").read_text())
        assert _pid_alive(info["pid"])
        boards = _sim(run_cli, oh_home)
        nodes = _nodes(run_cli, oh_home)
        assert sorted(nodes) == ["node01", "node02"]
        for name, n in nodes.items():
            assert n["state"] == "registered" and n["board"] == "virtual"
            assert n["address"] == "%s:%d" % (boards[name]["host"], boards[name]["port"])
            assert n["free"] > 0 and n["last_seen_ago"] < 30
            cfg = json.loads((oh_home / "sim" / name / "config.json").read_text())
            assert cfg["coordinator"] == "127.0.0.1:%d" % info["coap_port"]
        first_seen = {name: n["first_seen"] for name, n in nodes.items()}

        again = run_cli("up", "--nodes", "2", "--home", oh_home, timeout=90)  # idempotent
        assert "coordinator already running (pid %d)" % info["pid"] in again.stdout
        assert "2 registered" in again.stdout

        down = run_cli("down", "--home", oh_home)
        assert down.stdout.splitlines() == ["node01 stopped", "node02 stopped",
                                            "coordinator (pid %d) stopped" % info["pid"]]
        assert not _pid_alive(info["pid"])
        assert all(b["state"] == "stopped" for b in _sim(run_cli, oh_home).values())
        proc = run_cli("nodes", "--home", oh_home, check=False)
        assert proc.returncode == 8 and proc.stderr.strip() == NOT_RUNNING
        log = (oh_home / "coordinator" / "coordinator.log").read_text()
        assert "node node01 registered from" in log and "Traceback" not in log

        # up again: the same CoAP port and boards; the registry remembers them
        up = run_cli("up", "--nodes", "2", "--home", oh_home, timeout=90)
        assert "2 registered" in up.stdout, up.stdout + up.stderr
        assert json.loads((oh_home / "coordinator" / "api.json").read_text())["coap_port"] == info["coap_port"]
        nodes = _nodes(run_cli, oh_home)
        assert {name: n["first_seen"] for name, n in nodes.items()} == first_seen
    finally:
        run_cli("down", "--home", oh_home, check=False)
        assert not reap(oh_home), "processes left running"


def test_up_with_a_board_definition(run_cli, oh_home):
    """up --board NAME: the virtual boards take that board's definition
    (its heap budget and limits) and register as that board."""
    try:
        run_cli("up", "--nodes", "1", "--board", "esp8266", "--home", oh_home, timeout=90)
        (node,) = _nodes(run_cli, oh_home).values()
        assert node["board"] == "esp8266" and node["state"] == "registered"
        esp = json.loads((oh_home / "sim" / node["name"] / "config.json").read_text())
        assert esp["board"] == "esp8266"
    finally:
        run_cli("down", "--home", oh_home, check=False)
        assert not reap(oh_home), "processes left running"


@needs_registration
def test_killed_board_becomes_unreachable(run_cli, oh_home):
    """Boards keep refreshing within their lifetime; a killed one turns unreachable."""
    serve = Serve(oh_home, "--coap-port", "0", "--grace", "1")
    try:
        run_cli("sim", "up", "--nodes", "2", "--home", oh_home, timeout=90)  # create the boards
        run_cli("sim", "down", "--home", oh_home)
        for name in ("node01", "node02"):  # short registration lifetimes for the test
            path = oh_home / "sim" / name / "config.json"
            cfg = json.loads(path.read_text())
            cfg["reg_lifetime"] = 2
            path.write_text(json.dumps(cfg))
        up = run_cli("up", "--nodes", "2", "--home", oh_home, timeout=90)
        assert "coordinator already running (pid %d)" % serve.proc.pid in up.stdout
        assert "2 registered" in up.stdout, up.stdout + up.stderr
        time.sleep(4)  # twice the lifetime: only refreshes keep them registered
        nodes = _nodes(run_cli, oh_home)
        assert [n["state"] for n in nodes.values()] == ["registered", "registered"]
        assert all(n["lifetime"] == 2 for n in nodes.values())
        run_cli("sim", "kill", "node02", "--home", oh_home)
        wait_for(lambda: _nodes(run_cli, oh_home)["node02"]["state"] == "unreachable", timeout=15, interval=0.5)
        assert _nodes(run_cli, oh_home)["node01"]["state"] == "registered"
        wait_for(lambda: "node node02 is unreachable" in serve.log.read_text(), timeout=5)  # the sweep noted it
        down = run_cli("down", "--home", oh_home)
        assert "coordinator (pid %d) stopped" % serve.proc.pid in down.stdout
        assert serve.proc.wait(15) == 0
    finally:
        serve.stop()
        run_cli("down", "--home", oh_home, check=False)
        assert not reap(oh_home), "processes left running"


def test_up_tolerates_boards_that_do_not_register(run_cli, oh_home, stub_firmware):
    """The stand-in firmware never registers: up warns in one sentence, exits 0, does not hang."""
    try:
        t0 = time.monotonic()
        up = run_cli("up", "--nodes", "2", "--wait", "1.5", "--home", oh_home, timeout=60)
        assert time.monotonic() - t0 < 30
        assert "2 virtual boards running, 0 registered with the coordinator" in up.stdout
        warning = up.stderr.strip().splitlines()
        assert len(warning) == 1
        assert warning[0].startswith("openheap: warning: boards node01, node02 did not register with the "
                                     "coordinator within 1.5 s")
        for name in ("node01", "node02"):
            cfg = json.loads((oh_home / "sim" / name / "config.json").read_text())
            assert cfg["coordinator"].startswith("127.0.0.1:")
        assert _nodes(run_cli, oh_home) == {}
        down = run_cli("down", "--home", oh_home)
        assert down.stdout.splitlines()[:2] == ["node01 stopped", "node02 stopped"]
        assert down.stdout.splitlines()[2].startswith("coordinator (pid ")
    finally:
        run_cli("down", "--home", oh_home, check=False)
        assert not reap(oh_home), "processes left running"


def test_up_fails_cleanly_when_the_coordinator_cannot_start(run_cli, oh_home):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        proc = run_cli("up", "--nodes", "1", "--coap-port", port, "--home", oh_home, check=False, timeout=60)
    assert proc.returncode == 8
    assert proc.stderr.strip() == "openheap: error: cannot listen for CoAP on 127.0.0.1:%d: Address already in use" % port
    assert not (oh_home / "sim").exists() or not any((oh_home / "sim").iterdir())
    assert not reap(oh_home)
