"""The bulk channel (openheap.bulk) against the real firmware on a virtual board.

Runs of Block1 blocks really go unanswered but for one 2.31 per run, runs of
Block2 blocks really need one request per run, a lost block in the middle of
a run is sent again from where the node says, heavy loss both ways slows a
transfer but loses nothing, and the codec agrees with aiocoap's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from aiocoap import NON as NON_TYPE
from aiocoap import Message

from lossy_relay import LossyRelay
from ohproto import const as P
from openheap import bulk
from openheap.errors import CoapError, NodeUnreachable
from openheap.node import NodeClient, si_text


def test_codec_agrees_with_aiocoap():
    opts = [(P.OPT_URI_PATH, b"s"), (P.OPT_URI_PATH, b"A" * 22), (P.OPT_URI_PATH, b"3"),
            (P.OPT_URI_QUERY, b"b=8"), (P.OPT_BLOCK2, bulk.block_opt(300, False, 6)),
            (P.OPT_SIZE1, bulk.uint_opt(70000)), (P.OPT_NO_RESPONSE, b"\x02")]
    data = bulk.encode(bulk.NON, P.GET, 0x1234, b"\x07\x08", opts, b"payload")
    m = Message.decode(data)
    assert (int(m.code), m.mid, m.token, m.payload) == (P.GET, 0x1234, b"\x07\x08", b"payload")
    assert m.opt.uri_path == ("s", "A" * 22, "3") and m.opt.uri_query == ("b=8",)
    assert (m.opt.block2.block_number, m.opt.block2.more, m.opt.block2.size_exponent) == (300, False, 6)
    assert m.opt.size1 == 70000 and m.opt.no_response == 2
    # and back: aiocoap's encoding parsed by ours
    out = Message(code=P.GET, payload=b"payload")
    out.mid, out.token, out.mtype = 0x1234, b"\x07\x08", NON_TYPE
    out.opt.uri_path, out.opt.uri_query = ("s", "A" * 22, "3"), ("b=8",)
    out.opt.block2 = m.opt.block2
    out.opt.size1, out.opt.no_response = 70000, 2
    r = bulk.Response(out.encode())
    assert (r.code, r.mid, bytes(r.token), r.payload) == (P.GET, 0x1234, b"\x07\x08", b"payload")
    assert r.block(P.OPT_BLOCK2) == (300, False, 6) and r.uint(P.OPT_SIZE1) == 70000
    assert [bytes(v) for v in r.opts[P.OPT_URI_PATH]] == [b"s", b"A" * 22, b"3"]


def _transfer(addr, data, si, *, timeout=10.0):
    async def go():
        async with NodeClient(*addr, timeout=timeout, tcp=False) as node:
            code = await node.put_share(si, 0, data)
            chan = await node.channel()
            back = await node.get_share(si, 0)
            part = await node.read_range(si, 0, 5000, 3000)
            held = await node.share_set(si)
            return code, back, part, held, chan.retransmissions

    return asyncio.run(go())


@pytest.mark.nodes(1)
def test_runs_save_answers_and_requests(boards):
    b = boards[0]
    data = os.urandom(100 * 1024)  # 100 blocks
    si = os.urandom(16)
    with LossyRelay([(b.host, b.port)], loss=0.0) as relay:
        put_before = dict(relay.stats)
        code, back, part, held, _ = _transfer(relay.front[0], data, si)
        stats = dict(relay.stats)
    assert code == P.CREATED and back == data and part == data[5000:8000]
    assert held == {0: len(data)}
    # Up: about one datagram per block each way (put blocks, get requests are
    # few); down: one 2.31 per run on the put, one datagram per block on the
    # get. Without runs each block would need its own answer and request.
    up, down = stats["up"] - put_before["up"], stats["down"] - put_before["down"]
    blocks = len(data) // 1024
    assert up < blocks + blocks // 2, stats  # 100 PUT blocks + ~10 GET requests + a few
    assert down < blocks + blocks // 2, stats  # ~15 PUT answers + 100 GET blocks + a few


@pytest.mark.nodes(1)
@pytest.mark.parametrize("runs_in_flight", [1, 2])
def test_loss_both_ways_loses_nothing(boards, monkeypatch, runs_in_flight):
    monkeypatch.setattr(bulk, "RUNS_IN_FLIGHT", runs_in_flight)
    b = boards[0]
    data = os.urandom(30 * 1024 + 77)
    si = os.urandom(16)
    with LossyRelay([(b.host, b.port)], loss=0.2, seed=7) as relay:
        code, back, part, held, retrans = _transfer(relay.front[0], data, si, timeout=30.0)
        stats = dict(relay.stats)
    assert code == P.CREATED and back == data and part == data[5000:8000]
    assert held == {0: len(data)}
    assert stats["up_dropped"] > 10 and stats["down_dropped"] > 10, stats
    assert retrans > 0


@pytest.mark.nodes(1)
def test_gap_in_a_run_resumes_where_the_node_says(boards):
    # Drop exactly the 3rd datagram the host sends after block 0's answer:
    # a NON block in the middle of a run; the node answers the rest 4.08
    # naming it, and the upload goes on from there without a timeout.
    b = boards[0]
    data = os.urandom(40 * 1024)
    si = os.urandom(16)

    async def go():
        async with NodeClient(b.host, b.port, timeout=10, tcp=False) as node:
            chan = await node.channel()
            real_send = chan._send
            count = {"n": 0}

            def lossy(d):
                count["n"] += 1
                if count["n"] == 4:
                    chan.dropped = d
                    return
                real_send(d)

            chan._send = lossy
            code = await node.put_share(si, 1, data)
            chan._send = real_send
            back = await node.get_share(si, 1)
            return code, back, chan

    code, back, chan = asyncio.run(go())
    assert code == P.CREATED and back == data
    assert bulk.Response(chan.dropped).block(P.OPT_BLOCK1)[0] > 0  # a block, not the first
    assert chan.retransmissions == 0  # recovered by the 4.08, not by a timer


@pytest.mark.nodes(1)
def test_errors_and_a_dead_node(boards, fleet):
    b = boards[0]

    async def go():
        async with NodeClient(b.host, b.port, timeout=5, tcp=False) as node:
            whole = os.urandom(128 * 1024)  # a whole number of iter_share's 64 KiB pieces
            si = os.urandom(16)
            await node.put_share(si, 0, whole)
            assert await node.get_share(si, 0) == whole
            for call in (node.read_range(os.urandom(16), 0, 0, 100), node.share_set(os.urandom(16))):
                with pytest.raises(CoapError) as e:
                    await call
                assert e.value.code == P.NOT_FOUND and e.value.diagnostic
            fleet.kill(b.name)
            t = asyncio.get_running_loop().time()
            with pytest.raises(NodeUnreachable):
                await node.put_share(os.urandom(16), 0, os.urandom(5000))
            return asyncio.get_running_loop().time() - t

    took = asyncio.run(go())
    assert took < 5.5


def test_share_path_form():
    si = hashlib.sha256(b"x").digest()[:16]
    assert len(si_text(si)) == P.SI_TEXT_LEN
