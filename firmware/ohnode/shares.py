# Share store on flash and its resource /s (see protocols/RESOURCES.md).
# Layout: <root>/s/<si base64url>/<shnum>, and the index's lease in
# <root>/s/<si>/.l (ohnode.lease); uploads stream block by block into
# <root>/s/<si>/.up<slot> and are renamed into place once length and SHA-256
# check out, so a crash never leaves a partial share under a real name. The
# temporary is in the share's own folder: a rename within a folder is one
# littlefs commit, across folders it was three (with the lease's, a fifth
# of a board's CPU on 1 MiB puts). Names starting with '.' are never
# shares: listings and counts skip them.
import os
import gc
import binascii
from micropython import const
from ohnode import coap
from ohnode import upload as U
from ohproto import const as P

_SLOTS = const(2)  # concurrent uploads
_IDLE_MS = const(60000)  # an upload silent this long is abandoned
_SYNC_DELETES = const(4)  # DELETE /s/<si> of more files answers separately
_ENOENT = const(2)
# Bytes allocated between collections while an upload runs. Over UDP its
# garbage is the datagrams themselves (1 KB each, dead at once), and with the
# node's usual threshold a collection came every few blocks (measured: 84 ->
# 71 us of board CPU per block); over TCP it is small objects (views, call
# frames), and each collection marks the whole heap: at the usual threshold
# that was a third of the board's CPU (an 8 MiB put on 10 boards: boards'
# CPU 1.15-1.20 s -> 0.49-0.65 s). Back to the usual one when none runs.
_UP_GC = const(32768)
# The usual threshold (config gc_threshold): collecting often frees
# short-lived garbage before long-lived objects land between it, which keeps
# 1 KB holes for datagrams and task results on a fragmented heap.
_GC = const(2048)


def _si_bytes(s):
    # base64url text (22 characters, no padding) -> the 16-byte index.
    return binascii.a2b_base64(s.replace("-", "+").replace("_", "/") + "==")


_ok = [""]  # the last storage index found canonical (blocks of one share repeat it)


def _si(s):
    # A storage index in a path: canonical base64url of 16 bytes, else
    # ValueError. (It names the folder of the index's shares on flash.)
    if s == _ok[0]:
        return s
    if len(s) != P.SI_TEXT_LEN:
        raise ValueError
    b = _si_bytes(s)
    t = binascii.b2a_base64(b).decode()[:22].replace("+", "-").replace("/", "_")
    if len(b) != P.SI_LEN or t != s:
        raise ValueError
    _ok[0] = s
    return s


def _shnum(s):
    n = int(s)
    if n < 0 or n > P.MAX_SHNUM or str(n) != s:
        raise ValueError
    return n


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _digest(req):
    # The h= query: 32 bytes, None when absent, b"" when ill-formed.
    for s in req.opt_all(P.OPT_URI_QUERY):
        if s.startswith(P.QUERY_HASH):
            try:
                d = binascii.unhexlify(s[2:])
            except ValueError:
                return b""
            return d if len(d) == P.HASH_LEN else b""
    return None


def _burst(req, most):
    # The b= query of a GET: how many blocks to send (1 when absent or bad;
    # at most `most`).
    for s in req.opt_all(P.OPT_URI_QUERY):
        if s.startswith(P.QUERY_BURST) and 2 < len(s) < 7 and s[2:].isdigit():
            return min(int(s[2:]), most)
    return 1


_rm = U.rm


def _names(d):
    # The share files in folder d.
    return [e[0] for e in os.ilistdir(d) if e[0][0] != "."]


def _count(d):
    k = 0
    for e in os.ilistdir(d):
        if e[0][0] != ".":
            k += 1
    return k


