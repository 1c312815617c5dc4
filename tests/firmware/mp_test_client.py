# The node's own client side (ohnode.client): retransmission with
# exponential back-off, ACK matching, and separate responses (a DELETE of
# a whole storage index answers with an empty ACK, then a CON 2.02 that is
# retransmitted until the requester ACKs it). Runs under MicroPython.
import asyncio
import time
import mptest
import mpfake as F
from ohnode import coap
from ohnode.server import Server
from ohnode.client import Client
from ohproto import const as P

PEER = b"peer-a"


class Sock:
    def __init__(self):
        self.out = []  # (ticks_ms, bytes, peer)

    def sendto(self, data, peer):
        self.out.append((time.ticks_ms(), bytes(data), peer))


def _node(ack_ms):
    sock = Sock()
    srv = Server(sock, {"szx": 6, "dedup": 8})
    srv.client = Client(srv, ack_ms)
    return sock, srv


def _msg(t, code, mid, tok, path=(), query=(), pl=None, opts=()):
    o = [(P.OPT_URI_PATH, s.encode()) for s in path]
    o += [(P.OPT_URI_QUERY, q.encode()) for q in query]
    o += list(opts)
    coap.sort_opts(o)  # stable: repeated options keep their order
    buf = bytearray(1200)
    n = coap.build(buf, t, code, mid, tok, o, pl)
    return bytes(buf[:n])


def _parse(data):
    m = coap.Msg()
    coap.parse(data, m)
    return m


async def _no_ack(sock, srv):
    data = _msg(P.CON, P.GET, 0x1234, b"", ("x",))
    try:
        await srv.client.exchange(PEER, data, 0x1234)
    except OSError:
        return True
    return False


def test_retransmits_with_backoff_then_gives_up():
    sock, srv = _node(20)
    mptest.check(asyncio.run(_no_ack(sock, srv)), "exchange must fail without ACK")
    mptest.eq(len(sock.out), P.MAX_RETRANSMIT + 1, "transmissions")
    gaps = [time.ticks_diff(sock.out[i + 1][0], sock.out[i][0]) for i in range(len(sock.out) - 1)]
    # Lower bounds only: a timer never fires early, but a busy machine may
    # wake it late, and a late gap must not make the next one look short.
    # The k-th timeout is at least ACK_TIMEOUT x 2^k (20 ms here): it doubles.
    mptest.check(gaps[0] >= 20, "first timeout at least ACK_TIMEOUT: %r" % gaps)
    for k, g in enumerate(gaps):
        mptest.check(g >= 20 * (1 << k) - 5, "timeouts double: %r" % gaps)


async def _acked(sock, srv):
    data = _msg(P.CON, P.GET, 0x2222, b"", ("x",))

    async def ack_later():
        while len(sock.out) < 2:  # ACK only the retransmission
            await asyncio.sleep_ms(5)
        srv.datagram(_msg(P.ACK, P.CONTENT, 0x2222, b"", pl=b"ok"), PEER)

    asyncio.create_task(ack_later())
    return await srv.client.exchange(PEER, data, 0x2222)


def test_ack_stops_retransmission():
    sock, srv = _node(30)
    t, code, pl = asyncio.run(_acked(sock, srv))
    mptest.eq((t, code, pl), (P.ACK, P.CONTENT, b"ok"), "ACK seen by exchange")
    mptest.eq(len(sock.out), 2, "sent twice, then stopped")


async def _rst(sock, srv):
    data = _msg(P.CON, P.GET, 0x3333, b"", ("x",))

    async def rst_soon():
        await asyncio.sleep_ms(5)
        srv.datagram(_msg(P.RST, P.EMPTY, 0x3333, b""), PEER)

    asyncio.create_task(rst_soon())
    try:
        await srv.client.exchange(PEER, data, 0x3333)
    except OSError:
        return True
    return False


def test_rst_ends_exchange():
    sock, srv = _node(200)
    mptest.check(asyncio.run(_rst(sock, srv)), "RST must end the exchange with an error")
    mptest.eq(len(sock.out), 1, "no retransmission after RST")


async def _separate(nd):
    for i in range(7):
        r = nd.ask(P.PUT, F.spath(F.SI, i), query=("h=" + F.sha_hex(b"share %d" % i),), pl=b"share %d" % i)
        mptest.eq(r.code, P.CREATED, "share stored")
    out = nd.feed(F.msg(P.DELETE, "s/" + F.SI, mid=0x0500, tok=b"tokn"))
    first = F.parse(out[0][0])
    mptest.eq((first.t, first.code, first.mid, first.tok), (P.ACK, P.EMPTY, 0x0500, b""), "empty ACK first")
    # a retransmitted request is answered with the same empty ACK
    again = nd.feed(F.msg(P.DELETE, "s/" + F.SI, mid=0x0500, tok=b"tokn"))
    mptest.eq(again[0][0], out[0][0], "duplicate gets the cached empty ACK")
    sock = nd.sock
    for _ in range(100):
        await asyncio.sleep_ms(5)
        if len(sock.out) >= 2:
            break
    sep = [F.parse(d) for d, _ in sock.out]
    mptest.check(len(sep) >= 2, "separate response retransmitted until ACKed")
    r = sep[0]
    mptest.eq((r.t, r.code, r.tok), (P.CON, P.DELETED, b"tokn"), "separate CON 2.02 with the token")
    mptest.eq(sep[1].mid, r.mid, "retransmission keeps the MID")
    nd.feed(_msg(P.ACK, P.EMPTY, r.mid, b""))
    n = len(sock.out)
    await asyncio.sleep_ms(200)
    mptest.eq(len(sock.out), n, "no more retransmissions after the ACK")
    mptest.eq(nd.sh.count, 0, "every share deleted")


def test_separate_response_for_slow_delete():
    nd = F.fresh()
    nd.srv.client = Client(nd.srv, 30)
    asyncio.run(_separate(nd))


F.run(globals())
