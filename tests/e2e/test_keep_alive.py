"""Keeping files alive (issue 3), against virtual boards running the real firmware:

* lease renewal: with a 6-second lease, the shares of a catalogued file
  survive many leases because the coordinator renews them, while the shares
  of a file dropped from the catalog disappear from the boards by themselves;
* the repair scheduler: a killed board causes no repair while it is within
  the grace period; after it, the damaged files are rebuilt onto other
  boards, back to n shares on n distinct boards, one file per run when the
  limit is one file per run; its actions show in ``GET /v1/upkeep``.

The coordinator runs in this process (``CoordinatorThread``) with short
times; the boards register with it and sweep expired leases every second.
"""

from __future__ import annotations

import asyncio
import io
import os
import time

import pytest

from ohtest import wait_for
from openheap.coordinator.api import PutOptions
from openheap.coordinator.service import CoordinatorThread, default_file_service
from openheap.coordinator.upkeep_loop import UpkeepConfig
from openheap.errors import CoapError
from openheap.node import NodeClient
from openheap.storage import engine
from openheap.storage.caps import parse_cap
from openheap.storage.leases import read_lease

REG_LIFETIME = 2  # seconds: boards refresh every second, and are unreachable 3 s after they stop


def _board_config(coordinator) -> dict:
    return {"coordinator": "127.0.0.1:%d" % coordinator.coap_port, "reg_lifetime": REG_LIFETIME,
            "lease_check": 1, "ack_timeout_ms": 500}


def _start(fleet, thread, n):
    c = thread.coordinator
    boards = fleet.up(n, extra_config=_board_config(c))
    names = {b.name for b in boards}
    wait_for(lambda: names <= {nd.name for nd in c.registry.nodes(state="registered")}, timeout=30)
    return boards


def _put(thread, data: bytes, name: str, **kw) -> str:
    async def source():
        yield data

    res = thread.call(thread.coordinator.files.put(source(), PutOptions(name=name, size=len(data), **kw)), timeout=120)
    return res["cap"]


def _held(boards, cap) -> dict[str, dict[int, int]]:
    """{board: {shnum: size}} of the boards holding shares of ``cap`` (asked directly)."""
    si = parse_cap(cap).storage_index

    async def one(b):
        async with NodeClient(b.host, b.port, timeout=3) as nc:
            try:
                return b.name, await nc.share_set(si)
            except CoapError:
                return b.name, {}

    async def go():
        return dict(await asyncio.gather(*(one(b) for b in boards)))

    return {nm: got for nm, got in asyncio.run(go()).items() if got}


def _get(c, cap) -> bytes:
    """The file's bytes, read straight from the registered boards."""
    out = io.BytesIO()

    async def go():
        async with engine.Grid(c.files.peers(True)) as grid:
            await engine.get(grid, parse_cap(cap), out)

    asyncio.run(go())
    return out.getvalue()


def _status(thread) -> dict:
    """The upkeep status, read on the coordinator's own loop."""

    async def read():
        return thread.coordinator.upkeep.status()

    return thread.call(read())


def _lease_on(board, cap):
    async def go():
        async with NodeClient(board.host, board.port, timeout=3) as nc:
            return await read_lease(nc, parse_cap(cap).storage_index)

    return asyncio.run(go())


@pytest.fixture
def start_coordinator(oh_home):
    """``start_coordinator(**UpkeepConfig fields)``: a coordinator in this process, stopped at the end."""
    threads = []

    def start(**upkeep):
        thread = CoordinatorThread(oh_home, coap_port=0, grace=1, files=default_file_service,
                                   upkeep=UpkeepConfig(**upkeep))
        thread.start()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.stop()


