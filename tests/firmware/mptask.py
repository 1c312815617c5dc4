# Helpers of the task tests tests/firmware/mp_test_task*.py: a node (mpfake)
# with a task module from /rom/taskmods (compiled there by the harness) in
# its code cache, task requests, and the event loop turned for tasks that run
# after their answer.
import gc
import asyncio
import hashlib
import mpfake as F
from mptest import eq
from ohproto import const as P
from ohproto import compute as C
from ohproto import cbor


class Plat:
    # What the task machinery asks of the platform layer (ohnode.plat_*):
    # the clock, and the watchdog, whose last four wdt_start(ms, task) calls
    # are in .arms.
    def __init__(self, clock):
        self.ticks = clock.ticks()
        self.arms = []

    def wdt_start(self, ms, task=None):
        if len(self.arms) == 4:
            self.arms.pop(0)
        self.arms.append((ms, task))


def wire(nd, root="/oht", lost=None):
    # Give node nd (after each boot) what node.py gives a board: /c and /t
    # made on first use (ohnode.lazy), the platform layer in nd.plat, and
    # the id of a task the watchdog cut (what plat.wdt_lost() said).
    st = nd.srv.res[P.PATH_STATUS]
    if lost is not None:
        st.lost = lost
    if getattr(nd, "plat", None) is None:
        nd.plat = Plat(nd.clock)

    def more(key):
        res = nd.srv.res
        if key is None:
            if P.PATH_CODE not in res and P.PATH_TASKS not in res:
                return None
        elif key != P.PATH_CODE and key != P.PATH_TASKS:
            return None
        from ohnode.lazy import make

        return make(key, nd.srv, nd.plat, root, nd.cfg, st, 10000)

    nd.srv.more = more


def retire(nd, after=10001):
    # ohnode.lazy.retire `after` ms from now: how many resources went.
    from ohnode.lazy import retire

    nd.clock.t += after
    return retire(nd.srv, nd.plat.ticks)


def module(nd, stem):
    # PUT /c/<hash> of /rom/taskmods/<stem>.mpy; its SHA-256.
    with open("/rom/taskmods/%s.mpy" % stem, "rb") as f:
        data = f.read()
    r, _ = F.upload(nd, "c/" + F.sha_hex(data), data, h="")
    eq(r.code, P.CREATED, "module %s stored" % stem)
    return hashlib.sha256(data).digest()


def node(cfg=None, stem="tk_basic"):
    # (node, code hash): a fresh node holding one task module.
    c = {"tasks": 1, "dedup": 2}
    c.update(cfg or {})
    nd = F.fresh(c, n=96)
    wire(nd)
    code = module(nd, stem)
    eq(P.PATH_CODE in nd.srv.res, False, "the code cache unloads after an upload")
    return nd, code


def task(code, func, args=(), tid=1, wait=True, **more):
    # A POST /t payload; more: TK_<NAME>=value.
    m = {C.TK_CODE: code, C.TK_FUNC: func, C.TK_ARGS: list(args), C.TK_ID: tid}
    if wait:
        m[C.TK_WAIT] = True
    for k in more:
        m[getattr(C, "TK_" + k.upper())] = more[k]
    return cbor.dumps(m)


def post(nd, pl, **kw):
    gc.collect()  # the test's own garbage out of the task's way
    return nd.ask(P.POST, "t", pl=pl, opts=((P.OPT_CONTENT_FORMAT, P.CF_CBOR),), **kw)


def res(r, code=P.CONTENT):
    # The result map of a response that must have `code`.
    if r.code != code:
        eq(r.code, code, "response code (%r)" % bytes(r.pl[:80]))
    return cbor.loads(r.pl)


def run(nd, code, func, args=(), tid=1, **more):
    # Run a task inline; its result map.
    return res(post(nd, task(code, func, args, tid, **more)))


async def _nap(ms):
    await asyncio.sleep_ms(ms)


def drain(ms=5):
    # Let the event loop run the tasks queued to run after their answer.
    asyncio.run(_nap(ms))


def status(nd):
    return res(nd.ask(P.GET, "i"))


def vectors(schema):
    # The golden vectors of `schema` in protocols/vectors.json, one at a
    # time (the whole file does not fit the heap at once): (name, value
    # with tags undone, CBOR hex).
    import sys
    import json
    import mptest

    for d in sys.path:
        try:
            f = open((d or ".") + "/vectors.json")
        except OSError:
            continue
        tag = '"schema": "%s"' % schema
        for line in f:
            if tag in line:
                v = json.loads(line.strip().rstrip(","))
                yield v["name"], mptest.untag(v["value"]), v["cbor"]
        f.close()
        return


def result_body(m):
    # The firmware's bytes for result map m (ohnode.tasks.Tasks._result).
    from ohnode.tasks import Tasks

    vb = cbor.dumps(m[C.TR_VALUE]) if C.TR_VALUE in m else None
    err = tuple(m[C.TR_ERROR]) if C.TR_ERROR in m else None
    return Tasks._result(m[C.TR_ID], m[C.TR_STATE], vb, err, m.get(C.TR_MS))
