# Leases of storage indexes (RESOURCES.md "Registration and leases"). Each
# index's lease expiry is on flash in <root>/s/<si>/.l: 4 bytes, big-endian
# epoch seconds. It is set when a share is stored (l= or the default, never
# shortened by a PUT), set by POST /s/<si>?l=, read by GET /s/<si>?l, and a
# sweep deletes the indexes whose lease has run out. All of it needs the
# node's time (ohnode.epoch): without it nothing is written and nothing
# expires. An index without a readable lease (stored before the node knew
# the time, or by older firmware) gets now + default at the next sweep.
import os
from micropython import const
from ohproto import const as P

_BATCH = const(8)  # indexes handled per directory scan of a sweep
_ENOSPC = const(28)


class Leases:
    def __init__(self, shares, cfg, epoch):
        self._sh = shares
        self.epoch = epoch  # ohnode.epoch.Epoch
        self.default = cfg.get("lease_default", P.LEASE_DEFAULT)  # RR_LEASE overrides
        self.expired = 0  # shares deleted by expiry since boot (ST_EXPIRED)
        self._b = bytearray(5)

    # -- on flash
    def _path(self, si):
        return "%s/%s/.l" % (self._sh.dir, si)

    def read(self, si):
        # Expiry of si in epoch seconds; None when none is recorded (no file,
        # or not 4 bytes).
        try:
            with open(self._path(si), "rb") as f:
                n = f.readinto(self._b)
        except OSError:
            return None
        b = self._b
        return (b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]) if n == 4 else None

    def write(self, si, exp):
        # Written to <root>/s/<si>/.lt, then renamed over .l in the same
        # folder: littlefs renames atomically, so a reset leaves the old
        # lease or the new one, never a torn one (the boot scan removes a
        # left-over .lt).
        p = self._path(si)
        t = p + "t"  # (.lt)
        try:
            with open(t, "wb") as f:
                f.write(min(exp, 0xFFFFFFFF).to_bytes(4, "big"))
            os.rename(t, p)
        except OSError:
            try:
                os.remove(t)
            except OSError:
                pass
            raise

    # -- requests
    def query(self, req):
        # The l= query: seconds, None when absent, -1 when ill-formed.
        for s in req.opt_all(P.OPT_URI_QUERY):
            if s.startswith(P.QUERY_LEASE):
                v = s[2:]
                if not (0 < len(v) <= 10 and v.isdigit()):
                    return -1
                v = int(v)
                return v if v <= P.LEASE_MAX else -1
        return None

    def asked(self, req):
        # GET /s/<si>?l: the lease-info map instead of the share-set.
        return P.QUERY_LEASE_INFO in req.opt_all(P.OPT_URI_QUERY)

    def stored(self, si, secs):
        # A share of si was stored with l=secs (None: the default). The lease
        # becomes now + secs unless it already runs longer. A lease that
        # cannot be written (flash full) stays as it was: the share is kept.
        now = self.epoch.now()
        if now is None:
            return
        exp = now + (self.default if secs is None else secs)
        old = self.read(si)
        if old is None or exp > old:
            try:
                self.write(si, exp)
            except OSError:
                pass

    def renew(self, req, rsp, si):
        # POST /s/<si>?l=<seconds>: the lease becomes now + seconds.
        secs = self.query(req)
        if secs is None or secs < 0:
            return rsp.err(P.BAD_REQUEST, "need l=<seconds>, at most %d" % P.LEASE_MAX)
        if not self._sh.held(si):
            return rsp.err(P.NOT_FOUND, "no shares")
        now = self.epoch.now()
        if now is None:
            return rsp.err(P.SERVICE_UNAVAILABLE, "no time yet")
        try:
            self.write(si, now + secs)
        except OSError as e:
            if e.errno == _ENOSPC:
                return rsp.err(P.SERVICE_UNAVAILABLE, "no space")
            raise
        rsp.code = P.CHANGED
        return self._info(rsp, now + secs, now)

    def info(self, rsp, si):
        # GET /s/<si>?l
        if not self._sh.held(si):
            return rsp.err(P.NOT_FOUND, "no shares")
        return self._info(rsp, self.read(si), self.epoch.now())

    def _info(self, rsp, exp, now):
        from ohproto import cbor

        m = {}
        if exp is not None:
            m[P.LE_EXPIRES] = exp
        if now is not None:
            m[P.LE_NOW] = now
        rsp.add(P.OPT_CONTENT_FORMAT, P.CF_CBOR)
        rsp.pl = cbor.dumps(m)
        return rsp.code

    # -- expiry
    async def sweep(self):
        # Delete every index whose lease has run out (shares, lease, folder),
        # and give a lease to those without one. Yields between indexes, so
        # the server keeps answering. Returns the shares deleted.
        import asyncio

        now = self.epoch.now()
        if now is None:
            return 0
        d = self._sh.dir
        gone = 0
        more = True
        while more:
            # Collect a few names, then act: the directory is not changed
            # while it is being listed.
            due = []
            more = False
            for e in os.ilistdir(d):
                if e[1] != 0x4000:
                    continue
                exp = self.read(e[0])
                if exp is None or exp <= now:
                    if len(due) < _BATCH:
                        due.append((e[0], exp))
                    else:
                        more = True
            for si, exp in due:
                if exp is None:
                    try:
                        self.write(si, now + self.default)
                    except OSError:
                        more = False  # flash full: no endless rescans
                else:
                    k = self._sh.drop(si)
                    self.expired += k
                    gone += k
                await asyncio.sleep_ms(0)
        return gone
