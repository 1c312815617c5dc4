"""engine.put when nodes fail mid-upload: the failed shares go again to
nodes that hold nothing of the file yet, and when happiness still fails, put
raises NotHappy naming the failures and deletes every share it had stored
(the ``check_happy`` ... ``await _remove(grid, si, result.placed)`` branch
at the end of put).

The nodes are fakes at the lowest layer put reaches, in place of
NodeClient: ``share_set`` (locate), ``put_share_stream`` (the uploads) and
``delete_share`` (the cleanup).
"""

from __future__ import annotations

import asyncio
import io
import os

import pytest

from openheap.errors import NodeUnreachable, from_code
from openheap.storage import engine
from openheap.storage.errors import NotHappy
from openheap.storage.layout import HEADER_SIZE, Params, share_length

K, N, HAPPY = 3, 10, 7
SECRET = b"c" * 32
NO_SPACE = 0x8D  # 4.13 Request Entity Too Large


class _Node:
    """One node. ``room`` shares fit on it; past that it refuses an upload
    after its header (no space left). A ``dead`` node stops answering after
    the header of every upload. Only complete uploads are stored."""

    def __init__(self, name: str, *, room: int = 1, dead: bool = False):
        self.name, self.room, self.dead = name, room, dead
        self.stored: dict[tuple[bytes, int], bytes] = {}
        self.ever_stored: list[tuple[bytes, int]] = []
        self.sizes: list[int] = []
        self.tried: list[int] = []
        self.deleted: list[tuple[bytes, int | None]] = []

    async def share_set(self, si, query=()):
        return {s: len(b) for (i, s), b in self.stored.items() if i == si}

    async def put_share_stream(self, si, shnum, chunks, size):
        self.tried.append(shnum)
        got = b""
        async for c in chunks:
            got += c
            if len(got) > HEADER_SIZE:  # mid-upload: past the header, in the blocks
                if self.dead:
                    raise NodeUnreachable(self.name, "no answer in 10 s")
                if len(self.stored) >= self.room:
                    raise from_code(NO_SPACE, "no space left for share %d" % shnum)
            await asyncio.sleep(0)
        assert len(got) == size
        self.stored[(si, shnum)] = got
        self.ever_stored.append((si, shnum))
        self.sizes.append(size)
        return 0x41  # 2.01

    async def delete_share(self, si, shnum=None):
        self.deleted.append((si, shnum))
        for key in [key for key in self.stored if key[0] == si and shnum in (None, key[1])]:
            del self.stored[key]


def _grid(nodes):
    grid = engine.Grid([engine.Peer(nm, "192.0.2.1", 5683 + i) for i, nm in enumerate(nodes)])
    grid.clients = nodes  # no __aenter__: no NodeClient, no sockets
    return grid


