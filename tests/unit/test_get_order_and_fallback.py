"""engine.get at its lowest layer: which shares it reads, and what it does
when a node fails mid-read.

The shares are real (engine.put of a 3-segment file, k=3 of n=6, onto fake
nodes that keep what they are sent); fake nodes then serve them in place of
NodeClient, with exactly the methods locate / get call (share_set,
read_range), and log every read."""

from __future__ import annotations

import asyncio
import io
import os

import pytest

from openheap.errors import NodeUnreachable
from openheap.storage import engine
from openheap.storage.engine import FAST_STEP, Grid, Peer
from openheap.storage.layout import MAX_SEGSIZE, Params, segment_range, share_length

K, N = 3, 6
SIZE = 2 * MAX_SEGSIZE + 12_345  # three segments, the last one short
SLOW = 0.2  # seconds the slow nodes take to say which shares they hold (8 FAST_STEPs)


class _Node:
    """A node holding whole shares in memory: ``{si: {shnum: bytes}}``."""

    def __init__(self, name, store=None, *, slow=0.0, fail_on_read=None):
        self.name = name
        self.store = store if store is not None else {}
        self.slow = slow
        self.fail_on_read = fail_on_read  # 1-based read_range call that raises NodeUnreachable
        self.reads: list[tuple[int, int, int]] = []  # (shnum, offset, length) asked

    # what put uses
    async def share_set(self, si):
        if self.slow:
            await asyncio.sleep(self.slow)
        return {s: len(b) for s, b in self.store.get(bytes(si), {}).items()}

    async def put_share_stream(self, si, shnum, chunks, size):
        data = b"".join([c async for c in chunks])
        assert len(data) == size
        self.store.setdefault(bytes(si), {})[shnum] = data
        return 0x41

    async def delete_share(self, si, shnum=None):
        raise AssertionError("nothing is deleted in these tests")

    # what get uses besides share_set
    async def read_range(self, si, shnum, offset, length, upto=None):
        self.reads.append((shnum, offset, length))
        if len(self.reads) == self.fail_on_read:
            raise NodeUnreachable(self.name)
        return self.store[bytes(si)][shnum][offset:offset + length]


def _grid(nodes):
    grid = Grid([Peer(nd.name, "127.0.0.1", 5683 + i) for i, nd in enumerate(nodes)])
    grid.clients = {nd.name: nd for nd in nodes}  # never entered: no sockets
    return grid


@pytest.fixture(scope="module")
def stored():
    """``(cap, data, {shnum: node name}, {node name: its store})`` of a file put for real."""
    data = os.urandom(SIZE)
    nodes = [_Node("n%d" % i) for i in range(N)]
    res = asyncio.run(engine.put(_grid(nodes), io.BytesIO(data), SIZE, k=K, n=N, happy=N))
    assert sorted(res.placed) == list(range(N)) and not res.failed
    assert Params(K, N, SIZE).num_segments == 3
    slen = share_length(Params(K, N, SIZE))
    assert all(len(b) == slen for nd in nodes for shares in nd.store.values() for b in shares.values())
    return res.cap, data, dict(res.placed), {nd.name: nd.store for nd in nodes}


def _get(nodes, cap):
    out = io.BytesIO()
    res = asyncio.run(asyncio.wait_for(engine.get(_grid(nodes), cap, out), 10))
    return out.getvalue(), res


def test_stored_shares_read_back_whole(stored):
    cap, data, placed, stores = stored
    nodes = [_Node(name, store) for name, store in stores.items()]
    got, res = _get(nodes, cap)
    assert got == data
    # all equally fast: the systematic shares (< k) are read, nothing else
    assert res.served == {s: placed[s] for s in range(K)} and res.failed == [] and res.corrupt == []
    assert all(nd.reads == [] for nd in nodes if nd.name not in {placed[s] for s in range(K)})


