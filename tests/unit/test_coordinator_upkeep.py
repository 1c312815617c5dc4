"""The repair scheduler's decisions (from the registry alone, with a fake
clock), its settings, and the upkeep endpoints of the HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from openheap.coordinator.registry import NodeInfo, Registry
from openheap.coordinator.service import CoordinatorThread
from openheap.coordinator.upkeep_loop import LIVE, LOST, WAITING, Upkeep, UpkeepConfig
from openheap.errors import UsageError

T0 = 1_700_000_000.0
SI = bytes(range(16))
GRACE = 100.0


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


class FakeCoordinator:
    def __init__(self, registry, clock):
        self.registry, self.clock = registry, clock


def node(name):
    return NodeInfo(name=name, board="virtual", firmware="0.1.0", fs_total=4 << 20, fs_free=3 << 20,
                    max_share=1 << 20, shares_held=1, heap_total=65536)


@pytest.fixture
def setup(tmp_path):
    clock = Clock()
    reg = Registry(tmp_path / "grid.db", grace=0, clock=clock)
    for i in range(1, 5):
        reg.register(node("n%d" % i), "127.0.0.1", 5000 + i, 10)
    reg.add_file("oh:r1:fake", size=1000, k=2, n=3, happy=3, name="f", si=SI)
    for shnum in range(3):
        reg.add_share(SI, shnum, "n%d" % (shnum + 1), 500, T0 + 1000)
    up = Upkeep(FakeCoordinator(reg, clock), None, UpkeepConfig(repair_grace=GRACE))
    yield reg, clock, up
    reg.close()


def refresh(reg, clock, names):
    for name in names:
        reg.register(node(name), "127.0.0.1", 5000 + int(name[1:]), 10, now=clock.t)


def test_whole_file_is_neither_due_nor_waiting(setup):
    reg, clock, up = setup
    clock.t += 5
    assert up.classify() == {"n1": LIVE, "n2": LIVE, "n3": LIVE, "n4": LIVE}
    assert up.survey() == ([], [])


def test_unreachable_node_waits_for_the_grace_period_then_is_lost(setup):
    reg, clock, up = setup
    clock.t += 30
    refresh(reg, clock, ["n1", "n2", "n4"])  # n3 went silent at T0, unreachable since T0 + 10
    due, waiting = up.survey()
    assert up.classify()["n3"] == WAITING
    assert due == [] and len(waiting) == 1
    assert waiting[0]["name"] == "f" and waiting[0]["nodes"] == ["n3"]
    assert waiting[0]["due"] == T0 + 10 + GRACE and (waiting[0]["shares"], waiting[0]["live"]) == (3, 2)

    clock.t = T0 + 10 + GRACE + 1
    refresh(reg, clock, ["n1", "n2", "n4"])
    due, waiting = up.survey()
    assert up.classify()["n3"] == LOST
    assert waiting == [] and [d["name"] for d in due] == ["f"] and due[0]["shares"] == 2


def test_files_with_fewest_shares_first_and_stuck_files_skipped(setup):
    reg, clock, up = setup
    other = bytes(16)
    reg.add_file("oh:r1:other", size=1000, k=2, n=3, happy=3, name="g", si=other)
    reg.add_share(other, 0, "n1", 500)  # one share of three: most at risk
    reg.add_share(SI, 2, "n1", 500)
    reg.remove_share(SI, 2, "n3")  # f: shares 0, 1, 2 on n1, n2, n1: 3 shares, happiness 2
    clock.t += 5
    due, _ = up.survey()
    assert [d["name"] for d in due] == ["g", "f"]
    up._stuck[SI] = due[1]["signature"]  # a repair of f could do nothing
    due, _ = up.survey()
    assert [d["name"] for d in due] == ["g"] and [s["name"] for s in up.repair["stuck"]] == ["f"]
    reg.register(node("n5"), "127.0.0.1", 5005, 10, now=clock.t)  # a new node: try again
    assert [d["name"] for d in up.survey()[0]] == ["g", "f"]


def test_config_checks():
    with pytest.raises(UsageError, match="cannot keep 10-second leases alive"):
        UpkeepConfig(lease=10, renew_every=5).validate()
    with pytest.raises(UsageError, match="lease must be"):
        UpkeepConfig(lease=0).validate()
    with pytest.raises(UsageError, match="repair-files"):
        UpkeepConfig(repair_files=0).validate()
    with pytest.raises(UsageError, match="repair-grace"):
        UpkeepConfig(repair_grace=-1).validate()
    assert UpkeepConfig().validate().renew_every == 3600
    assert UpkeepConfig(lease=8).validate().renew_every == 2
    assert UpkeepConfig(lease=8, renew_every=0).validate().renew_every == 0


def _raw(c, method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (c.api_port, path), method=method, data=body)
    req.add_header("Authorization", "Bearer " + c.paths.token.read_text().strip())
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, json.loads(rsp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_upkeep_and_catalog_endpoints(oh_home):
    from openheap.coordinator.service import default_file_service

    with CoordinatorThread(oh_home, coap_port=0) as bare:  # no file service: no upkeep
        assert _raw(bare, "GET", "/v1/upkeep")[0] == 501
    with CoordinatorThread(oh_home, coap_port=0, files=default_file_service,
                           upkeep=UpkeepConfig(lease=3600, repair_grace=60)) as c:
        status, body = _raw(c, "GET", "/v1/upkeep")
        assert status == 200 and body["config"]["lease"] == 3600 and body["config"]["renew_every"] == 900
        assert body["repair"]["runs"] == 0 and body["nodes"] == {"live": [], "waiting": [], "lost": []}
        status, body = _raw(c, "DELETE", "/v1/files")
        assert status == 400 and "?name=" in body["error"]
        status, body = _raw(c, "DELETE", "/v1/files?name=nope")
        assert status == 404 and "no file named 'nope'" in body["error"]
        status, body = _raw(c, "POST", "/v1/catalog", b"[1]")
        assert status == 400 and "POST /v1/catalog" in body["error"]
        status, body = _raw(c, "GET", "/v1/caps/oh:r1:broken")
        assert status == 400 and body["kind"] == "BadCapability"
