"""The repair scheduler's rate limit: after a repair that sent B bytes it
waits B / repair_rate seconds before the next one (repair_rate 0: no wait).

The registry is real (with a fake clock, as in test_coordinator_upkeep);
the grid is not: the storage engine's check and repair are replaced by
fakes that report known ``bytes_sent``, and the file service by a stub
with the few methods the scheduler calls."""

from __future__ import annotations

import asyncio
import types

import pytest

from openheap.coordinator import upkeep_loop
from openheap.coordinator.registry import REGISTERED, Registry
from openheap.coordinator.upkeep_loop import Upkeep, UpkeepConfig
from openheap.storage.caps import VerifyCap
from openheap.storage.engine import Peer
from openheap.storage.upkeep import CheckResult, RepairResult

from test_coordinator_upkeep import T0, Clock, FakeCoordinator, node  # (the same test doubles)

SI_A, SI_B = bytes(range(16)), bytes(range(16, 32))
SENT = {SI_A: 30_000, SI_B: 50_000}  # bytes each file's repair reports


class _Grid:
    def __init__(self, peers):
        self.clients = {p.name: None for p in peers}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None


class FakeFiles:
    """What Upkeep.repair_file uses of GridFiles."""

    def __init__(self, registry):
        self.registry = registry

    def peers(self, registered_only, names=None):
        return [Peer(nd.name, nd.host, nd.port) for nd in self.registry.nodes(state=REGISTERED)
                if names is None or nd.name in names]

    def grid(self, peers):
        return _Grid(peers)

    def record_check(self, si, res, asked):
        pass

    def record_repair(self, si, res, rep):
        pass


class FakeEngine:
    """engine.check / engine.repair: each file holds shares 0 and 1 of 3,
    and its repair rebuilds share 2 on n4, sending SENT[si] bytes. Every
    repair is logged in ``events`` with the event loop's time."""

    def __init__(self, events):
        self.events = events

    async def check(self, grid, cap):
        return CheckResult(cap.k, cap.n, cap.size, good={0: ["n1"], 1: ["n2"]})

    async def repair(self, grid, cap, checked, peers=None, presumed=None):
        si = cap.storage_index
        self.events.append(("repair", si, asyncio.get_running_loop().time()))
        return RepairResult(rebuilt={2: "n4"}, bytes_sent=SENT[si])


class RecordingAsyncio:
    """Stands for the ``asyncio`` module inside upkeep_loop only: sleep
    records the delay asked for (and returns at once); all else is asyncio."""

    def __init__(self, events):
        self.events = events

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def sleep(self, delay, result=None):
        self.events.append(("sleep", delay))
        await asyncio.sleep(0)
        return result


@pytest.fixture
def grid_state(tmp_path, monkeypatch):
    """Two catalogued files, each with 2 of its 3 shares on n1 and n2: both due."""
    clock = Clock()
    reg = Registry(tmp_path / "grid.db", grace=0, clock=clock)
    for i in range(1, 5):
        reg.register(node("n%d" % i), "127.0.0.1", 5000 + i, 10)
    for name, si in (("a", SI_A), ("b", SI_B)):
        cap = VerifyCap(si, bytes(32), 2, 3, 100_000).to_string()
        reg.add_file(cap, size=100_000, k=2, n=3, happy=3, name=name, si=si)
        for shnum in range(2):
            reg.add_share(si, shnum, "n%d" % (shnum + 1), 50_000, T0 + 1000)
    events = []
    monkeypatch.setattr(upkeep_loop, "engine", FakeEngine(events))
    clock.t += 5

    def make(**config):
        return Upkeep(FakeCoordinator(reg, clock), FakeFiles(reg), UpkeepConfig(repair_grace=100.0, **config))

    yield make, events
    reg.close()


def _names(events):
    return [e[0] for e in events]


def test_each_repair_is_followed_by_a_wait_of_bytes_sent_over_rate(grid_state, monkeypatch):
    make, events = grid_state
    monkeypatch.setattr(upkeep_loop, "asyncio", RecordingAsyncio(events))
    up = make(repair_rate=10_000.0)
    done = asyncio.run(up.repair_once())

    assert [d["bytes_sent"] for d in done] == [SENT[e[1]] for e in events if e[0] == "repair"]
    assert _names(events) == ["repair", "sleep", "repair", "sleep"]
    first, second = events[0][1], events[2][1]
    assert {first, second} == {SI_A, SI_B}
    # the wait after each repair is its own bytes over the rate, before the next repair starts
    assert events[1][1] == pytest.approx(SENT[first] / 10_000.0)
    assert events[3][1] == pytest.approx(SENT[second] / 10_000.0)
    assert up.repair["total_bytes"] == sum(SENT.values()) and up.repair["total_repaired"] == 2


def test_no_wait_without_a_rate(grid_state, monkeypatch):
    make, events = grid_state
    monkeypatch.setattr(upkeep_loop, "asyncio", RecordingAsyncio(events))
    up = make(repair_rate=0.0)
    done = asyncio.run(up.repair_once())

    assert _names(events) == ["repair", "repair"]  # no sleep at all
    assert len(done) == 2 and up.repair["total_bytes"] == sum(SENT.values())


def test_no_wait_after_a_repair_that_sent_nothing(grid_state, monkeypatch):
    make, events = grid_state
    monkeypatch.setattr(upkeep_loop, "asyncio", RecordingAsyncio(events))
    monkeypatch.setitem(SENT, SI_A, 0)
    monkeypatch.setitem(SENT, SI_B, 0)
    asyncio.run(make(repair_rate=10_000.0).repair_once())

    assert _names(events) == ["repair", "repair"]


def test_second_repair_starts_after_the_wait_on_the_loop_clock(grid_state):
    """The real asyncio.sleep: the second repair starts no earlier than the
    first one's bytes over the rate (a lower bound only: no flaky ceiling)."""
    make, events = grid_state
    rate = 200_000.0  # 30 000 / 50 000 bytes: 0.15 / 0.25 s
    asyncio.run(make(repair_rate=rate).repair_once())

    (_, first, t1), (_, second, t2) = events
    assert {first, second} == {SI_A, SI_B}
    assert t2 - t1 >= SENT[first] / rate - 1e-3