def test_reads_k_shares_from_the_fastest_answering_nodes(stored):
    """The holders of shares 0, 1, 2 answer locate 8 FAST_STEPs late: get
    reads shares 3, 4, 5 from the quick ones and never asks the slow ones."""
    cap, data, placed, stores = stored
    assert SLOW >= 4 * FAST_STEP
    slow_names = {placed[s] for s in range(K)}
    nodes = [_Node(name, store, slow=SLOW if name in slow_names else 0.0) for name, store in stores.items()]
    got, res = _get(nodes, cap)

    assert got == data
    assert res.served == {s: placed[s] for s in range(K, N)}
    assert not set(res.served.values()) & slow_names
    assert [nd.name for nd in nodes if nd.reads] == [nd.name for nd in nodes if nd.name not in slow_names]
    assert all(nd.reads == [] for nd in nodes if nd.name in slow_names)
    assert res.failed == [] and res.corrupt == []


@pytest.mark.parametrize("fail_on_read, where", [
    (2, "its trailer (while admitted)"),
    (3, "block 0"),
    (4, "block 1"),
    (5, "block 2 (the last, short one)"),
])
def test_a_node_failing_mid_read_is_replaced_by_another_share(stored, fail_on_read, where):
    """The node holding share 1 (among the first chosen) becomes unreachable
    at its n-th read (1: header, 2: trailer, 3..5: the blocks of segments
    0..2): get reads another share instead and returns the same bytes."""
    cap, data, placed, stores = stored
    bad = placed[1]
    nodes = [_Node(name, store, fail_on_read=fail_on_read if name == bad else None)
             for name, store in stores.items()]
    got, res = _get(nodes, cap)

    assert got == data
    assert [(nd, s) for nd, s, _ in res.failed] == [(bad, 1)]
    assert bad in res.failed[0][2]  # the error names the node
    assert res.corrupt == []
    assert len(res.served) == K and bad not in res.served.values() and 1 not in res.served
    assert set(res.served) == {0, 2, K}  # the next candidate: the first share >= k
    failing = next(nd for nd in nodes if nd.name == bad)
    assert len(failing.reads) == fail_on_read  # nothing more asked of it after the failure
    if fail_on_read >= 3:
        p = Params(K, N, SIZE)
        assert failing.reads[-1][1:] == segment_range(p, fail_on_read - 3)  # it failed on a block


def test_a_share_held_twice_is_read_from_its_other_node_when_one_fails(stored):
    """Only shares 0, 1, 2 are left, share 1 on two nodes (a repair put it
    elsewhere while its first node was away): its fastest holder fails at
    its first block, and get reads share 1 from the other copy."""
    cap, data, placed, stores = stored
    keep = {placed[0], placed[1], placed[2]}
    nodes = [_Node(name, store, fail_on_read=3 if name == placed[1] else None)
             for name, store in stores.items() if name in keep]
    si = cap.storage_index
    copy = _Node("copy", {bytes(si): {1: stores[placed[1]][bytes(si)][1]}}, slow=SLOW)
    got, res = _get(nodes + [copy], cap)

    assert got == data
    assert [(nd, s) for nd, s, _ in res.failed] == [(placed[1], 1)]
    assert res.served == {0: placed[0], 1: "copy", 2: placed[2]}
    assert copy.reads  # the slower copy is read only after the first one failed


def test_not_enough_shares_counts_a_share_with_a_good_copy_as_good(stored):
    """Shares 0 and 1 left, share 1 on two nodes of which one fails: 2 good
    shares found (not 1), 3 needed."""
    from openheap.storage.errors import NotEnoughShares

    cap, data, placed, stores = stored
    si = bytes(cap.storage_index)
    nodes = [_Node(placed[0], stores[placed[0]]), _Node(placed[1], stores[placed[1]], fail_on_read=1),
             _Node("copy", {si: {1: stores[placed[1]][si][1]}})]
    with pytest.raises(NotEnoughShares) as e:
        _get(nodes, cap)
    assert (e.value.found, e.value.needed) == (2, K)
