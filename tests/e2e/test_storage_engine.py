"""The storage engine (openheap.storage.engine) against real virtual boards:
encrypted, erasure-coded files put in one streaming pass and read back from
any k shares, with corrupt and missing shares detected and worked around.
"""

from __future__ import annotations

import asyncio
import io
import os

import pytest

from openheap.storage import engine
from openheap.storage.caps import LiteralCap, ReadCap
from openheap.storage.errors import BadCapability, NotEnoughShares, NotHappy
from openheap.storage.layout import HEADER_SIZE, Params, share_length, trailer_offset

SECRET = b"s" * 32


def _peers(boards):
    return [engine.Peer(b.name, b.host, b.port) for b in boards]


def _put(boards, data, **kw):
    async def go():
        async with engine.Grid(_peers(boards), timeout=5) as g:
            return await engine.put(g, io.BytesIO(data), len(data), **kw)

    return asyncio.run(go())


def _get(boards, cap):
    async def go():
        out = io.BytesIO()
        async with engine.Grid(_peers(boards), timeout=3) as g:
            res = await engine.get(g, cap, out)
        return out.getvalue(), res

    return asyncio.run(go())


@pytest.mark.nodes(5)
def test_put_get_any_k_of_n(fleet, boards):
    data = os.urandom(300 * 1000)
    res = _put(boards, data, k=3, n=5, happy=4, secret=SECRET)
    assert isinstance(res.cap, ReadCap)
    assert sorted(res.placed) == [0, 1, 2, 3, 4] and len(set(res.placed.values())) == 5
    assert res.bytes_sent == 5 * share_length(Params(3, 5, len(data)))
    back, got = _get(boards, res.cap)
    assert back == data and len(got.served) == 3 and not got.corrupt
    with pytest.raises(BadCapability, match="verify-cap"):  # it cannot decrypt
        _get(boards, res.cap.verify_cap())
    # any 2 boards down: the other 3 still hold 3 distinct shares
    down = [b for b in boards if b.name in (res.placed[0], res.placed[3])]
    for b in down:
        fleet.kill(b.name)
    back, got = _get(boards, res.cap)
    assert back == data
    assert not {res.placed[0], res.placed[3]} & set(got.served.values())
    # a third one down: 2 shares left, 3 needed
    third = next(b for b in boards if b.name == res.placed[1])
    fleet.kill(third.name)
    with pytest.raises(NotEnoughShares) as e:
        _get(boards, res.cap)
    assert (e.value.found, e.value.needed) == (2, 3)
    assert "found 2 good shares" in str(e.value) and "3 are needed" in str(e.value)


@pytest.mark.nodes(4)
def test_convergent_second_put_sends_nothing(boards):
    data = os.urandom(100 * 1000)
    first = _put(boards, data, k=2, n=4, happy=3, secret=SECRET)
    again = _put(boards, data, k=2, n=4, happy=3, secret=SECRET)
    assert again.cap.to_string() == first.cap.to_string()
    assert again.bytes_sent == 0 and not again.placed and len(again.existing) == 4
    other = _put(boards, data, k=2, n=4, happy=3, secret=None)  # random key: a new copy
    assert other.cap.storage_index != first.cap.storage_index and other.bytes_sent > 0
    assert _get(boards, other.cap)[0] == data == _get(boards, first.cap)[0]
    # unlinkable: another key, and no 16 bytes of its blocks (the
    # ciphertext, between header and trailer of the hash trees and the
    # file's parameters) in common with the first copy's
    assert other.cap.key != first.cap.key
    p = Params(2, 4, len(data))
    for shnum in range(4):
        a, b = _share(boards, first, shnum), _share(boards, other, shnum)
        assert len(a) == len(b) == share_length(p)
        a, b = a[HEADER_SIZE:trailer_offset(p)], b[HEADER_SIZE:trailer_offset(p)]
        assert not {a[i:i + 16] for i in range(0, len(a) - 16, 16)} & {b[i:i + 16] for i in range(0, len(b) - 16)}


