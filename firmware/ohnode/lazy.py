# The code cache (/c) and the task machinery (/t): each made on the first
# request to it (node.py's Server.more imports this module then) and
# unloaded again once it has not been asked for a while and has nothing
# queued or uploading; this module goes with the last of them. The code
# cache also goes when the task machinery comes (a module is uploaded, then
# run), the task machinery when a share upload starts or a datagram finds
# no heap (Server.more(None)), and either once it answered a request that
# leaves nothing behind (gone). Loaded, they cost about 3 and 4.7 KB of heap
# on the 64-bit unix port (function and class objects of code that itself
# stays in ROMFS; for /t with a small task module and its results): a node
# that stores shares wants that back. What outlasts an unload is in Status:
# the tasks run since boot, the lost task. (Loading leaves some things
# behind for good: the names it interns, the grown tables of sys.modules
# and of the packages, about 1.7 KB on x64.)
import sys
from micropython import const
from ohproto import const as P

_IDLE_MS = const(10000)  # /t; /c (asked once per module and board): _CODE_IDLE_MS
_CODE_IDLE_MS = const(2000)


def make(key, srv, plat, root, cfg, st, wdt_ms):
    # The resource for key, made now and registered, or None; key None:
    # unload both unless busy (the heap ran out).
    if key is None:
        drop(srv, P.PATH_TASKS)
        drop(srv, P.PATH_CODE)
        return None
    if key == P.PATH_CODE:
        from ohnode.codecache import CodeCache

        r = CodeCache(srv, root, cfg, plat.ticks)
    elif key == P.PATH_TASKS:
        from ohnode.tasks import Tasks

        drop(srv, P.PATH_CODE)  # the module arrived: tasks now, one at a time
        r = Tasks(srv, root, cfg, plat, st, wdt_ms)
    else:
        return None
    srv.res[key] = r
    return r


def retire(srv, ticks):
    # Unload /c and /t when idle; how many went.
    now = ticks[0]()
    n = 0
    for k, idle in ((P.PATH_CODE, _CODE_IDLE_MS), (P.PATH_TASKS, _IDLE_MS)):
        r = srv.res.get(k)
        if r is not None and ticks[1](now, r.t) >= idle:
            n += drop(srv, k)
    return n


def gone(srv, m):
    # A Server tail: unload what request m just used (unless busy). For a
    # request that leaves nothing behind: a listing, a refusal, an upload's
    # last block, a look at /t on a board that has run no task since /t
    # loaded. (A random datagram then cannot keep 3 KB of heap for seconds.)
    drop(srv, P.PATH_CODE if m.opt_all(P.OPT_URI_PATH)[0] == P.PATH_CODE else P.PATH_TASKS)


def drop(srv, key):
    # Unload resource key (/c or /t) unless it is busy, with the modules that
    # go with it (and this one after the last); 1 when it went, else 0.
    res = srv.res
    r = res.get(key)
    if r is None or r.busy():
        return 0
    del res[key]
    mods = ("ohnode.codecache",) if key == P.PATH_CODE else ("ohnode.tasks", "ohnode.ctr", "ohproto.compute")
    if P.PATH_CODE not in res and P.PATH_TASKS not in res:
        mods += ("ohnode.lazy",)
    for m in mods:
        if m in sys.modules:
            del sys.modules[m]
            p, a = m.split(".")
            try:  # the package keeps its submodules as attributes
                delattr(sys.modules[p], a)
            except (KeyError, AttributeError):
                pass
    import gc

    gc.collect()
    return 1
