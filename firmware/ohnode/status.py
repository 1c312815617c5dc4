# Resource /i: who the node is and how it is doing; observable (RFC 7641).
import gc
from ohproto import const as P

VERSION = "0.1.0"


class Status:
    # Class defaults: the instance gets its own only once tasks ran or a task
    # was lost (a node that never runs one keeps its dict as small as ever).
    done = 0  # tasks run since boot (ohnode.tasks counts)
    lost = None  # id of the task the watchdog cut before this boot (node.py)

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
            P.ST_HEAP_TOTAL: gc.mem_free() + gc.mem_alloc(),  # one instant: the map grows between
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
        m[P.ST_TASKS_DONE] = self.done
        if self.lost is not None:
            m[P.ST_TASK_LOST] = self.lost
        t = s.res.get(P.PATH_TASKS)  # while the task machinery is loaded
        e = t.current() if t else None
        if e:
            m[P.ST_TASK_RUNNING] = e[0]
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