def _share(boards, res, shnum):
    from openheap.node import NodeClient

    b = next(b for b in boards if b.name == ({**res.placed, **res.existing})[shnum])

    async def go():
        async with NodeClient(b.host, b.port, timeout=5) as c:
            return await c.read_range(res.cap.storage_index, shnum, 0,
                                      share_length(Params(res.cap.k, res.cap.n, res.cap.size)))

    return asyncio.run(go())


@pytest.mark.nodes(3)
def test_small_files_and_edges(boards):
    tiny = b"hello grid"
    res = _put(boards, tiny, k=2, n=3, happy=2, secret=SECRET)
    assert isinstance(res.cap, LiteralCap) and res.bytes_sent == 0
    assert _get(boards, res.cap)[0] == tiny
    for size in (56, 131072 * 2, 131072 * 2 + 1):
        data = os.urandom(size)
        res = _put(boards, data, k=2, n=3, happy=2, secret=SECRET)
        assert _get(boards, res.cap)[0] == data, size


@pytest.mark.nodes(2)
def test_not_happy_leaves_nothing_behind(boards):
    data = os.urandom(20000)
    with pytest.raises(NotHappy) as e:
        _put(boards, data, k=2, n=4, happy=3, secret=SECRET)
    assert "happiness 3" in str(e.value)

    async def count():
        async with engine.Grid(_peers(boards)) as g:
            return [len((await c.list_shares())[3]) for c in g.clients.values()]

    assert asyncio.run(count()) == [0, 0]


@pytest.mark.nodes(4)
def test_corrupt_share_is_detected_and_worked_around(fleet, boards):
    from ohtest import flip_byte_in_image

    from openheap.node import si_text
    from openheap.storage.layout import HEADER_SIZE

    data = os.urandom(200 * 1000)
    res = _put(boards, data, k=2, n=4, happy=3, secret=SECRET)
    victim = next(b for b in boards if b.name == res.placed[0])
    fleet.down([victim.name])
    flip_byte_in_image(victim.image, "/s/%s/0" % si_text(res.cap.storage_index), HEADER_SIZE + 1000)
    boards = fleet.up(4)
    back, got = _get(boards, res.cap)
    assert back == data, "the right bytes come back from the other shares"
    assert (victim.name, 0) in [(node, shnum) for node, shnum, _ in got.corrupt]
    assert 0 not in got.served


@pytest.mark.nodes(4)
def test_put_moves_a_failed_share_to_a_spare_node(boards):
    # Four live boards and three addresses where nothing listens (ICMP port
    # unreachable): a put of 4 shares whose plan names a dead address sends
    # that share again to a live board that holds nothing of the file yet.
    # (Three: the re-sends try spares in placement order, engine.RESEND_ROUNDS
    # of them, and may meet every other dead address first.)
    from openheap.storage import crypto
    from openheap.storage.placement import Node, place

    dead = [engine.Peer("dead%d" % i, "127.0.1.%d" % (240 + i), 9) for i in range(engine.RESEND_ROUNDS)]
    peers = _peers(boards) + dead
    nodes = [Node(p.name, p.free, p.max_share, p.zone) for p in peers]
    for _ in range(200):  # a file whose first plan uses a dead address
        data = os.urandom(20 * 1000)
        params = Params(2, 4, len(data))
        key = engine._file_key(io.BytesIO(data), params, SECRET)
        plan = place(crypto.storage_index(key), nodes, 4, 4, 2, share_length(params))
        if set(plan.values()) & {d.name for d in dead}:
            break

    async def go():
        async with engine.Grid(peers, timeout=5) as g:
            return await engine.put(g, io.BytesIO(data), len(data), k=2, n=4, happy=4, secret=SECRET)

    res = asyncio.run(go())
    assert sorted(res.placed) == [0, 1, 2, 3] and not res.failed
    assert set(res.placed.values()) == {b.name for b in boards}
    back, _ = _get(boards, res.cap)
    assert back == data
