# The code cache on flash and its resource /c (protocols/RESOURCES.md "Tasks
# and code"): compiled task modules stored by SHA-256, <root>/c/<64 hex>.mpy,
# at most `code_cache` bytes in all, the least recently used evicted first.
# An upload streams block by block into <root>/c/.up and is renamed into
# place once its SHA-256 matches the name, so a reset never leaves a partial
# module under a real name. Made on the first request to /c and unloaded
# once it has answered with no upload in progress (ohnode.lazy); ohnode.tasks
# reads the files and records their use.
import os
import binascii
from micropython import const
from ohnode import upload as U
from ohnode.shares import _exists
from ohproto import const as P

_IDLE_MS = const(60000)  # an upload silent this long is abandoned
_rm = U.rm


class CodeCache:
    def __init__(self, srv, root, cfg, ticks):
        self._srv = srv
        self.dir = root + "/c"
        self.max = cfg.get("code_cache", 65536)
        self._ticks = ticks  # (ticks_ms, ticks_diff)
        self._tmp = self.dir + "/.up"
        self._u = None  # the upload in progress (one at a time: modules are small)
        self.t = ticks[0]()  # last request (ohnode.lazy unloads us when idle)
        try:
            os.mkdir(self.dir)
        except OSError:
            pass
        _rm(self._tmp)  # an upload cut by a reset

    def busy(self):
        # An upload in progress (one silent for _IDLE_MS is abandoned).
        if self._u is not None and self._ticks[1](self._ticks[0](), self._u.t) > _IDLE_MS:
            self._cancel()
        return self._u is not None

    def path(self, nm):
        return "%s/%s.mpy" % (self.dir, nm)

    def _mods(self):
        # [(name, size)] of the modules held.
        return [(e[0][:-4], e[3]) for e in os.ilistdir(self.dir) if e[0][0] != "." and e[0].endswith(".mpy")]

    # -- resource
    def handle(self, req, rsp, path):
        self.t = self._ticks[0]()
        code = self._handle(req, rsp, path)
        if self._u is None:  # no upload in progress: unload once answered
            from ohnode.lazy import gone

            rsp.tail = gone
        return code

    def _handle(self, req, rsp, path):
        m = req.code
        if not path:
            if m != P.GET:
                return rsp.err(P.METHOD_NOT_ALLOWED, "GET only")
            return self._list(req, rsp)
        nm = path[0]
        if len(path) != 1 or len(nm) != 64 or nm.strip("0123456789abcdef"):
            return rsp.err(P.BAD_REQUEST, "want /c/<sha256, 64 lowercase hex digits>")
        if m == P.PUT:
            return self._put(req, rsp, nm)
        if m != P.DELETE:
            return rsp.err(P.METHOD_NOT_ALLOWED, "PUT or DELETE")
        if not _exists(self.path(nm)):
            return rsp.err(P.NOT_FOUND, "not cached")
        self._rm(nm)
        rsp.code = P.DELETED
        return rsp.code

    def _list(self, req, rsp):
        from ohproto import cbor

        body = cbor.dumps([binascii.unhexlify(nm) for nm, _ in self._mods()])
        rsp.add(P.OPT_CONTENT_FORMAT, P.CF_CBOR)

        def rd(off, mv):
            mv[:] = body[off : off + len(mv)]
            return mv

        return self._srv.block2(req, rsp, len(body), rd)

    def _evict(self, need, keep):
        # Drop least recently used modules (never `keep`) until `need` more
        # bytes fit the cache: first those no task ran since the task
        # machinery loaded, oldest file first, then in the order tasks last
        # ran them.
        mods = self._mods()
        total = 0
        for nm, n in mods:
            if nm != keep:
                total += n
        if total + need <= self.max:
            return
        t = self._srv.res.get(P.PATH_TASKS)
        r = t.recent if t else ()  # what tasks ran lately, while loaded

        def age(e):
            nm = e[0]
            if nm in r:
                return (1, r.index(nm))
            try:
                return (0, os.stat(self.path(nm))[8])
            except OSError:
                return (0, 0)

        mods.sort(key=age)
        for nm, n in mods:
            if total + need <= self.max:
                return
            if nm != keep:
                self._rm(nm)
                total -= n

    def _rm(self, nm):
        # Module nm out of the cache, and out of the task machinery's hands.
        _rm(self.path(nm))
        t = self._srv.res.get(P.PATH_TASKS)
        if t is not None:
            t.revoke(nm)

    # -- uploads (RFC 7959 2.5: Block1, the rules of share uploads)
    def _cancel(self):
        self._u.drop()
        self._u = None

    def _put(self, req, rsp, nm):
        b = U.block(req, rsp)
        if b is None:
            return rsp.code
        b1, num, more, szx = b
        ln = len(req.pl)
        now = self._ticks[0]()
        u = self._u
        up = u is not None and u.peer == req.peer and u.key == nm
        if u is not None and not up:
            if self._ticks[1](now, u.t) <= _IDLE_MS:
                if num == 0:
                    rsp.err(P.SERVICE_UNAVAILABLE, "another upload in progress")
                    rsp.add(P.OPT_MAX_AGE, 5)
                    return rsp.code
                return rsp.err(P.REQUEST_ENTITY_INCOMPLETE, "no upload in progress")
            self._cancel()
        if num == 0:
            if up:  # a new transfer of the same module restarts
                self._cancel()
            size = req.opt_uint(P.OPT_SIZE1)
            if (size is not None and size > self.max) or ln > self.max:
                return self._too_large(rsp)
            self._evict(size or ln, nm)
            u = self._u = U.Upload(req.peer, nm, self._tmp, size, now)
        elif not up:
            return rsp.err(P.REQUEST_ENTITY_INCOMPLETE, "no upload in progress")
        code = U.take(u, self, rsp, b1, num, more, szx, req.pl, 0, self.max, now)
        if code is not None:
            if u.f is None:
                self._u = None
            return code
        if more:
            return U.ack(self._srv, rsp, b1, num, more, szx)
        # The last block: length, hash, room, then the rename into place.
        if U.finish(u, rsp) is not None:
            self._u = None
            return rsp.code
        if binascii.hexlify(u.h.digest()).decode() != nm:
            self._cancel()
            return rsp.err(P.BAD_REQUEST, "hash mismatch")
        self._u = None
        self._evict(u.off, nm)
        old = _exists(self.path(nm))
        try:
            os.rename(self._tmp, self.path(nm))  # atomic (littlefs)
        except OSError:
            _rm(self._tmp)
            return rsp.err(P.SERVICE_UNAVAILABLE, "no space")
        U.ack(self._srv, rsp, b1, num, 0, szx)
        if not old:
            rsp.code = P.CREATED
        return rsp.code

    def _too_large(self, rsp):
        rsp.err(P.REQUEST_ENTITY_TOO_LARGE, "code cache holds %d bytes" % self.max)
        rsp.add(P.OPT_SIZE1, self.max)
        return rsp.code