def test_leases_are_renewed_and_unrenewed_shares_expire(fleet, start_coordinator):
    coordinator = start_coordinator(lease=6, renew_every=1, repair_every=0)
    c = coordinator.coordinator
    boards = _start(fleet, coordinator, 3)
    kept_data, dropped_data = os.urandom(40_000), os.urandom(30_000)
    kept = _put(coordinator, kept_data, "kept", k=2, n=3, happy=3)
    dropped = _put(coordinator, dropped_data, "dropped", k=2, n=3, happy=3)
    assert len(_held(boards, kept)) == 3 and len(_held(boards, dropped)) == 3
    first = _lease_on(boards[0], kept)
    assert first.expires is not None and first.now is not None
    assert first.expires - first.now <= 6, "a put gets the coordinator's lease as the boards' default"

    assert c.registry.remove_file("dropped")  # out of the catalog: nobody renews it any more
    t0 = time.monotonic()
    wait_for(lambda: not _held(boards, dropped), timeout=20, interval=0.5)
    assert time.monotonic() - t0 < 15
    while time.monotonic() - t0 < 14:  # more than two leases
        assert len(_held(boards, kept)) == 3, "a renewed lease must not run out"
        time.sleep(1)

    later = _lease_on(boards[0], kept)
    assert later.now - first.now >= 12 and later.expires > later.now
    now = c.clock()
    recs = c.registry.shares(parse_cap(kept).storage_index)
    assert len(recs) == 3 and all(r.lease_expiry > now for r in recs), recs
    status = _status(coordinator)
    assert status["leases"]["total_renewed"] >= 6 and status["leases"]["runs"] >= 10
    assert status["leases"]["failed"] == 0

    assert _get(c, kept) == kept_data


GRACE = 6.0
EVERY = 2.5


def test_repair_waits_for_the_grace_period_then_repairs_one_file_per_run(fleet, start_coordinator):
    coordinator = start_coordinator(repair_grace=GRACE, repair_every=EVERY, repair_files=1)
    c = coordinator.coordinator
    boards = _start(fleet, coordinator, 5)
    data = {name: os.urandom(size) for name, size in (("a", 60_000), ("b", 50_000), ("c", 70_000))}
    caps = {name: _put(coordinator, d, name, k=2, n=5, happy=5) for name, d in data.items()}
    for cap in caps.values():
        assert len(_held(boards, cap)) == 5  # one share on every board
    boards = _start(fleet, coordinator, 7)  # two empty boards join
    spares = boards[5:]
    victim = boards[2].name

    fleet.kill(victim)
    killed = time.monotonic()
    wait_for(lambda: _status(coordinator)["nodes"]["waiting"] == [victim], timeout=15, interval=0.2)
    # within the grace period: the files wait, nothing is sent anywhere
    while victim not in _status(coordinator)["nodes"]["lost"]:
        st = _status(coordinator)
        assert not st["repair"]["history"], "no repair within the grace period"
        assert all(not _held(spares, cap) for cap in caps.values())
        if st["repair"]["runs"] and st["nodes"]["waiting"]:
            assert {w["name"] for w in st["repair"]["waiting"]} <= set(caps)
        assert time.monotonic() - killed < 30
        time.sleep(0.5)
    seen_waiting = [w["name"] for w in _status(coordinator)["repair"]["waiting"]]
    assert time.monotonic() - killed >= GRACE

    # after it: one file per run until all three are whole again
    wait_for(lambda: len(_status(coordinator)["repair"]["history"]) >= 3, timeout=6 * EVERY + 30, interval=0.5)
    st = _status(coordinator)
    history = st["repair"]["history"]
    assert sorted(r["name"] for r in history) == ["a", "b", "c"], history
    assert all(len(r["rebuilt"]) == 1 and r["error"] is None and r["healthy"] for r in history), history
    assert all(set(r["rebuilt"].values()) <= {b.name for b in spares} for r in history)
    times = sorted(time.mktime(time.strptime(r["at"], "%Y-%m-%dT%H:%M:%SZ")) for r in history)
    assert all(b - a >= EVERY - 1.01 for a, b in zip(times, times[1:])), "one file per run: %s" % times
    assert st["repair"]["total_repaired"] == 3 and not st["repair"]["queued"]
    assert seen_waiting == [] or set(seen_waiting) <= set(caps)

    live = [b for b in boards if b.name != victim]
    for name, cap in caps.items():
        held = _held(live, cap)
        assert len(held) == 5 and sorted(s for d in held.values() for s in d) == [0, 1, 2, 3, 4], (name, held)
        recs = {(r.shnum, r.node) for r in c.registry.shares(parse_cap(cap).storage_index)}
        assert victim not in {nd for _, nd in recs}, "records of the lost copies are dropped"
        assert len(recs) == 5

    for name, cap in caps.items():
        assert _get(c, cap) == data[name]
