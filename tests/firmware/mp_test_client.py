# The node's own client side (ohnode.client): retransmission with
# exponential back-off, ACK matching, and separate responses (a DELETE of
# a whole storage index answers with an empty ACK, then a CON 2.02 that is
# retransmitted until the requester ACKs it). Runs under MicroPython.
import asyncio
import time
import vfs
import mptest
from ohnode import coap
from ohnode.server import Server
from ohnode.client import Client
from ohnode.shares import Shares
from ohproto import const as P

PEER = b"peer-a"
SI = "00112233445566778899aabbccddeeff"


class Sock:
    def __init__(self):
        self.out = []  # (ticks_ms, bytes, peer)

    def sendto(self, data, peer):
        self.out.append((time.ticks_ms(), bytes(data), peer))


class RamDev:
    def __init__(self, blocks, bs=512):
        self.bs = bs
        self.data = bytearray(blocks * bs)

    def readblocks(self, n, buf, off=0):
        o = n * self.bs + off
        buf[:] = self.data[o : o + len(buf)]

    def writeblocks(self, n, buf, off=None):
        o = n * self.bs + (off or 0)
        self.data[o : o + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.bs
        if op == 5:
            return self.bs
        if op == 6:
            return 0


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
    mptest.check(20 <= gaps[0] <= 60, "first timeout in [ACK_TIMEOUT, 1.5 x]: %r" % gaps)
    for a, b in zip(gaps, gaps[1:]):
        mptest.check(b >= 2 * a - 5, "timeouts double: %r" % gaps)


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


async def _separate(sock, srv, sh):
    for i in range(7):
        body = b"share %d" % i
        import hashlib
        import binascii

        h = binascii.hexlify(hashlib.sha256(body).digest()).decode()
        srv.datagram(_msg(P.CON, P.PUT, 100 + i, b"t", ("s", SI, str(i)), ("h=" + h,), body), PEER)
    mptest.eq(sh.count, 7, "shares stored")
    del sock.out[:]
    srv.datagram(_msg(P.CON, P.DELETE, 0x0500, b"tokn", ("s", SI)), PEER)
    first = _parse(sock.out[0][1])
    mptest.eq((first.t, first.code, first.mid, first.tok), (P.ACK, P.EMPTY, 0x0500, b""), "empty ACK first")
    # a retransmitted request is answered with the same empty ACK
    srv.datagram(_msg(P.CON, P.DELETE, 0x0500, b"tokn", ("s", SI)), PEER)
    mptest.eq(sock.out[1][1], sock.out[0][1], "duplicate gets the cached empty ACK")
    for _ in range(100):
        await asyncio.sleep_ms(5)
        if len(sock.out) >= 4:
            break
    sep = [_parse(d) for _, d, _ in sock.out[2:]]
    mptest.check(len(sep) >= 2, "separate response retransmitted until ACKed")
    r = sep[0]
    mptest.eq((r.t, r.code, r.tok), (P.CON, P.DELETED, b"tokn"), "separate CON 2.02 with the token")
    mptest.eq(sep[1].mid, r.mid, "retransmission keeps the MID")
    srv.datagram(_msg(P.ACK, P.EMPTY, r.mid, b""), PEER)
    n = len(sock.out)
    await asyncio.sleep_ms(200)
    mptest.eq(len(sock.out), n, "no more retransmissions after the ACK")
    mptest.eq(sh.count, 0, "every share deleted")


def test_separate_response_for_slow_delete():
    dev = RamDev(24)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/c")
    try:
        sock, srv = _node(30)
        sh = Shares(srv, "/c", {"block_size": 512}, (time.ticks_ms, time.ticks_diff))
        srv.res["s"] = sh
        asyncio.run(_separate(sock, srv, sh))
    finally:
        vfs.umount("/c")


mptest.run(globals())
