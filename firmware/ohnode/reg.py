# Registration with the coordinator (RESOURCES.md "Registration and leases",
# after the CoRE Resource Directory, RFC 9176), sent from the serving socket
# so that the coordinator learns the node's CoAP address from the source:
#   POST /rd?ep=<name>&lt=<lifetime>   -> 2.01, Location-Path rd/<id>
#   POST /<location> every lifetime/2 (+-10 %) with fresh figures -> 2.04
# A 4.04 to a refresh (the coordinator forgot us) registers again at once;
# no answer retries after a back-off that doubles up to the lifetime. Every
# answer may carry the coordinator's time (RR_TIME), which sets the node's
# clock (ohnode.epoch), and a lease default (RR_LEASE).
import gc
import random
import asyncio
from micropython import const
from ohproto import const as P

_JITTER = const(10)  # refresh at lifetime/2 +- lifetime/_JITTER


class Reg:
    def __init__(self, srv, cfg, shares, epoch, ticks):
        self._srv = srv
        self._cfg = cfg
        self._sh = shares
        self._ep = epoch
        self._ticks = ticks  # (ticks_ms, ticks_diff)
        self.addr = cfg["coordinator"]  # "host:port"
        lt = cfg.get("reg_lifetime", P.REG_LIFETIME)
        self.lt = P.REG_LIFETIME_MIN if lt < P.REG_LIFETIME_MIN else min(lt, P.REG_LIFETIME_MAX)
        self._b0 = cfg.get("ack_timeout_ms", P.ACK_TIMEOUT_MS)  # first back-off
        self._back = self._b0
        self._peer = None  # resolved coordinator address
        self.loc = None  # Location-Path segments (bytes) of our registration
        self._ok = None  # ticks_ms of the last 2.xx

    def registered(self):
        # True while the last registration or refresh the coordinator
        # accepted is younger than the lifetime (it still holds us).
        return (self.loc is not None and self._ok is not None
                and self._ticks[1](self._ticks[0](), self._ok) < self.lt * 1000)

    def _resolve(self):
        import socket

        h, p = self.addr.rsplit(":", 1)
        return socket.getaddrinfo(h.strip("[]"), int(p), 0, socket.SOCK_DGRAM)[0][-1]

    def _payload(self):
        from ohproto import cbor
        from ohnode.status import VERSION

        c = self._cfg
        sh = self._sh
        free, total = sh.stat()
        m = {
            P.RG_NAME: c.get("name", ""),
            P.RG_BOARD: c.get("board", ""),
            P.RG_FIRMWARE: VERSION,
            P.RG_FS_TOTAL: total,
            P.RG_FS_FREE: free,
            P.RG_MAX_SHARE: sh.max_share,
            P.RG_SHARES: sh.count,
            P.RG_HEAP_TOTAL: gc.mem_free() + gc.mem_alloc(),
        }
        z = c.get("zone")
        if z:
            m[P.RG_ZONE] = z
        return cbor.dumps(m)

    async def attempt(self):
        # One registration (no location yet) or refresh. Returns the
        # milliseconds to wait before the next one.
        cl = self._srv.client
        pl = self._payload()
        try:
            if self._peer is None:
                self._peer = self._resolve()
            if self.loc is None:
                q = (P.QUERY_EP + self._cfg.get("name", ""), P.QUERY_LT + str(self.lt))
                code, rpl, loc = await cl.request(self._peer, P.POST, P.PATH_RD, pl, P.CF_CBOR, query=q)
                if code >> 5 != 2 or not loc:  # 2.01 with Location-Path
                    return self._failed()
                self.loc = loc
            else:
                code, rpl, _ = await cl.request(self._peer, P.POST, self.loc, pl, P.CF_CBOR)
                if code == P.NOT_FOUND:  # forgotten (a restart): again, now
                    self.loc = None
                    return 0
                if code >> 5 != 2:
                    if code >> 5 == 4:  # refused: start afresh, later
                        self.loc = None
                    return self._failed()
        except (OSError, asyncio.TimeoutError):  # no answer, RST, no DNS
            self._peer = None  # resolve again: the coordinator may have moved
            return self._failed()
        self._ok = self._ticks[0]()
        self._back = self._b0
        self._answer(rpl)
        # lifetime/2 +- lifetime/10, in ms: refreshes of many nodes spread out
        j = self.lt * 1000 // _JITTER
        return self.lt * 500 - j + random.getrandbits(30) % (2 * j + 1)

    def _failed(self):
        d = self._back
        self._back = min(d * 2, self.lt * 1000)
        return d

    def _answer(self, pl):
        # RR_TIME sets the clock; RR_LEASE the lease of PUTs without l=.
        from ohproto import cbor

        try:
            m = cbor.loads(pl)
            t = m.get(P.RR_TIME)
            n = m.get(P.RR_LEASE)
        except (ValueError, AttributeError, TypeError):
            return
        if type(t) is int and t >= 0:
            self._ep.set(t)
        lz = self._sh.lease
        if lz and type(n) is int and 0 < n <= P.LEASE_MAX:
            lz.default = n

    async def run(self):
        while True:
            try:
                d = await self.attempt()
            except Exception as e:  # e.g. a bad address: keep trying, slowly
                print("openheap: registration", repr(e))
                self._peer = None
                d = self._failed()
            if d:
                await asyncio.sleep_ms(d)
