# Resource /t: tasks (protocols/RESOURCES.md "Tasks and code").
#   POST /t              run a function of a module in the code cache (/c)
#   GET /t/<id>          its result map (observable until it is final)
#   DELETE /t/<id>       cancel a queued task, or forget a finished one
# A task runs to the end once started (MicroPython cannot pre-empt it): with
# builtins.__import__ swapped for an allow-list importer, under a watchdog
# armed for its time limit, its exceptions caught and reported as results.
# Made on first use and unloaded when idle (ohnode.lazy), when the last
# _KEEP results it keeps go too; the count of tasks run and the lost task
# stay in Status.
import os
import gc
import sys
import builtins
import hashlib
import binascii
from micropython import const
from ohproto import const as P
from ohproto import compute as C
from ohproto import cbor
from ohnode.shares import _exists

_KEEP = const(4)  # finished results kept...
_KEEP_BYTES = const(768)  # ... while they take at most this much (the newest always)
_MARGIN_MS = const(2000)  # watchdog beyond the task's time limit (loading, answering)
_TIME_MS = const(10000)  # time limit of a request without TK_TIME
_TIME_MAX = const(86400000)
_RESERVE = const(2048)  # heap a task may not count on: the node must still answer
_MSG = const(80)  # characters of an error message kept
_BUSY_S = const(1)  # Max-Age of a 5.03 busy: tasks run right after answering
_BATCH_BYTES = const(900)  # the results of a batch fit one datagram (and a small heap)
_RECENT = const(8)  # modules whose last use is remembered (the cache's eviction order)
# entry fields: [id, state, result body, request, request digest]
_ID = const(0)
_ST = const(1)
_BODY = const(2)
_REQ = const(3)
_DIG = const(4)

# What a task may import, also with the u prefix of older ports (ujson).
# Names of built-in modules: their strings cost no heap.
_ALLOWED = ("math", "cmath", "struct", "hashlib", "binascii", "json", "re", "collections",
            "heapq", "random", "array", "errno", "time")


class _MicroPython:
    # What a task gets for `import micropython`: const() alone.
    @staticmethod
    def const(x):
        return x


def _uint(v, top):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top


