"""CoAP over TCP (RFC 8323) with BERT blocks against the real firmware on
virtual boards: openheap.coaptcp's channel, and raw frames for what a
well-behaved client never sends (gaps, bad sizes, bad frames, signals,
dropped connections). See protocols/RESOURCES.md, "CoAP over TCP"."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from ohproto import const as P
from openheap import bulk
from openheap.coaptcp import TcpChannel, TcpUnavailable, frame
from openheap.errors import CoapError
from openheap.node import NodeClient, si_text

KiB = 1024


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def wake(board):
    """A share request over UDP: the node listens on TCP from then on
    until idle (ohnode.tcp)."""
    async with NodeClient(board.host, board.port, timeout=10, tcp=False) as udp:
        try:
            await udp.share_set(os.urandom(16), query=(P.QUERY_TCP,))
        except CoapError:
            pass  # (4.04: no shares; the node listens all the same)


async def open_tcp(board, **kw) -> TcpChannel:
    await wake(board)
    return await TcpChannel(board.host, board.port, **kw).open()


def share_path(si: bytes, shnum: int = 0) -> str:
    return "%s/%s/%d" % (P.PATH_SHARES, si_text(si), shnum)


async def chunks_of(data: bytes, piece: int = 40_000):
    for i in range(0, len(data), piece):
        yield data[i:i + piece]


class Raw:
    """A bare connection: frames written by hand, answers parsed."""

    def __init__(self, r, w):
        self.r, self.w = r, w

    @classmethod
    async def open(cls, board, csm=True, bert=True):
        await wake(board)
        r, w = await asyncio.open_connection(board.host, board.port)
        raw = cls(r, w)
        if csm:
            opts = [(P.OPT_MAX_MESSAGE_SIZE, bulk.uint_opt(1 << 20))]
            if bert:
                opts.append((P.OPT_BLOCK_WISE_TRANSFER, b""))
            w.write(frame(P.CSM, b"", opts))
        first = await raw.recv()
        assert first.code == P.CSM  # the node's CSM comes first
        raw.csm = first
        return raw

    def send(self, code, token, opts, payload=b""):
        self.w.write(frame(code, token, sorted(opts, key=lambda kv: kv[0]), payload) + bytes(payload))

    async def recv(self, timeout=10) -> bulk.Response:
        async def one():
            b0 = (await self.r.readexactly(1))[0]
            ln, tkl = b0 >> 4, b0 & 15
            if ln >= 13:
                xl = (1, 2, 4)[ln - 13]
                ln = int.from_bytes(await self.r.readexactly(xl), "big") + (13, 269, 65805)[ln - 13]
            head = await self.r.readexactly(1 + tkl)
            return bulk.Response.of(head[0], head[1:], await self.r.readexactly(ln))

        return await asyncio.wait_for(one(), timeout)

    def close(self):
        self.w.close()


def path_opts(path, query=()):
    return [(P.OPT_URI_PATH, s.encode()) for s in path.split("/")] + [(P.OPT_URI_QUERY, q.encode()) for q in query]


async def udp_status(board) -> dict:
    async with NodeClient(board.host, board.port, timeout=10) as node:
        return await node.status()


@pytest.mark.nodes(1)
@pytest.mark.parametrize("size", [1, KiB, KiB + 1, 32 * KiB, 32 * KiB + 1, 64 * KiB, 64 * KiB + 1, 300_000])
def test_bert_put_and_get(boards, size):
    b = boards[0]
    data = os.urandom(size)
    si = os.urandom(16)

    async def go():
        ch = await open_tcp(b, timeout=10)
        try:
            assert ch.bert and ch.mms >= 64 * KiB  # the node's CSM
            code = await ch.put_share(share_path(si), chunks_of(data), size)
            whole = await ch.read_range(share_path(si), 0, size + 5000)  # past the end: what there is
            part = await ch.read_range(share_path(si), size // 3, size // 2)  # unaligned
            # consecutive unaligned ranges, as a get reads segments (the
            # last block of one read serves the next)
            steps = [await ch.read_range(share_path(si), o, 5000) for o in range(7, size, 5000)]
        finally:
            ch.close()
        async with NodeClient(b.host, b.port, tcp=False) as udp:  # the same share over UDP
            held = await udp.share_set(si)
            back = await udp.get_share(si, 0)
        return code, whole, part, held, back, steps

    code, whole, part, held, back, steps = run(go())
    assert b"".join(steps) == data[7:]
    assert code == P.CREATED
    assert whole == data and back == data
    assert part == data[size // 3:size // 3 + size // 2]
    assert held == {0: size}


@pytest.mark.nodes(1)
def test_bert_block_errors(fleet):
    b = fleet.up(1, extra_config={"max_share": 100 * KiB})[0]
    si = os.urandom(16)
    path = share_path(si)
    data = os.urandom(96 * KiB)

    async def go():
        out = {}
        raw = await Raw.open(b)
        b1 = lambda num, more: (P.OPT_BLOCK1, bulk.block_opt(num, more, P.BERT_SZX))  # noqa: E731
        # a gap: block 0 (32 KiB), then NUM 64 instead of 32
        raw.send(P.PUT, b"\x01", path_opts(path) + [b1(0, True)], data[:32 * KiB])
        out["first"] = await raw.recv()
        raw.send(P.PUT, b"\x02", path_opts(path) + [b1(64, True)], data[64 * KiB:96 * KiB])
        out["gap"] = await raw.recv()
        # a non-final BERT block that is not whole KiB
        raw.send(P.PUT, b"\x03", path_opts(path) + [b1(32, True)], data[32 * KiB:33 * KiB + 7])
        out["size"] = await raw.recv()
        # Size1 beyond the node's maximum share size
        raw.send(P.PUT, b"\x04", path_opts(share_path(si, 1)) + [b1(0, True), (P.OPT_SIZE1, bulk.uint_opt(200 * KiB))],
                 data[:32 * KiB])
        out["size1"] = await raw.recv()
        # data running past it without Size1
        big = os.urandom(128 * KiB)
        raw.send(P.PUT, b"\x05", path_opts(share_path(si, 2)) + [b1(0, False), (P.OPT_URI_QUERY, b"h=" + hashlib.sha256(big).hexdigest().encode())], big)
        out["cap"] = await raw.recv()
        # a long payload to a resource that does not stream: 4.13, skipped
        raw.send(P.PUT, b"\x06", path_opts("c/" + "0" * 64), os.urandom(5000))
        out["code"] = await raw.recv()
        # the wrong hash on the last block: refused, nothing stored
        raw.send(P.PUT, b"\x07", path_opts(share_path(si, 3)) + [b1(0, False), (P.OPT_URI_QUERY, b"h=" + b"0" * 64)],
                 data[:40 * KiB])
        out["hash"] = await raw.recv()
        # and the connection still serves
        raw.send(P.GET, b"\x08", path_opts("i"))
        out["after"] = await raw.recv()
        raw.close()
        async with NodeClient(b.host, b.port, tcp=False) as udp:
            try:
                out["held"] = await udp.share_set(si)
            except CoapError as e:
                out["held"] = e.code
        return out

    out = run(go())
    assert out["first"].code == P.CONTINUE and out["first"].block(P.OPT_BLOCK1) == (0, True, P.BERT_SZX)
    assert out["gap"].code == P.REQUEST_ENTITY_INCOMPLETE
    assert out["gap"].block(P.OPT_BLOCK1) == (32, True, P.BERT_SZX)  # the first KiB missing
    assert out["size"].code == P.BAD_REQUEST and "size" in out["size"].text()
    assert out["size1"].code == P.REQUEST_ENTITY_TOO_LARGE and out["size1"].uint(P.OPT_SIZE1) == 100 * KiB
    assert out["cap"].code == P.REQUEST_ENTITY_TOO_LARGE
    assert out["code"].code == P.REQUEST_ENTITY_TOO_LARGE
    assert out["hash"].code == P.BAD_REQUEST and "hash" in out["hash"].text(), out["hash"].text()
    assert out["after"].code == P.CONTENT
    assert out["held"] == P.NOT_FOUND  # no share of si was stored


@pytest.mark.nodes(1)
def test_the_flash_filling_up_mid_upload(fleet):
    """BERT blocks without Size1 until the flash is full: the block that
    does not fit is answered 5.03 "no space" (its rest read off the
    connection), nothing of the share stays, and the connection goes on."""
    b = fleet.up(1, fs_size=1024 * KiB, extra_config={"max_share": 4096 * KiB})[0]
    si = os.urandom(16)
    block = os.urandom(64 * KiB)
    small = os.urandom(3000)

    async def go():
        raw = await Raw.open(b)
        b1 = lambda num, more: (P.OPT_BLOCK1, bulk.block_opt(num, more, P.BERT_SZX))  # noqa: E731
        answers = []
        for i in range(4096 // 64):
            raw.send(P.PUT, bytes((i + 1,)), path_opts(share_path(si)) + [b1(i * 64, True)], block)
            answers.append(await raw.recv())
            if answers[-1].code != P.CONTINUE:
                break
        raw.send(P.GET, b"\xf0", path_opts("i"))  # the same connection serves on
        after = await raw.recv()
        raw.close()
        ch = await open_tcp(b, timeout=10)  # and a share that fits is stored
        try:
            code = await ch.put_share(share_path(si, 1), chunks_of(small), len(small))
        finally:
            ch.close()
        async with NodeClient(b.host, b.port, tcp=False) as udp:
            held = await udp.share_set(si)
        return answers, after, code, held

    answers, after, code, held = run(go())
    assert all(a.code == P.CONTINUE for a in answers[:-1]) and len(answers) > 2
    last = answers[-1]
    assert last.code == P.SERVICE_UNAVAILABLE and last.text() == "no space", (last.code, last.text())
    assert after.code == P.CONTENT
    assert code == P.CREATED and held == {1: len(small)}  # nothing of the full one kept


@pytest.mark.nodes(1)
def test_signals_and_bad_frames(boards):
    b = boards[0]

    async def go():
        raw = await Raw.open(b)
        out = {"csm": raw.csm}
        raw.send(P.PING, b"\x09\x08", [])
        out["pong"] = await raw.recv()
        # an option whose length runs past the frame: 4.00, and on it goes
        raw.w.write(bytes((0x3 << 4 | 1, P.GET, 1, 0xB5)) + b"ab")
        out["bad"] = await raw.recv()
        raw.send(P.GET, b"\x02", path_opts("i"))
        out["after"] = await raw.recv()
        # a request with Observe over TCP: a plain answer (notifications are UDP's)
        raw.send(P.GET, b"\x03", [(P.OPT_OBSERVE, b"")] + path_opts("i"))
        out["observe"] = await raw.recv()
        # a token of 9 bytes: the node closes the connection
        raw.w.write(bytes((0x09, P.GET)) + b"123456789")
        try:
            out["closed"] = await raw.recv(timeout=5)
        except asyncio.IncompleteReadError:
            out["closed"] = "closed"
        raw.close()
        # the node serves on, over UDP and over a new connection
        out["udp"] = await udp_status(b)
        ch = await open_tcp(b)
        out["tcp"] = await ch.request(P.GET, "i")
        ch.close()
        return out

    out = run(go())
    assert out["csm"].uint(P.OPT_MAX_MESSAGE_SIZE) >= 64 * KiB and P.OPT_BLOCK_WISE_TRANSFER in out["csm"].opts
    assert out["pong"].code == P.PONG and out["pong"].token == b"\x09\x08"
    assert out["bad"].code == P.BAD_REQUEST and out["bad"].token == b"\x01"
    assert out["after"].code == P.CONTENT
    assert out["observe"].code == P.CONTENT and P.OPT_OBSERVE not in out["observe"].opts
    assert out["closed"] == "closed"
    assert out["udp"][P.ST_NAME] == b.name
    assert out["tcp"].code == P.CONTENT


@pytest.mark.nodes(1)
def test_a_peer_without_bert_gets_1024_byte_blocks(boards):
    b = boards[0]
    data = os.urandom(10 * KiB)
    si = os.urandom(16)

    async def go():
        ch = await open_tcp(b)
        await ch.put_share(share_path(si), chunks_of(data), len(data))
        ch.close()
        await asyncio.sleep(0.2)  # (one connection at a time: let that one end)
        raw = await Raw.open(b, bert=False)
        raw.send(P.GET, b"\x01", path_opts(share_path(si), ("b=8",)) + [(P.OPT_BLOCK2, bulk.block_opt(2, False, P.BERT_SZX))])
        r = await raw.recv()
        raw.close()
        return r

    r = run(go())
    assert r.code == P.CONTENT
    assert r.block(P.OPT_BLOCK2) == (2, True, P.MAX_BLOCK_SZX)
    assert r.payload == data[2 * KiB:3 * KiB]


@pytest.mark.nodes(1)
def test_dropped_connections_leave_nothing_behind(boards):
    # Three uploads cut off mid-share (the node has two upload slots): each
    # ends when its connection does, so a whole upload goes through after
    # them, nothing partial is listed, and the heap the connections took
    # comes back.
    b = boards[0]
    si = os.urandom(16)
    data = os.urandom(100 * KiB)

    async def go():
        (await Raw.open(b)).close()  # (listening, the connection code loaded)
        await asyncio.sleep(0.2)
        before = await udp_status(b)
        for i in range(3):
            raw = await Raw.open(b)
            raw.send(P.PUT, b"\x01", path_opts(share_path(si, i)) + [
                (P.OPT_BLOCK1, bulk.block_opt(0, True, P.BERT_SZX))], data[:32 * KiB])
            assert (await raw.recv()).code == P.CONTINUE
            raw.send(P.PUT, b"\x02", path_opts(share_path(si, i)) + [
                (P.OPT_BLOCK1, bulk.block_opt(32, True, P.BERT_SZX))], data[:8 * KiB])  # half of it
            await raw.w.drain()
            raw.close()
            await asyncio.sleep(0.1)
        ch = await open_tcp(b)
        code = await ch.put_share(share_path(si, 7), chunks_of(data), len(data))
        ch.close()
        await asyncio.sleep(0.3)
        async with NodeClient(b.host, b.port, tcp=False) as udp:
            held = await udp.share_set(si)
            after = await udp.status()
        return before, code, held, after

    before, code, held, after = run(go())
    assert code == P.CREATED
    assert held == {7: len(data)}
    # what the connections and their uploads took is back
    assert after[P.ST_HEAP_FREE] >= before[P.ST_HEAP_FREE] - 512, (before[P.ST_HEAP_FREE], after[P.ST_HEAP_FREE])


@pytest.mark.nodes(1)
def test_connections_wait_their_turn(boards):
    # The node serves one connection at a time: the next one waits (and is
    # served once the first ends), a client that cannot wait that long goes
    # to UDP, and one process shares one connection among its clients.
    b = boards[0]
    data = os.urandom(50 * KiB)
    si = os.urandom(16)

    async def go():
        out = {}
        first = await Raw.open(b)
        with pytest.raises(TcpUnavailable):  # no CSM within 2 s: served later
            await open_tcp(b)
        out["udp"] = await udp_status(b)  # meanwhile the node answers UDP
        waiting = asyncio.ensure_future(Raw.open(b))
        await asyncio.sleep(0.3)
        first.close()
        second = await asyncio.wait_for(waiting, 5)  # its turn came
        second.send(P.GET, b"\x01", path_opts("i"))
        out["second"] = await second.recv()
        second.close()
        await asyncio.sleep(0.2)
        a = NodeClient(b.host, b.port, timeout=10)
        c = NodeClient(b.host, b.port, timeout=10)
        async with a, c:
            await asyncio.gather(a.put_share(si, 0, data), c.put_share(si, 1, data[::-1]))
            out["same"] = a._tcp is c._tcp and a._tcp is not None
            out["back"] = (await a.get_share(si, 1), await c.get_share(si, 0))
        return out

    out = run(go())
    assert out["udp"][P.ST_NAME] == b.name
    assert out["second"].code == P.CONTENT
    assert out["same"]
    assert out["back"] == (data[::-1], data)


@pytest.mark.nodes(1)
def test_a_board_without_tcp_is_reached_over_udp(fleet):
    b = fleet.up(1, extra_config={"tcp": False})[0]
    data = os.urandom(20 * KiB)
    si = os.urandom(16)

    async def go():
        with pytest.raises(TcpUnavailable):
            await open_tcp(b)
        async with NodeClient(b.host, b.port, timeout=10) as node:
            await node.put_share(si, 0, data)
            return await node.get_share(si, 0), node._tcp

    back, tcp = run(go())
    assert back == data and tcp is None


@pytest.mark.nodes(1)
def test_random_frames_never_stop_the_node(boards):
    # 300 random frames (random header bytes, lengths, codes, options and
    # payloads, some cut short) over connections the node may close: it
    # keeps serving over UDP and TCP, and its heap comes back.
    import random

    b = boards[0]
    rnd = random.Random(8323)

    def junk() -> bytes:
        kind = rnd.random()
        if kind < 0.3:  # bytes, nothing more
            return rnd.randbytes(rnd.randrange(1, 40))
        opts = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 30)))
        body = opts + (b"\xff" + rnd.randbytes(rnd.randrange(0, 3000)) if rnd.random() < 0.5 else b"")
        code = rnd.choice([P.GET, P.PUT, P.POST, P.DELETE, P.CSM, P.PING, P.RELEASE, 0, 0x45, rnd.randrange(256)])
        tok = rnd.randbytes(rnd.randrange(0, 9))
        n = len(body)
        if n < 13:
            head = bytes(((n << 4) | len(tok),))
        elif n < 269:
            head = bytes(((13 << 4) | len(tok), n - 13))
        else:
            head = bytes(((14 << 4) | len(tok),)) + (n - 269).to_bytes(2, "big")
        data = head + bytes((code,)) + tok + body
        return data[:rnd.randrange(1, len(data))] if kind > 0.9 else data

    async def go():
        await wake(b)
        before = await udp_status(b)  # (listening)
        sent = 0
        while sent < 300:
            try:
                r, w = await asyncio.open_connection(b.host, b.port)
            except OSError:  # (the node stopped listening with the last one)
                await wake(b)
                continue
            try:
                for _ in range(rnd.randrange(1, 20)):
                    w.write(junk())
                    sent += 1
                await asyncio.wait_for(w.drain(), 5)
                await asyncio.sleep(0.01)
            except (OSError, asyncio.TimeoutError):
                pass
            w.close()
        await asyncio.sleep(0.5)
        ch = await open_tcp(b)
        ok = await ch.request(P.GET, "i")
        ch.close()
        await asyncio.sleep(0.3)
        return before, ok, await udp_status(b)

    before, ok, after = run(go())
    assert ok.code == P.CONTENT
    assert after[P.ST_UPTIME] >= before[P.ST_UPTIME]  # no reset
    assert after[P.ST_HEAP_FREE] >= before[P.ST_HEAP_FREE] - 2048


@pytest.mark.nodes(1)
def test_the_listener_comes_with_share_requests_and_goes_when_idle(boards):
    # Not listening at rest (the heap is the datagrams'); a share set
    # request with ?tcp starts it (one without does not); 5 s without a
    # connection stop it, and the heap it took
    # comes back (but for what the first load interns for good: < 1 KB).
    b = boards[0]

    async def connect():
        try:
            r, w = await asyncio.open_connection(b.host, b.port)
        except OSError:
            return False
        w.close()
        return True

    async def go():
        out = {"rest": await udp_status(b), "at rest": await connect()}
        async with NodeClient(b.host, b.port, timeout=10, tcp=False) as udp:
            try:
                await udp.share_set(os.urandom(16))
            except CoapError:
                pass
        out["plain"] = await connect()
        await wake(b)
        out["woken"] = await connect()
        out["listening"] = await udp_status(b)
        await asyncio.sleep(8)
        out["idle"] = await connect()
        out["after"] = await udp_status(b)
        return out

    out = run(go())
    assert not out["at rest"] and not out["plain"] and out["woken"] and not out["idle"]
    assert out["listening"][P.ST_HEAP_FREE] < out["rest"][P.ST_HEAP_FREE]
    assert out["after"][P.ST_HEAP_FREE] >= out["rest"][P.ST_HEAP_FREE] - 1024, (out["rest"], out["after"])
