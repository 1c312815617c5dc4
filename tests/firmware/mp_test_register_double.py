# A coordinator double for the registration tests mp_test_register*.py: a
# node (mpfake.Node) with leases, clock and Reg wired as ohnode.node does,
# and when(), which runs one Reg.attempt() while answering what the node
# sends through the fake socket. Run as a script, it checks itself.
import sys
import time
import asyncio
asyncio.Event, asyncio.wait_for_ms  # loaded now, as in the node before it serves
import mpfake as F
from mptest import check, eq
from ohnode import coap
from ohnode.client import Client
from ohnode.epoch import Epoch
from ohnode.lease import Leases
from ohnode.reg import Reg
from ohproto import const as P
from ohproto import cbor

T0 = 1700000000
COORD = "127.0.0.1:5999"


def node(lt=60, ack=10, **cfg):
    cfg.update({"coordinator": COORD, "reg_lifetime": lt, "ack_timeout_ms": ack})
    clock = F.Clock()
    nd = F.fresh(cfg, clock=clock)
    nd.srv.client = Client(nd.srv, ack)
    tk = clock.ticks()
    nd.ep = Epoch(tk)
    nd.sh.lease = Leases(nd.sh, nd.cfg, nd.ep)
    nd.reg = Reg(nd.srv, nd.cfg, nd.sh, nd.ep, tk)
    nd.srv.res[P.PATH_STATUS].reg = nd.reg
    return nd


def answer(m, code, locs=(), pl=None, t=P.ACK, mid=None):
    # The coordinator's response to request m (piggybacked in the ACK).
    o = [(P.OPT_LOCATION_PATH, s.encode()) for s in locs]
    if pl is not None:
        o.append((P.OPT_CONTENT_FORMAT, coap.uint_bytes(P.CF_CBOR)))
    buf = bytearray(160)
    tok = m.tok if code else b""
    return bytes(buf[: coap.build(buf, t, code, m.mid if mid is None else mid, tok, o, pl)])


def created(*locs, pl=None):
    if pl is None:
        pl = cbor.dumps({P.RR_TIME: T0})
    return lambda m: answer(m, P.CREATED, locs, pl)


def changed(pl=None):
    return lambda m: answer(m, P.CHANGED, (), pl)


def silent(m):
    return None


def when(nd, respond, wait_ms=3000):
    # One nd.reg.attempt(); respond(m) answers each datagram the node sends
    # (bytes, or None: silence). Returns (the attempt's delay, seen): seen[0]
    # the first request parsed, then the message IDs of the others (heap).
    seen = []

    async def main():
        task = asyncio.create_task(nd.reg.attempt())
        t0 = time.ticks_ms()
        while not task.done() and time.ticks_diff(time.ticks_ms(), t0) < wait_ms:
            while nd.sock.out:
                data, peer = nd.sock.out.pop(0)
                m = F.parse(data)
                m.peer = peer
                seen.append(m.mid if seen else m)
                r = respond(m)
                if r is not None:
                    nd.srv.datagram(r, peer)
            await asyncio.sleep_ms(1)
        return await task

    return asyncio.run(main()), seen


def status(nd):
    return cbor.loads(nd.ask(P.GET, "i").pl)


def check_delay(nd, d):
    # A refresh is due after lifetime/2 +- lifetime/10.
    lt = nd.reg.lt * 1000
    check(lt // 2 - lt // 10 <= d <= lt // 2 + lt // 10, "delay %d, lifetime %d" % (d, lt))


def test_double():
    nd = node()
    d, seen = when(nd, created("rd", "1"))
    eq((len(seen), nd.reg.loc), (1, (b"rd", b"1")), "one exchange")


if sys.argv[-1].endswith("mp_test_register_double.py"):
    F.run(globals())