class Shares:
    tcp = None  # the node's ticks when it serves CoAP over TCP (ohnode.tcp)
    def __init__(self, srv, root, cfg, ticks):
        self._srv = srv
        self.dir = root + "/s"  # the share folders (in each: shares, .l, temporaries .up<slot>, .lt)
        self.max_share = cfg.get("max_share", 1 << 20)
        self._maxn = cfg.get("max_shares", 256)
        self._bs = cfg.get("block_size", 4096)
        self._reserve = 4 * self._bs
        self._ticks = ticks  # (ticks_ms, ticks_diff)
        self._up = [None] * _SLOTS
        self.gc_threshold = cfg.get("gc_threshold", _GC)  # the node's usual one (node.py sets it)
        self._lp = ("", 0, "")  # the last share path: (si, shnum, path)
        self.changed = None  # callback when the set of shares changes
        self.lease = None  # ohnode.lease.Leases, set by the node
        self._st = None  # cached (free, total)
        self._due = 0  # bytes promised to uploads since _st was counted
        self.count = 0
        self._scan()

    def _scan(self):
        # Count shares and remove leftovers of uploads and lease writes cut
        # by a reset (.up<slot>, .lt: in the share folders, or at the top as
        # earlier firmware left them).
        d = self.dir
        try:
            os.mkdir(d)
        except OSError:
            pass
        n = 0
        for e in list(os.ilistdir(d)):
            if e[0][0] == ".":
                _rm(d + "/" + e[0])
            elif e[1] == 0x4000:
                sd = d + "/" + e[0]
                k = 0
                for f in list(os.ilistdir(sd)):
                    if f[0][0] != ".":
                        k += 1
                    elif f[0] != ".l":
                        _rm(sd + "/" + f[0])
                if not k:  # made just before a reset cut the upload
                    self._prune(e[0])
                n += k
        self.count = n

    def stat(self):
        # (free, total) bytes of the filesystem. littlefs walks the whole
        # filesystem to count blocks in use (its cost grows with what is
        # stored: 15% of a board's CPU on 1 MiB puts), so it is counted
        # again only after a delete or a failed upload, or when an upload
        # seems not to fit (_fits); in between, each new share's blocks are
        # charged against the count when it is committed.
        if self._st is None:
            s = os.statvfs(self.dir)
            self._due = 0
            # littlefs can count more blocks in use than exist when nearly
            # full, and f_bavail then wraps around: clamp it.
            self._st = (s[0] * (s[4] if s[4] <= s[2] else 0), s[0] * s[2])
        f = self._st[0] - self._due
        return (f if f > 0 else 0), self._st[1]

    def free(self):
        f = self.stat()[0] - self._reserve
        return f if f > 0 else 0

    def _fits(self, need):
        # Whether `need` bytes fit; counted again if the estimate says no.
        if need > self.free():
            self._st = None
        return need <= self.free()

    # -- resource
    def handle(self, req, rsp, path):
        n = len(path)
        m = req.code
        if self.tcp and m == P.GET and P.QUERY_TCP in req.opt_all(P.OPT_URI_QUERY):
            from ohnode import tcp  # ?tcp: a host wants to move shares over TCP

            tcp.on(self._srv, self.tcp)
        if n == 0:
            if m != P.GET:
                return rsp.err(P.METHOD_NOT_ALLOWED, "GET only")
            return self._list(req, rsp)
        if n > 2:
            return rsp.err(P.NOT_FOUND, "no such resource")
        try:
            si = _si(path[0])
            num = _shnum(path[1]) if n == 2 else None
        except ValueError:
            return rsp.err(P.BAD_REQUEST, "bad storage index or share number")
        if n == 1:
            lz = self.lease
            if m == P.GET:
                if lz and req.opt(P.OPT_URI_QUERY) is not None and lz.asked(req):
                    return lz.info(rsp, si)
                return self._set(req, rsp, si)
            if m == P.DELETE:
                return self._delete_all(rsp, si)
            if m == P.POST and lz:
                return lz.renew(req, rsp, si)
            return rsp.err(P.METHOD_NOT_ALLOWED, "GET, POST or DELETE")
        p = self._lp
        if p[0] != si or p[1] != num:  # (the blocks of one share repeat it)
            p = self._lp = (si, num, "%s/%s/%d" % (self.dir, si, num))
        p = p[2]
        if m == P.GET:
            return self._get(req, rsp, p)
        if m == P.PUT:
            return self._put(req, rsp, si, p)
        if m == P.DELETE:
            return self._delete(rsp, si, p)
        return rsp.err(P.METHOD_NOT_ALLOWED, "GET, PUT or DELETE")

    def _entries(self, si):
        d = self.dir + "/" + si
        return [[int(e[0]), e[3]] for e in os.ilistdir(d) if e[0][0] != "."]

    def held(self, si):
        # Number of shares of si on this node.
        try:
            return _count(self.dir + "/" + si)
        except OSError:
            return 0

    def _list(self, req, rsp):
        from ohproto import cbor

        out = []
        for e in os.ilistdir(self.dir):
            if e[1] == 0x4000:
                out.append([_si_bytes(e[0]), self._entries(e[0])])
        free, total = self.stat()
        body = cbor.dumps(
            {P.LS_FREE: free, P.LS_TOTAL: total, P.LS_COUNT: self.count,
             P.LS_SHARES: out, P.LS_MAX_SHARE: self.max_share}
        )
        return self._body(req, rsp, body)

    def _body(self, req, rsp, body):
        rsp.add(P.OPT_CONTENT_FORMAT, P.CF_CBOR)

        def rd(off, mv):
            mv[:] = body[off : off + len(mv)]
            return mv

        return self._srv.block2(req, rsp, len(body), rd)

    def _set(self, req, rsp, si):
        from ohproto import cbor

        try:
            ents = self._entries(si)
        except OSError:
            ents = None
        if not ents:
            return rsp.err(P.NOT_FOUND, "no shares")
        return self._body(req, rsp, cbor.dumps(ents))

    def _get(self, req, rsp, p):
        try:
            f = open(p, "rb")
        except OSError:
            return rsp.err(P.NOT_FOUND, "no such share")
        size = f.seek(0, 2)

        def rd(off, mv):
            f.seek(off)
            f.readinto(mv)
            return mv

        rsp.add(P.OPT_CONTENT_FORMAT, P.CF_OCTET_STREAM)
        tcp = req.tcp is not None
        try:
            # over TCP, b= bounds a BERT answer instead (0: as the node likes)
            code = self._srv.block2(req, rsp, size, rd, _burst(req, P.BERT_MAX) if tcp else 1)
        except Exception:
            f.close()
            raise
        if tcp and rsp.big:  # streamed by the connection, which closes f after
            rsp.fin = f.close
            return code
        n = 0 if tcp else _burst(req, P.BURST_MAX)
        if n > 1 and code == P.CONTENT:
            # ?b=n: the n-1 blocks after this one follow as NON responses
            # with the same token (after the answer itself), then f closes.
            def tail(srv, m):
                try:
                    srv.burst(m, size, rd, n)
                finally:
                    f.close()

            rsp.tail = tail
        else:
            f.close()
        return code

    def _delete(self, rsp, si, p):
        try:
            os.remove(p)
        except OSError:
            return rsp.err(P.NOT_FOUND, "no such share")
        self.count -= 1
        self._prune(si)
        rsp.code = P.DELETED
        self._st = None
        self._changed()

    def _delete_all(self, rsp, si):
        d = self.dir + "/" + si
        try:
            names = _names(d)
        except OSError:
            names = ()
        if not names:
            return rsp.err(P.NOT_FOUND, "no shares")
        if len(names) <= _SYNC_DELETES:
            return self._remove(rsp, si, names)

        # Many files: flash erases take a while on a real board, so answer
        # with an empty ACK now and send 2.02 as a separate response
        # (RFC 7252 5.2.2), yielding to other requests between files.
        async def later(r):
            import asyncio

            for nm in names[_SYNC_DELETES:]:
                _rm(d + "/" + nm)
                self.count -= 1
                await asyncio.sleep_ms(0)
            self._remove(r, si, names[:_SYNC_DELETES])

        rsp.later = later

    def _remove(self, rsp, si, names):
        self.drop(si, names)
        rsp.code = P.DELETED

    def drop(self, si, names=None):
        # Delete the shares `names` (default: all) of si, and its folder and
        # lease once no share is left; returns how many were deleted.
        d = self.dir + "/" + si
        if names is None:
            names = _names(d)
        for nm in names:
            _rm(d + "/" + nm)
        self.count -= len(names)
        self._prune(si)
        self._st = None
        self._changed()
        return len(names)

    def _prune(self, si):
        # Remove the folder of si, with its lease, when it holds no share.
        # The lease goes last: a reset before leaves a folder without shares,
        # which the next boot prunes (_scan).
        d = self.dir + "/" + si
        try:
            if _count(d):
                return
            _rm(d + "/.l")
            os.rmdir(d)
        except OSError:
            pass

    def _changed(self):
        if self.changed:
            self.changed()

    # -- uploads (RFC 7959 2.5: Block1)
    def _find(self, peer, key):
        for u in self._up:
            if u is not None and u.key == key and u.peer == peer:
                return u
        return None

    def _gc(self):
        # The GC threshold: _UP_GC while any upload runs, else the usual.
        for u in self._up:
            if u is not None:
                gc.threshold(_UP_GC)
                return
        gc.threshold(self.gc_threshold)

    def _drop(self, u):
        self._st = None
        u.drop()
        self._up[self._up.index(u)] = None
        self._gc()
        k = u.key
        self._prune(k[len(self.dir) + 1 : k.rfind("/")])  # (its folder, if no share is left in it)

    def _expire(self, now):
        diff = self._ticks[1]
        for u in self._up:
            if u is not None and diff(now, u.t) > _IDLE_MS:
                self._drop(u)

    def _start(self, req, rsp, key, size, now):
        digest = _digest(req)  # may come with the last block instead
        if digest == b"":
            rsp.err(P.BAD_REQUEST, "h= must be 64 hex digits")
            return None
        if self.count + self._active() >= self._maxn and not _exists(key):
            # (replacing a share, as a repair does, is fine at the limit)
            rsp.err(P.SERVICE_UNAVAILABLE, "share limit reached")
            return None
        need = size if size is not None else len(req.pl) + req.rest
        srv = self._srv
        if P.PATH_TASKS in srv.res or P.PATH_CODE in srv.res:
            srv.more(None)  # an idle task machinery gives its heap to the upload
        if not self._fits(need):
            rsp.err(P.SERVICE_UNAVAILABLE, "no space")
            return None
        for i in range(_SLOTS):
            if self._up[i] is None:
                d = key[: key.rfind("/")]  # the share's folder: its temporary goes there
                try:
                    os.mkdir(d)
                    self._due += 2 * self._bs  # (a folder is a metadata pair)
                except OSError:
                    pass
                gc.collect()  # the file's buffers go low, out of the way
                try:
                    u = U.Upload(req.peer, key, "%s/.up%d" % (d, i), size, now)
                except OSError:  # (no room for the folder or the file)
                    self._st = None
                    self._prune(d[len(self.dir) + 1 :])
                    rsp.err(P.SERVICE_UNAVAILABLE, "no space")
                    return None
                u.digest = digest
                self._up[i] = u
                self._gc()
                return u
        rsp.err(P.SERVICE_UNAVAILABLE, "too many uploads")
        rsp.add(P.OPT_MAX_AGE, 5)
        return None

    def _active(self):
        return _SLOTS - self._up.count(None)

    def _too_large(self, rsp):
        rsp.err(P.REQUEST_ENTITY_TOO_LARGE, "share too large")
        rsp.add(P.OPT_SIZE1, self.max_share)
        return rsp.code

    def _put(self, req, rsp, si, p):
        b = U.block(req, rsp)
        if b is None:
            return rsp.code
        b1, num, more, szx = b
        pl = req.pl
        ln = len(pl) + req.rest
        now = self._ticks[0]()
        u = self._find(req.peer, p)
        if u is not None and self._ticks[1](now, u.t) > _IDLE_MS:
            self._drop(u)  # this one was abandoned
            u = None
        if u is None:  # (the others matter when one starts)
            self._expire(now)
        if num == 0:
            if u is not None:  # a new transfer of the same share restarts
                self._drop(u)
            if not self._precondition(req, p):
                return rsp.err(P.PRECONDITION_FAILED, "precondition failed")
            size = req.opt_uint(P.OPT_SIZE1)
            if (size is not None and size > self.max_share) or ln > self.max_share:
                return self._too_large(rsp)
            lq = self._lq(req)
            if lq == -1:
                return rsp.err(P.BAD_REQUEST, "l= must be seconds, at most %d" % P.LEASE_MAX)
            u = self._start(req, rsp, p, size, now)
            if u is None:
                return rsp.code
            u.lease = lq
        elif u is None:
            return rsp.err(P.REQUEST_ENTITY_INCOMPLETE, "no upload in progress")
        if num and not more:  # the hash and lease may come with the last block
            # (one-pass uploads; read before its payload: a streamed one
            # reuses the options' buffer)
            d = _digest(req)
            if d == b"" or (d and u.digest and d != u.digest):
                self._drop(u)
                return rsp.err(P.BAD_REQUEST, "h= ill-formed or changed")
            u.digest = d or u.digest
            lq = self._lq(req)  # so may l=; the last block's wins
            if lq == -1:
                self._drop(u)
                return rsp.err(P.BAD_REQUEST, "l= must be seconds, at most %d" % P.LEASE_MAX)
            if lq is not None:
                u.lease = lq
        code = U.take(u, self, rsp, b1, num, more, szx, pl, req.rest, self.max_share, now)
        if code is not None:
            if u.f is None:
                self._drop(u)
            return code
        if req.rest:  # a BERT block: the rest comes from the connection
            rsp.later = req.tcp.upload(self, u, (si, p, b1, num, more, szx))
            return None
        return self._put_end(rsp, u, si, p, b1, num, more, szx)

    def _put_end(self, rsp, u, si, p, b1, num, more, szx):
        if more:
            return U.ack(self._srv, rsp, b1, num, more, szx)
        if not u.digest:
            self._drop(u)
            return rsp.err(P.BAD_REQUEST, "need h=<sha256 hex> query")
        return self._commit(rsp, u, si, p, b1, num, szx)

    def _lq(self, req):
        # The l= query (lease seconds): None when absent or no leases, -1 bad.
        lz = self.lease
        return lz.query(req) if lz else None

    def _precondition(self, req, p):
        # If-None-Match: only create. If-Match: empty value = only replace;
        # shares carry no ETags, so any other value cannot match.
        if req.opt(P.OPT_IF_NONE_MATCH) is not None and _exists(p):
            return False
        for n, v in req.opts:
            if n == P.OPT_IF_MATCH and (len(v) or not _exists(p)):
                return False
        return True

    def _commit(self, rsp, u, si, p, b1, num, szx):
        if U.finish(u, rsp) is not None:
            self._drop(u)
            return rsp.code
        if u.h.digest() != u.digest:
            self._drop(u)
            return rsp.err(P.BAD_REQUEST, "hash mismatch")
        old = _exists(p)
        try:
            os.rename(u.tmp, p)  # atomic, replacing any old share (littlefs)
        except OSError:
            self._drop(u)
            return rsp.err(P.SERVICE_UNAVAILABLE, "no space")
        self._up[self._up.index(u)] = None
        self._gc()
        if old:  # (the old one's blocks are free again)
            self._st = None
        else:
            self.count += 1
            self._due += (u.off // self._bs + 2) * self._bs  # its blocks, one more for pointers and metadata
        if self.lease:
            self.lease.stored(si, u.lease)
        rsp.code = P.CHANGED if old else P.CREATED
        if b1 is not None:
            rsp.add(P.OPT_BLOCK1, coap.block_val(num, 0, szx))
        self._changed()
        return rsp.code
