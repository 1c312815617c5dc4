"""The coordinator's HTTP API: token, nodes and status JSON, file stubs, FileService plumbing,
and the CLI client's error mapping."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import urllib.error
import urllib.request

import pytest

from openheap.coordinator.api import Download, FileService, PutOptions
from openheap.coordinator.client import CoordinatorClient, remote_error
from openheap.coordinator.errors import AlreadyRunning, CoordinatorNotRunning
from openheap.coordinator.registry import NodeInfo
from openheap.coordinator.service import Coordinator, CoordinatorThread, paths
from openheap.errors import CoapError, OpenheapError, UsageError
from openheap.storage.errors import NotEnoughShares


@pytest.fixture
def coordinator(oh_home):
    with CoordinatorThread(oh_home, coap_port=0) as c:
        yield c


def raw(c: Coordinator, method: str, path: str, token: str | None = None, body: bytes | None = None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (c.api_port, path), method=method, data=body)
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, rsp.headers, rsp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def token_of(c) -> str:
    return c.paths.token.read_text().strip()


def test_files_written_at_start(coordinator, oh_home):
    p = paths(oh_home)
    info = json.loads(p.api.read_text())
    assert info["pid"] == os.getpid()
    assert info["api_port"] == coordinator.api_port and info["api"] == "http://127.0.0.1:%d" % coordinator.api_port
    assert info["coap_port"] == coordinator.coap_port and info["coap"] == "127.0.0.1:%d" % coordinator.coap_port
    assert stat.S_IMODE(p.token.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.dir.stat().st_mode) == 0o700
    assert len(token_of(coordinator)) >= 32
    assert int(p.pid.read_text()) == os.getpid()


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/nodes"), ("GET", "/v1/status"), ("GET", "/v1/files"), ("POST", "/v1/files"),
    ("GET", "/v1/files/oh:l1:x:y"), ("DELETE", "/v1/files/oh:l1:x:y"), ("POST", "/v1/check"),
    ("GET", "/nothing"), ("DELETE", "/v1/nodes/x"),
])
@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_token_required(coordinator, method, path, token):
    status, headers, body = raw(coordinator, method, path, token)
    assert status == 401
    assert headers["Content-Type"].startswith("application/json")
    err = json.loads(body)
    assert "token" in err["error"] and err["exit_code"] == 8


def test_nodes_json(coordinator):
    c = coordinator
    assert raw(c, "GET", "/v1/nodes", token_of(c))[0] == 200
    c.registry.register(NodeInfo("node02", "esp32", "0.1.0", 2 << 20, 1 << 20, 262144, 3, zone="shelf"),
                        "127.0.1.2", 40002, 60)
    c.registry.register(NodeInfo("node01", "virtual", "0.1.0", 4 << 20, 4 << 20, 1 << 20, 0),
                        "127.0.1.1", 40001, 60, now=c.clock() - 3600)
    nodes = CoordinatorClient().nodes()
    assert [n["name"] for n in nodes] == ["node01", "node02"]
    n1, n2 = nodes
    assert n1["state"] == "unreachable" and n2["state"] == "registered"
    assert n2["address"] == "127.0.1.2:40002" and n2["board"] == "esp32" and n2["zone"] == "shelf"
    assert n2["shares"] == 3 and n2["free"] == 1 << 20
    assert n2["last_seen"].endswith("Z") and 0 <= n2["last_seen_ago"] < 5
    assert n1["last_seen_ago"] >= 3600
    assert [n["name"] for n in CoordinatorClient().nodes(state="registered")] == ["node02"]
    with pytest.raises(UsageError, match="node state"):
        CoordinatorClient().nodes(state="bogus")
    assert CoordinatorClient().remove_node("node01") == {"removed": "node01"}
    with pytest.raises(OpenheapError, match="no node named node01") as ei:
        CoordinatorClient().remove_node("node01")
    assert ei.value.http_status == 404


def test_status(coordinator):
    s = CoordinatorClient().status()
    assert s["version"] and s["pid"] == os.getpid()
    assert s["nodes"] == {"registered": 0, "unreachable": 0, "total": 0}
    assert s["coap"] == "127.0.0.1:%d" % coordinator.coap_port
    assert s["uptime"] >= 0 and s["file_service"] is False


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/files"), ("GET", "/v1/files"), ("GET", "/v1/files/oh:l1:x:y"),
    ("DELETE", "/v1/files/oh:l1:x:y"), ("POST", "/v1/check"),
])
def test_file_endpoints_are_501_stubs(coordinator, method, path):
    status, headers, body = raw(coordinator, method, path, token_of(coordinator), b"" if method == "POST" else None)
    assert status == 501
    err = json.loads(body)
    assert "cannot store files yet" in err["error"]


def test_unknown_path_and_method_are_json(coordinator):
    status, _, body = raw(coordinator, "GET", "/v2/x", token_of(coordinator))
    assert status == 404 and "no /v2/x" in json.loads(body)["error"]
    status, _, body = raw(coordinator, "PUT", "/v1/nodes", token_of(coordinator), b"")
    assert status == 405 and "PUT" in json.loads(body)["error"]


class FakeFiles(FileService):
    """A FileService keeping files in memory, to test the HTTP plumbing."""

    def __init__(self):
        self.files = {}
        self.started = self.closed = False
        self.seen_options = None

    async def start(self):
        self.started = True

    async def close(self):
        self.closed = True

    async def put(self, source, options: PutOptions) -> dict:
        self.seen_options = options
        data = b"".join([chunk async for chunk in source])
        cap = "oh:fake:%d" % len(self.files)
        self.files[cap] = data
        return {"cap": cap, "size": len(data)}

    async def get(self, cap: str) -> Download:
        if cap == "oh:lost":
            raise NotEnoughShares(2, 3)
        if cap not in self.files:
            raise UsageError("unknown capability %s" % cap)
        data = self.files[cap]

        async def chunks():
            for i in range(0, len(data), 1000):
                await asyncio.sleep(0)
                yield data[i:i + 1000]

        return Download(len(data), chunks(), {"X-Openheap-Shares": "3"})

    async def list_files(self) -> list[dict]:
        return [{"cap": c, "size": len(d)} for c, d in self.files.items()]

    async def delete(self, cap: str) -> dict:
        del self.files[cap]
        return {"deleted": cap}

    async def check(self, caps, *, verify=False, repair=False) -> dict:
        if caps == ["boom"]:
            raise RuntimeError("unexpected")
        return {"caps": caps, "verify": verify, "repair": repair}


def test_file_service_plumbing(oh_home):
    service = FakeFiles()
    with CoordinatorThread(oh_home, coap_port=0, files=lambda coord: service) as c:
        assert service.started
        client = CoordinatorClient()
        data = os.urandom(150_000)
        # streamed (chunked) upload
        with client.open("POST", "/v1/files", query={"name": "a.bin", "k": 2, "n": 4, "happy": 3, "random_key": 1},
                         body=iter([data[:70_000], data[70_000:]])) as rsp:
            assert rsp.status == 201
            result = json.loads(rsp.read())
        assert result == {"cap": "oh:fake:0", "size": len(data)}
        opts = service.seen_options
        assert (opts.name, opts.k, opts.n, opts.happy, opts.random_key, opts.size) == ("a.bin", 2, 4, 3, True, None)
        # with a length
        with client.open("POST", "/v1/files", body=b"hello") as rsp:
            assert json.loads(rsp.read())["cap"] == "oh:fake:1"
        assert service.seen_options.size == 5 and service.seen_options.name is None
        # download
        with client.open("GET", "/v1/files/oh:fake:0") as rsp:
            assert rsp.headers["Content-Length"] == str(len(data))
            assert rsp.headers["X-Openheap-Shares"] == "3"
            assert rsp.read() == data
        assert len(client.request("GET", "/v1/files")) == 2
        assert client.request("DELETE", "/v1/files/oh:fake:1") == {"deleted": "oh:fake:1"}
        assert client.request("POST", "/v1/check", json_body={"all": True, "verify": True}) == {
            "caps": None, "verify": True, "repair": False}
        # the convenience methods
        assert client.put(iter([b"ab", b"cd"]), name="b", random_key=True) == {"cap": "oh:fake:1", "size": 4}
        assert service.seen_options.random_key and service.seen_options.name == "b"
        assert client.put(b"xyz", size=3, k=3)["cap"] == "oh:fake:2"
        assert service.seen_options.size == 3 and service.seen_options.k == 3
        with client.get(" oh:fake:2 ") as rsp:
            assert rsp.read() == b"xyz"
        assert [f["cap"] for f in client.files()] == ["oh:fake:0", "oh:fake:1", "oh:fake:2"]
        assert client.delete("oh:fake:2") == {"deleted": "oh:fake:2"}
        assert client.check(verify=True)["caps"] is None
        assert client.check(["oh:fake:0"], repair=True) == {"caps": ["oh:fake:0"], "verify": False, "repair": True}
        assert client.request("POST", "/v1/check", json_body={"caps": ["a"], "repair": True})["caps"] == ["a"]
        # errors keep their sentence and exit status
        with pytest.raises(OpenheapError, match="found 2 good shares of this file but 3 are needed") as ei:
            client.open("GET", "/v1/files/oh:lost")
        assert ei.value.http_status == 503 and ei.value.kind == "NotEnoughShares"
        assert ei.value.details == {"found": 2, "needed": 3}
        with pytest.raises(UsageError, match="unknown capability") as ei:
            client.open("GET", "/v1/files/oh:nope")
        assert ei.value.exit_code == 2 and ei.value.http_status == 400
        with pytest.raises(UsageError, match="k must be a whole number from 1 to 256"):
            client.open("POST", "/v1/files", query={"k": 0}, body=b"x")
        with pytest.raises(UsageError, match="random_key must be true or false"):
            client.open("POST", "/v1/files", query={"random_key": "maybe"}, body=b"x")
        with pytest.raises(UsageError, match='"caps"'):
            client.request("POST", "/v1/check", json_body={"verify": True})
        with pytest.raises(OpenheapError, match="the coordinator failed: RuntimeError: unexpected") as ei:
            client.request("POST", "/v1/check", json_body={"caps": ["boom"]})
        assert ei.value.http_status == 500
    assert service.closed


def test_second_coordinator_refused(coordinator, oh_home):
    with pytest.raises(AlreadyRunning, match="already running") as ei:
        asyncio.run(Coordinator(oh_home, coap_port=0).start())
    assert ei.value.pid == os.getpid()
    assert ei.value.exit_code == 8
    # the running one is untouched
    assert json.loads(paths(oh_home).api.read_text())["pid"] == os.getpid()
    assert CoordinatorClient().status()["pid"] == os.getpid()


def test_stop_cleans_up_and_client_says_not_running(oh_home):
    with CoordinatorThread(oh_home, coap_port=0) as c:
        port = c.coap_port
    p = paths(oh_home)
    assert not p.api.exists()
    assert p.pid.read_text() == ""
    with pytest.raises(CoordinatorNotRunning, match="the coordinator is not running; start it with 'openheap up'"):
        CoordinatorClient().nodes()
    # the CoAP port is remembered and reused when free
    with CoordinatorThread(oh_home) as c:
        assert c.coap_port == port


def test_client_stale_api_json(oh_home):
    p = paths(oh_home)
    p.dir.mkdir(parents=True)
    p.token.write_text("x" * 40)
    p.api.write_text(json.dumps({"pid": 999999999, "api_port": 1}))  # dead pid
    with pytest.raises(CoordinatorNotRunning):
        CoordinatorClient().status()
    p.api.write_text(json.dumps({"pid": os.getpid(), "api_port": _closed_port()}))  # alive, nothing listening
    with pytest.raises(CoordinatorNotRunning):
        CoordinatorClient().status()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_changed_token_is_one_sentence(coordinator, oh_home):
    paths(oh_home).token.write_text("y" * 43)
    with pytest.raises(OpenheapError, match="refused this home's API token") as ei:
        CoordinatorClient().status()
    assert ei.value.exit_code == 8


def test_remote_error_mapping():
    e = remote_error(502, json.dumps({"error": "node x answered 5.03", "kind": "ServerError", "exit_code": 6,
                                      "details": {"code": 163}}).encode())
    assert isinstance(e, CoapError) and e.code == 163 and str(e) == "node x answered 5.03" and e.exit_code == 6
    e = remote_error(500, b"<html>oops</html>")
    assert "HTTP 500" in str(e) and e.exit_code == 8
    e = remote_error(400, json.dumps({"error": "bad", "exit_code": 42}).encode())
    assert e.exit_code == 42 and str(e) == "bad"
