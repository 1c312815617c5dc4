# The CoAP-over-TCP listener (RFC 8323): the node's resources on a TCP port
# of the UDP port's number, for peers that move much share data (BERT
# blocks; ohnode.tcpconn serves a connection). It costs heap, so it is not
# there at rest: a share set request with the query `tcp` (GET /s/<si>?tcp)
# starts it; it stops when its last connection ends, or, when none came,
# after _IDLE_MS (the node's feeder looks), and this module and the
# connection code are unloaded: between a host's operations the node has
# all of its heap for datagrams and tasks. One connection is served at a time
# (with it open a node has about 3.6 KB less heap); up to _WAITING more
# wait their turn (a client's next connection may come before its last
# one ended here), any beyond those are closed.
import asyncio
import sys
from micropython import const

_WAITING = const(2)
_WAIT_MS = const(3000)  # how long one waits before it is closed
_WAIT_STEP_MS = const(20)
_IDLE_MS = const(5000)

_st = None  # [listening socket, connections served, waiting, ticks of the last use]


def on(srv, ticks):
    # Listen, unless the node does already (then: it was used now).
    global _st
    if _st is not None:
        _st[3] = ticks[0]()
        return
    import socket

    cfg = srv.cfg
    ai = socket.getaddrinfo(cfg.get("host", "0.0.0.0"), cfg.get("port", 5683), 0, socket.SOCK_STREAM)[0]
    ls = socket.socket(ai[0], socket.SOCK_STREAM)
    try:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except (AttributeError, OSError):
        pass
    ls.bind(ai[-1])
    ls.listen(2)
    ls.setblocking(False)
    _st = [ls, 0, 0, ticks[0]()]
    asyncio.create_task(_accept(srv, _st))


def retire(ticks):
    # From the node's feeder: stop listening once idle; 1 when stopped.
    st = _st
    if st is None or st[1] or st[2] or ticks[1](ticks[0](), st[3]) < _IDLE_MS:
        return 0
    _off(st)
    return 1


def _off(st):
    global _st
    if _st is st:
        _st = None
        st[0].close()  # (the accept loop wakes, sees it closed, and ends)
    _unload("ohnode.tcpconn")
    _unload("ohnode.tcp")


def _unload(m):
    if m in sys.modules:
        del sys.modules[m]
        try:  # the package keeps its submodules as attributes
            delattr(sys.modules["ohnode"], m[7:])
        except (KeyError, AttributeError):
            pass


async def _accept(srv, st):
    ls = st[0]
    while _st is st:
        yield asyncio.core._io_queue.queue_read(ls)
        try:
            s, _ = ls.accept()
        except OSError:
            continue
        if st[2] >= _WAITING:
            s.close()
            continue
        s.setblocking(False)
        try:  # answers go out in pieces: no waiting for ACKs (Nagle)
            s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
        except (OSError, AttributeError):
            pass
        st[2] += 1
        asyncio.create_task(_conn(srv, s, st))


async def _conn(srv, s, st):
    c = None
    t = 0
    while st[1] and t < _WAIT_MS:  # another one is served: wait a while
        await asyncio.sleep_ms(_WAIT_STEP_MS)
        t += _WAIT_STEP_MS
    st[2] -= 1
    if st[1]:
        s.close()
        return
    st[1] = 1
    try:
        from ohnode.tcpconn import Conn

        c = Conn(srv, s)
        c.open()
        await c.run()
    except Exception as e:  # (the peer left, no heap, a bad frame)
        if c is None or not c.dead:
            print("openheap: tcp", repr(e))
    finally:
        s.close()
        st[1] = 0
        if c is not None:
            c.close()  # (the server's buffer back, its uploads ended)
        c = None
        if not st[2]:  # the last one: stop listening
            _off(st)