class Tasks:
    def __init__(self, srv, root, cfg, plat, st, wdt_ms):
        self._srv = srv
        self._root = root
        self._max = cfg.get("tasks", 1)
        self._lie = cfg.get("lie", False)  # test-only: wrong answers (--replicas)
        self._plat = plat  # wdt_start(ms, task), ticks
        self._st = st  # Status: .done (tasks run since boot), .lost
        self._wdt = wdt_ms  # the watchdog's timeout between tasks
        self._all = []  # entries, oldest first
        self._mod = None  # (name, module, hash): the last task module, kept loaded
        self._imp = None  # builtins.__import__ outside tasks
        self._note = None  # the entry whose observers are being notified
        self.recent = []  # modules run lately, most recent last (the code cache's eviction order)
        self._ran = False  # a task was accepted since we loaded
        self.t = plat.ticks[0]()  # last request (ohnode.lazy unloads us when idle)
        if st.lost is not None:
            b = self._result(st.lost, C.TS_LOST, None, ("Watchdog", "the board was reset while the task ran"), None)
            self._all.append([st.lost, C.TS_LOST, b, None, None])

    def current(self):
        # The entry of the first task accepted and not finished yet, or None.
        for e in self._all:
            if e[_ST] < C.TS_DONE:
                return e
        return None

    busy = current  # (ohnode.lazy: not unloaded while a task waits)

    def revoke(self, nm):
        # Module nm left the code cache (DELETE /c/<hex>, eviction): a task
        # may no longer run the copy kept loaded.
        if self._mod is not None and self._mod[0] == nm:
            self._mod = None

    # -- resource
    def handle(self, req, rsp, path):
        self.t = self._plat.ticks[0]()
        code = self._handle(req, rsp, path)
        if not self._ran:  # no task accepted since we loaded: unload once answered
            from ohnode.lazy import gone

            rsp.tail = gone
        return code

    def _handle(self, req, rsp, path):
        m = req.code
        if not path:
            if m != P.POST:
                return rsp.err(P.METHOD_NOT_ALLOWED, "POST only")
            return self._post(req, rsp)
        s = path[0]
        e = None
        if len(path) == 1 and 0 < len(s) < 11 and s.isdigit():
            e = self._find(int(s))
        if e is None:
            return rsp.err(P.NOT_FOUND, "no such task")
        if m == P.GET:
            if e[_ST] < C.TS_DONE:  # a final state never changes: not observed
                self._srv.observe(req, rsp, e[_ID])
            return self.notify(rsp, e)
        if m != P.DELETE:
            return rsp.err(P.METHOD_NOT_ALLOWED, "GET or DELETE")
        if e[_ST] == C.TS_QUEUED:
            self._state(e, C.TS_CANCELLED, self._result(e[_ID], C.TS_CANCELLED, None, None, None))
        else:
            self._forget(e, True)
        rsp.code = P.DELETED
        return rsp.code

    def notify(self, rsp, e=None):
        # The result map of e (default: the entry being notified).
        e = e or self._note
        rsp.code = P.CONTENT
        rsp.add(P.OPT_CONTENT_FORMAT, P.CF_CBOR)
        b = e[_BODY]
        rsp.pl = b if b is not None else self._result(e[_ID], e[_ST], None, None, None)
        return rsp.code

    def _post(self, req, rsp):
        if req.opt_uint(P.OPT_BLOCK1, 0) & 8:
            return rsp.err(P.REQUEST_ENTITY_TOO_LARGE, "a task request fits one datagram")
        try:
            q = cbor.loads(req.pl)
        except ValueError:
            return rsp.err(P.BAD_REQUEST, "not CBOR")
        if not isinstance(q, dict):
            return rsp.err(P.BAD_REQUEST, "not a map")
        code = q.get(C.TK_CODE)
        func = q.get(C.TK_FUNC)
        args = q.get(C.TK_ARGS, [])
        tid = q.get(C.TK_ID)
        ms = q.get(C.TK_TIME, _TIME_MS)
        heap = q.get(C.TK_HEAP, 0)
        wait = q.get(C.TK_WAIT, False)
        rng = q.get(C.TK_RANGE)
        more = q.get(C.TK_MORE)
        bad = None
        if not isinstance(code, bytes) or len(code) != P.HASH_LEN:
            bad = C.TK_CODE
        elif not isinstance(func, str) or not func:
            bad = C.TK_FUNC
        elif not isinstance(args, list):
            bad = C.TK_ARGS
        elif not _uint(tid, 0xFFFFFFFF):
            bad = C.TK_ID
        elif not _uint(ms, _TIME_MAX) or not ms:
            bad = C.TK_TIME
        elif not _uint(heap, 0xFFFFFFFF):
            bad = C.TK_HEAP
        elif wait is not True and wait is not False:
            bad = C.TK_WAIT
        elif rng is not None and not (
            isinstance(rng, list) and len(rng) == 6 and _uint(rng[1], P.MAX_SHNUM)
            and _uint(rng[2], 0xFFFFFFFF) and _uint(rng[3], 0xFFFFFFFF)
            and all(isinstance(b, bytes) and len(b) == 16 for b in (rng[0], rng[4], rng[5]))
        ):
            bad = C.TK_RANGE
        elif more is not None and not (
            wait is True and rng is None and isinstance(more, list) and 0 < len(more) <= C.BATCH_MAX
            and tid + len(more) <= 0xFFFFFFFF and all(isinstance(a, list) for a in more)
        ):
            bad = C.TK_MORE
        if bad is not None:
            return rsp.err(P.BAD_REQUEST, "task request key %d missing or bad" % bad)
        dig = hashlib.sha256(req.pl).digest()[:8]
        n = 0  # tasks accepted, not finished
        old = None
        for e in self._all:
            if e[_ID] == tid:
                old = e
            elif e[_ST] < C.TS_DONE:
                n += 1
        if old is not None:
            if (old[_DIG] == dig and old[_ST] != C.TS_CANCELLED) or old[_ST] == C.TS_LOST:
                # The same request again (a retransmission, a rerun):
                # answered from what the board has, not run twice; and the
                # task that got the board reset is not run again.
                if more is not None:
                    return self._batch_answer(rsp, self._kept(tid, 1 + len(more)))
                return self._answer(rsp, old, wait)
            if old[_ST] < C.TS_DONE:
                return self._answer(rsp, None, wait)
            self._forget(old, True)  # a new request under an old id
        mod = self._mod
        if mod is not None and mod[2] == code:  # the module kept loaded: it is
            nm = mod[0]  # in the cache (the cache's DELETE and eviction drop it)
        else:
            nm = binascii.hexlify(code).decode()
            if not _exists("%s/c/%s.mpy" % (self._root, nm)):
                return rsp.err(P.NOT_FOUND, "code not cached")
        if n >= self._max:
            return self._answer(rsp, None, wait)
        need = heap
        if rng is not None:
            # its share's file: the storage index in base64url
            si = binascii.b2a_base64(rng[0]).decode()[:22].replace("+", "-").replace("/", "_")
            rng.append("%s/s/%s/%d" % (self._root, si, rng[1]))
            try:
                size = os.stat(rng[6])[6]
            except OSError:
                return rsp.err(P.NOT_FOUND, "no such share")
            if rng[2] + rng[3] > size:
                return rsp.err(P.BAD_REQUEST, "range beyond the share")
            need += 2 * rng[3]  # the bytes read, then the plaintext given
        if need:
            if need > gc.mem_free() - _RESERVE:
                gc.collect()
            f = gc.mem_free() - _RESERVE
            if need > f:
                return rsp.err(P.REQUEST_ENTITY_TOO_LARGE, "heap: %d free for a task" % (f if f > 0 else 0))
        e = [tid, C.TS_QUEUED, None, (nm, func, args, ms, rng), dig]
        self._all.append(e)
        self._ran = True
        if P.PATH_CODE in self._srv.res:  # its heap is the task's now
            from ohnode.lazy import drop

            drop(self._srv, P.PATH_CODE)
        if more is not None:
            return self._batch(rsp, e, more)
        if wait:
            self._run(e)
        else:
            import asyncio

            asyncio.create_task(self._later())
        return self._answer(rsp, e, wait)

    # -- batches (TK_MORE): tasks TK_ID, TK_ID + 1, ... of one function, run
    # now, one after another, their results in one answer
    def _batch(self, rsp, e, more):
        tid, _, _, req, dig = e
        out = [self._run(e)]
        k = big = len(out[0])
        for i in range(len(more)):
            if k + big + 16 > _BATCH_BYTES:  # the next result (as large as the largest) might not fit
                break
            t = tid + 1 + i
            x = self._find(t)
            if x is not None:
                if x[_ST] == C.TS_LOST:  # the task that got the board reset: not run again
                    b = x[_BODY]
                    if k + len(b) > _BATCH_BYTES:
                        break
                    out.append(b)
                    k += len(b)
                    continue
                if x[_ST] < C.TS_DONE:
                    break
                self._forget(x, True)  # a new request under an old id
            x = [t, C.TS_QUEUED, None, (req[0], req[1], more[i], req[3], None), dig]
            more[i] = None
            self._all.append(x)
            b = self._run(x)
            if k + len(b) > _BATCH_BYTES:  # no room: the host sends it again (it runs again)
                break
            out.append(b)
            k += len(b)
            if len(b) > big:
                big = len(b)
        return self._batch_answer(rsp, out)

    def _kept(self, tid, n):
        # The finished results of tasks tid, tid + 1, ... still kept, up to
        # the first one that is not (a batch asked again).
        out = []
        for t in range(tid, tid + n):
            x = self._find(t)
            if x is None or x[_ST] < C.TS_DONE:
                break
            out.append(x[_BODY])
        return out

    def _find(self, tid):
        for x in self._all:
            if x[_ID] == tid:
                return x
        return None

    @staticmethod
    def _batch_answer(rsp, bodies):
        # 2.05 with the task-results array of the result maps in bodies.
        n = len(bodies)
        k = 2 if n > 23 else 1
        for x in bodies:
            k += len(x)
        b = bytearray(k)  # (one allocation: a growing one leaves holes in the heap)
        if n > 23:
            b[0] = 0x98
            b[1] = n
        else:
            b[0] = 0x80 | n
        k = 2 if n > 23 else 1
        for x in bodies:
            b[k : k + len(x)] = x
            k += len(x)
        rsp.code = P.CONTENT
        rsp.add(P.OPT_CONTENT_FORMAT, P.CF_CBOR)
        rsp.pl = b
        return rsp.code

    def _answer(self, rsp, e, wait):
        # The answer to a POST: the result (wait), 2.01, or 5.03 busy (no e).
        if e is None:
            rsp.err(P.SERVICE_UNAVAILABLE, "busy")
            rsp.add(P.OPT_MAX_AGE, _BUSY_S)
            return rsp.code
        if wait:
            return self.notify(rsp, e)
        rsp.code = P.CREATED
        rsp.add(P.OPT_LOCATION_PATH, P.PATH_TASKS)
        rsp.add(P.OPT_LOCATION_PATH, str(e[_ID]))
        return rsp.code

    async def _later(self):
        # Run the oldest queued task once the answer has gone out.
        import asyncio

        await asyncio.sleep_ms(0)
        for e in self._all:
            if e[_ST] == C.TS_QUEUED:
                self._run(e)
                return

    def _state(self, e, st, body):
        # A new state for entry e, told to its observers; a final one ends
        # them, and the oldest results beyond _KEEP (or _KEEP_BYTES) go.
        e[_ST] = st
        e[_BODY] = body
        srv = self._srv
        if srv.obs:
            self._note = e
            srv.notify(e[_ID], self)
            self._note = None
        if st < C.TS_DONE:
            return
        e[_REQ] = None
        self._forget(e, False)
        k = n = 0
        for x in self._all:
            if x[_ST] >= C.TS_DONE:
                k += 1
                n += len(x[_BODY])
        while k > _KEEP or (n > _KEEP_BYTES and k > 1):
            for x in self._all:
                if x[_ST] >= C.TS_DONE:
                    self._all.remove(x)
                    k -= 1
                    n -= len(x[_BODY])
                    break

    def _forget(self, e, drop):
        # End the observations of e (its state does not change again); drop:
        # forget e too.
        obs = self._srv.obs
        for o in list(obs) if obs else ():
            if o[0] == e[_ID]:
                obs.remove(o)
        if drop:
            self._all.remove(e)

    @staticmethod
    def _result(tid, st, vb, err, ms):
        # The result map (schema task-result), its keys all below 24. vb is
        # the value, CBOR-encoded already.
        out = bytearray()
        out.append(0xA2 + (vb is not None or err is not None) + (ms is not None))
        out.append(C.TR_ID)
        cbor.encode_into(out, tid)
        out.append(C.TR_STATE)
        out.append(st)
        if vb is not None:
            out.append(C.TR_VALUE)
            out.extend(vb)
        elif err is not None:
            out.append(C.TR_ERROR)
            cbor.encode_into(out, err)
        if ms is not None:
            out.append(C.TR_MS)
            cbor.encode_into(out, ms)
        return bytes(out)

    # -- running
    def _run(self, e):
        # Run task e to its end: the share range's plaintext first (TK_RANGE),
        # then the module (kept from the last task, or imported from the code
        # cache; never left in sys.modules) and the call, with the allow-list
        # importer in place for both and the watchdog armed for the time limit.
        nm, func, args, ms, rng = e[_REQ]
        self._state(e, C.TS_RUNNING, None)
        plat = self._plat
        t0 = plat.ticks[0]()
        r = self.recent  # the order the code cache evicts in
        if not r or r[-1] != nm:
            if nm in r:
                r.remove(nm)
            elif len(r) >= _RECENT:
                r.pop(0)
            r.append(nm)
        vb = err = None
        imp = self._imp = builtins.__import__
        try:
            # The id is remembered across a reset: a task that never returns
            # comes back as ST_TASK_LOST and TS_LOST once the watchdog has
            # restarted the board.
            plat.wdt_start(ms + _MARGIN_MS, e[_ID])
            if rng is not None:
                from ohnode import ctr

                buf = bytearray(rng[3])
                with open(rng[6], "rb") as f:
                    f.seek(rng[2])
                    if f.readinto(buf) != len(buf):
                        raise ValueError("range beyond the share")
                ctr.xor(rng[4], rng[5], buf)
                args = [bytes(buf)] + args
                buf = None
            builtins.__import__ = self._import
            try:
                mod = self._mod
                if mod is None or mod[0] != nm:
                    mod = self._mod = None
                    d = self._root + "/c"
                    sys.path.append(d)  # (while the module and its imports load)
                    n = len(sys.modules)
                    try:
                        mod = (nm, imp(nm), binascii.unhexlify(nm))
                    finally:
                        sys.path.remove(d)
                        if len(sys.modules) != n:
                            for k in list(sys.modules):
                                if len(k) == 64 and not k.strip("0123456789abcdef"):
                                    del sys.modules[k]
                    self._mod = mod
                v = getattr(mod[1], func)(*args)
            finally:
                builtins.__import__ = imp
            if self._lie:
                v = v + 1 if isinstance(v, int) and not isinstance(v, bool) else "lie"
            # (a long string is too large without a copy to find out)
            n = len(v) if isinstance(v, (bytes, bytearray, str)) else 0
            if n <= C.TASK_RESULT_MAX:
                vb = cbor.dumps(v)
                n = len(vb)
            else:
                n += 3 if n < 65536 else 5  # its CBOR head (text: at least)
            v = None
            if n > C.TASK_RESULT_MAX:
                err = ("ResultTooLarge", "result is %d bytes, at most %d" % (n, C.TASK_RESULT_MAX))
                vb = None
        except MemoryError as x:
            v = vb = self._mod = None  # the loaded module goes first
            gc.collect()
            err = ("MemoryError", str(x)[:_MSG])
        except BaseException as x:  # noqa: whatever the task raised
            err = (type(x).__name__, str(x)[:_MSG])
        finally:
            plat.wdt_start(self._wdt)
        self._st.done += 1
        dt = plat.ticks[1](plat.ticks[0](), t0)
        st = C.TS_DONE if err is None else C.TS_FAILED
        try:
            b = self._result(e[_ID], st, vb, err, dt)
        except MemoryError:
            # No heap for the result: the task fails rather than stay
            # "running" for good (every later task was then answered busy).
            vb = err = None
            gc.collect()
            st = C.TS_FAILED
            b = self._result(e[_ID], st, None, ("MemoryError", "no heap for the result"), dt)
        self._state(e, st, b)
        return b

    def _import(self, nm, g=None, l=None, fr=None, lv=0):
        # builtins.__import__ while a task runs: the allowed modules, and
        # modules of the code cache (a task's module may import another).
        if not lv:
            if (nm[1:] if nm[:1] == "u" else nm) in _ALLOWED:
                return self._imp(nm, g, l, fr, lv)
            d = self._root + "/c"
            if len(nm) == 64 and not nm.strip("0123456789abcdef") and _exists("%s/%s.mpy" % (d, nm)):
                sys.path.append(d)  # (the code cache is on the path only now)
                try:
                    return self._imp(nm, g, l, fr, lv)
                finally:
                    sys.path.remove(d)
            if nm == "micropython":
                # const() alone, for code compiled from `from micropython
                # import const` (the import stays); not heap_lock, kbd_intr...
                return _MicroPython
        raise ImportError("module '%s' is not allowed" % nm)
