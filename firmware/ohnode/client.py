# CoAP client side for the messages the node itself sends (separate
# responses, confirmable notifications, registration): message IDs, tokens,
# and retransmission with exponential back-off (RFC 7252 4.2, 4.8).
import asyncio
import random
from micropython import const
from ohnode import coap
from ohproto import const as P

_ETIMEDOUT = const(110)


class Client:
    def __init__(self, srv, ack_timeout_ms=P.ACK_TIMEOUT_MS):
        self._srv = srv
        self._mid = random.getrandbits(16)
        self._tok = random.getrandbits(16)
        self._ato = ack_timeout_ms
        self._pend = {}  # mid -> [Event, (type, code, payload) or None]
        self._wait = {}  # token -> [Event, (type, code, payload) or None, Location-Path]

    def next_mid(self):
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def reply(self, m):
        # Called by the server for ACK, RST and responses addressed to us.
        r = (m.t, m.code, bytes(m.pl))
        e = self._pend.get(m.mid)
        if e is not None and m.t in (P.ACK, P.RST):
            e[1] = r
            e[0].set()
        if m.code and m.tok:
            e = self._wait.get(m.tok)
            if e is not None:
                e[1] = r
                e[2] = tuple(bytes(v) for n, v in m.opts if n == P.OPT_LOCATION_PATH)
                e[0].set()

    async def exchange(self, peer, data, mid):
        # Send a CON message until it is acknowledged; returns (t, code, pl)
        # of the ACK. Raises OSError(ETIMEDOUT) after MAX_RETRANSMIT, or
        # OSError on RST.
        e = [asyncio.Event(), None]
        self._pend[mid] = e
        to = self._ato * (100 + random.getrandbits(6) % (P.ACK_RANDOM_FACTOR_PCT - 99)) // 100
        try:
            for _ in range(P.MAX_RETRANSMIT + 1):
                self._srv.send(data, peer)
                try:
                    await asyncio.wait_for_ms(e[0].wait(), to)
                except asyncio.TimeoutError:
                    to *= 2
                    continue
                if e[1][0] == P.RST:
                    raise OSError(_ETIMEDOUT)
                return e[1]
            raise OSError(_ETIMEDOUT)
        finally:
            del self._pend[mid]

    async def request(self, peer, code, path, payload=None, cf=None, timeout_ms=30000, query=()):
        # Confirmable request; waits for the piggybacked or separate response.
        # path: "a/b" or a sequence of segments (str or bytes); query: Uri-Query
        # strings. Returns (code, payload, Location-Path segments as a tuple of
        # bytes). Raises OSError when unanswered (or on RST), and
        # asyncio.TimeoutError when an empty ACK is followed by no response.
        self._tok = (self._tok + 1) & 0xFFFF
        tok = self._tok.to_bytes(2, "big")
        if isinstance(path, str):
            path = path.split("/")
        opts = [(P.OPT_URI_PATH, s if isinstance(s, bytes) else s.encode()) for s in path if s]
        opts += [(P.OPT_URI_QUERY, q.encode()) for q in query]
        if cf is not None:
            opts.append((P.OPT_CONTENT_FORMAT, coap.uint_bytes(cf)))
        n = 32 + (len(payload) if payload else 0)
        for o in opts:
            n += 3 + len(o[1])
        buf = bytearray(n)
        mid = self.next_mid()
        n = coap.build(buf, P.CON, code, mid, tok, coap.sort_opts(opts), payload)
        w = [asyncio.Event(), None, ()]
        self._wait[tok] = w
        try:
            t, c, pl = await self.exchange(peer, memoryview(buf)[:n], mid)
            if c:  # piggybacked
                return c, pl, w[2]
            await asyncio.wait_for_ms(w[0].wait(), timeout_ms)
            return w[1][1], w[1][2], w[2]
        finally:
            del self._wait[tok]