def test_put_unhappy_after_the_uploads_removes_every_share_it_stored():
    # 10 nodes for 3-of-10, happy 7: 4 die mid-upload, 6 live, and no node
    # is left that holds nothing of the file: no resend to a live node (a
    # second share there adds no happiness); the dead ones' silence may be
    # passing, so their shares go to them once more, and fail again. 6
    # shares stored, happiness 6 < 7.
    dead = [_Node("dead%d" % i, dead=True) for i in range(4)]
    live = [_Node("live%d" % i, room=2) for i in range(6)]
    nodes = {nd.name: nd for nd in dead + live}
    data = os.urandom(20 * 1000)
    slen = share_length(Params(K, N, len(data)))

    async def go():
        return await asyncio.wait_for(
            engine.put(_grid(nodes), io.BytesIO(data), len(data), k=K, n=N, happy=HAPPY, secret=SECRET), 30)

    with pytest.raises(NotHappy) as e:
        asyncio.run(go())

    assert all(len(nd.tried) == 1 for nd in live), {nd.name: nd.tried for nd in live}
    assert all(len(nd.tried) == 2 and nd.tried[0] == nd.tried[1] for nd in dead), {nd.name: nd.tried for nd in dead}
    stored = [(nd.name, si, s) for nd in nodes.values() for si, s in nd.ever_stored]
    assert len(stored) == 6 and all(len(nd.ever_stored) == 1 for nd in live), stored
    assert all(size == slen for nd in nodes.values() for size in nd.sizes)
    stored_shnums = {s for _, _, s in stored}
    failed_shnums = set(range(N)) - stored_shnums

    # NotHappy says why: the happiness reached and needed, and the failure
    # of every share that never got stored
    assert (e.value.happiness, e.value.needed) == (6, HAPPY)
    msg = str(e.value)
    assert "only 6 distinct nodes" in msg and "happiness 7" in msg, msg
    for s in failed_shnums:
        assert "share %d: dead" % s in msg and "did not answer" in msg and "; again: dead" in msg, msg
    for s in stored_shnums:
        assert "share %d:" % s not in msg, msg

    # The cleanup: every stored share deleted, one DELETE of exactly that
    # share on exactly its node, nothing deleted that was never stored.
    for nd in nodes.values():
        assert sorted(nd.deleted) == sorted(nd.ever_stored), (nd.name, nd.deleted, nd.ever_stored)
        assert nd.stored == {}, (nd.name, list(nd.stored))


def test_failed_shares_go_again_to_nodes_holding_nothing_yet():
    # 12 nodes, 4 of them dying mid-upload: the first pass uses 10; the
    # shares whose node died go again, one to each node that holds nothing
    # of the file yet, until every live node holds one: 8 on 8, happy.
    dead = [_Node("dead%d" % i, dead=True) for i in range(4)]
    live = [_Node("live%d" % i, room=2) for i in range(8)]
    nodes = {nd.name: nd for nd in dead + live}
    data = os.urandom(20 * 1000)

    async def go():
        return await asyncio.wait_for(
            engine.put(_grid(nodes), io.BytesIO(data), len(data), k=K, n=N, happy=HAPPY, secret=SECRET), 30)

    res = asyncio.run(go())
    assert all(len(nd.stored) == 1 for nd in live), {nd.name: list(nd.stored) for nd in live}
    assert sorted(res.placed.values()) == sorted(nd.name for nd in live)
    assert len(res.failed) == 2 and all("dead" in why for why in res.failed.values())
    assert all(len(nd.tried) <= 1 for nd in dead)  # a node that failed is not tried again
    assert not any(nd.deleted for nd in nodes.values())


def test_a_share_failed_for_a_passing_reason_goes_to_its_node_once_more():
    # 5 nodes, 3-of-5, happy 5 (a small grid): one node answers 5.03 "out
    # of memory" to its first upload, then takes the share. No other node
    # is free, so the share goes to the same node again, and the put is happy.
    class _Flaky(_Node):
        async def put_share_stream(self, si, shnum, chunks, size):
            if not self.tried:
                self.tried.append(shnum)
                async for c in chunks:
                    if len(c) > 0:
                        raise from_code(0xA3, "out of memory")
            return await super().put_share_stream(si, shnum, chunks, size)

    flaky = _Flaky("flaky")
    full = _Node("full", room=0)  # refuses for good: no space, no second try
    others = [_Node("ok%d" % i) for i in range(3)]
    nodes = {nd.name: nd for nd in [flaky, full] + others}
    data = os.urandom(20 * 1000)

    async def go(happy):
        return await asyncio.wait_for(
            engine.put(_grid(nodes), io.BytesIO(data), len(data), k=3, n=5, happy=happy, secret=SECRET), 30)

    res = asyncio.run(go(4))
    assert len(flaky.tried) == 2 and flaky.tried[0] == flaky.tried[1] and len(flaky.stored) == 1
    assert len(full.tried) == 1 and not full.stored  # "no space" is not tried again
    assert sorted(res.placed.values()) == sorted(["flaky", "ok0", "ok1", "ok2"])
    assert list(res.failed) == [full.tried[0]] and "no space" in res.failed[full.tried[0]]
