# Resource /i: who the node is and how it is doing; observable (RFC 7641).
import gc
from ohproto import const as P

VERSION = "0.1.0"


class Status:
    def __init__(self, srv, cfg, shares, ticks):
        self._srv = srv
        self._cfg = cfg
        self._shares = shares
        self._ticks = ticks  # (ticks_ms, ticks_diff)
        self._t0 = ticks[0]()
        self.reg = None  # ohnode.reg.Reg when a coordinator is configured

    def body(self):
        from ohproto import cbor

        s = self._srv
        c = self._cfg
        free, total = self._shares.stat()
        # A collection first (about 20 us on a 64 KiB heap), so that free
        # heap means what stays in use.
        gc.collect()
        heap_free = gc.mem_free()
        m = {
            P.ST_NAME: c.get("name", ""),
            P.ST_BOARD: c.get("board", ""),
            P.ST_FIRMWARE: VERSION,
            P.ST_UPTIME: self._ticks[1](self._ticks[0](), self._t0) // 1000,
            P.ST_HEAP_FREE: heap_free,
            P.ST_HEAP_TOTAL: heap_free + gc.mem_alloc(),
            P.ST_FS_FREE: free,
            P.ST_FS_TOTAL: total,
            P.ST_SHARES: self._shares.count,
            P.ST_RX_MSGS: s.rx_m,
            P.ST_TX_MSGS: s.tx_m,
            P.ST_RX_BYTES: s.rx_b,
            P.ST_TX_BYTES: s.tx_b,
            P.ST_ERRORS: s.errs,
        }
        m[P.ST_HEAP_PEAK] = m[P.ST_HEAP_TOTAL] - s.low
        lz = self._shares.lease
        if lz:
            m[P.ST_EXPIRED] = lz.expired
            t = lz.epoch.now()
            if t is not None:
                m[P.ST_TIME] = t
        r = self.reg
        if r:
            m[P.ST_REGISTERED] = r.registered()
            m[P.ST_COORDINATOR] = r.addr
        return cbor.dumps(m)

    def handle(self, req, rsp, path):
        if path:
            return rsp.err(P.NOT_FOUND, "no such resource")
        if req.code != P.GET:
            return rsp.err(P.METHOD_NOT_ALLOWED, "GET only")
        self._srv.observe(req, rsp, P.PATH_STATUS)
        self.notify(rsp)

    def notify(self, rsp):
        rsp.add(P.OPT_CONTENT_FORMAT, P.CF_CBOR)
        rsp.pl = self.body()
