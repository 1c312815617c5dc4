# The code cache on flash and its resource /c (protocols/RESOURCES.md "Tasks
# and code"): compiled task modules stored by SHA-256, <root>/c/<64 hex>.mpy,
# at most `code_cache` bytes in all, the least recently used evicted first.
# An upload streams block by block into <root>/c/.up and is renamed into
# place once its SHA-256 matches the name, so a reset never leaves a partial
# module under a real name. Made on the first request to /c and unloaded
# once it has answered with no upload in progress (ohnode.lazy); ohnode.tasks
# reads the files and records their use.
import os
import hashlib
import binascii
from micropython import const
from ohnode import coap
from ohnode.shares import _rm, _exists
from ohproto import const as P

_IDLE_MS = const(60000)  # an upload silent this long is abandoned
_ENOSPC = const(28)


class CodeCache:
    def __init__(self, srv, root, cfg, ticks):
        self._srv = srv
        self.dir = root + "/c"
        self.max = cfg.get("code_cache", 65536)
        self._ticks = ticks  # (ticks_ms, ticks_diff)
        self._tmp = self.dir + "/.up"
        # The upload in progress (one at a time: modules are small): its
        # file (None: no upload), peer, module name, hash, Size1, bytes
        # taken, ticks_ms of its last block.
        self._f = None
        self._peer = self._nm = self._h = self._size = None
        self._off = self._t = 0
        self.t = ticks[0]()  # last request (ohnode.lazy unloads us when idle)
        try:
            os.mkdir(self.dir)
        except OSError:
            pass
        _rm(self._tmp)  # an upload cut by a reset

    def busy(self):
        # An upload in progress (one silent for _IDLE_MS is abandoned).
        if self._f is not None and self._ticks[1](self._ticks[0](), self._t) > _IDLE_MS:
            self._cancel()
        return self._f is not None

    def path(self, nm):
        return "%s/%s.mpy" % (self.dir, nm)

    def _mods(self):
        # [(name, size)] of the modules held.
        return [(e[0][:-4], e[3]) for e in os.ilistdir(self.dir) if e[0][0] != "." and e[0].endswith(".mpy")]

    # -- resource
    def handle(self, req, rsp, path):
        self.t = self._ticks[0]()
        code = self._handle(req, rsp, path)
        if self._f is None:  # no upload in progress: unload once answered
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
        f = self._f
        self._f = None
        try:
            f.close()
        except OSError:
            pass
        _rm(self._tmp)

    def _put(self, req, rsp, nm):
        b1 = req.opt(P.OPT_BLOCK1)
        num, more, szx = (0, 0, P.MAX_BLOCK_SZX) if b1 is None else coap.block_of(b1)
        pl = req.pl
        ln = len(pl)
        bs = 1 << (szx + 4)
        if more and ln != bs:
            return rsp.err(P.BAD_REQUEST, "block size mismatch")
        off = num * bs
        now = self._ticks[0]()
        up = self._f is not None and self._peer == req.peer and self._nm == nm
        if self._f is not None and not up:
            if self._ticks[1](now, self._t) <= _IDLE_MS:
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
            self._f = open(self._tmp, "wb")
            self._peer = req.peer
            self._nm = nm
            self._h = hashlib.sha256()
            self._size = size
            self._off = 0
        elif not up:
            return rsp.err(P.REQUEST_ENTITY_INCOMPLETE, "no upload in progress")
        elif off + ln <= self._off and more:  # a block sent again: taken already
            return self._ack(rsp, b1, num, more, szx)
        elif off != self._off:
            rsp.err(P.REQUEST_ENTITY_INCOMPLETE, "block out of sequence")
            rsp.add(P.OPT_BLOCK1, coap.block_val(self._off >> (szx + 4), 1, szx))
            return rsp.code
        if self._off + ln > self.max:
            self._cancel()
            return self._too_large(rsp)
        if self._size is not None and self._off + ln > self._size:
            self._cancel()
            return rsp.err(P.BAD_REQUEST, "more data than Size1")
        try:
            self._f.write(pl)
        except OSError as e:
            self._cancel()
            if e.errno == _ENOSPC:
                return rsp.err(P.SERVICE_UNAVAILABLE, "no space")
            raise
        self._h.update(pl)
        self._off += ln
        self._t = now
        if more:
            return self._ack(rsp, b1, num, more, szx)
        # The last block: length, hash, room, then the rename into place.
        self._f.close()
        if self._size is not None and self._size != self._off:
            self._cancel()
            return rsp.err(P.BAD_REQUEST, "length mismatch")
        if binascii.hexlify(self._h.digest()).decode() != nm:
            self._cancel()
            return rsp.err(P.BAD_REQUEST, "hash mismatch")
        self._f = self._h = None
        self._evict(self._off, nm)
        old = _exists(self.path(nm))
        try:
            os.rename(self._tmp, self.path(nm))  # atomic (littlefs)
        except OSError:
            _rm(self._tmp)
            return rsp.err(P.SERVICE_UNAVAILABLE, "no space")
        self._ack(rsp, b1, num, 0, szx)
        if not old:
            rsp.code = P.CREATED
        return rsp.code

    def _too_large(self, rsp):
        rsp.err(P.REQUEST_ENTITY_TOO_LARGE, "code cache holds %d bytes" % self.max)
        rsp.add(P.OPT_SIZE1, self.max)
        return rsp.code

    def _ack(self, rsp, b1, num, more, szx):
        if more:
            rsp.code = P.CONTINUE
            rsp.add(P.OPT_BLOCK1, coap.block_val(num, 1, min(szx, self._srv.szx)))
        else:
            rsp.code = P.CHANGED
            if b1 is not None:
                rsp.add(P.OPT_BLOCK1, coap.block_val(num, 0, szx))
        return rsp.code
