# Crash safety of leases: a power cut (mpfake.power_cut) at each step of a
# lease write or of an expiry deletion, then a boot on what the flash holds
# (new Shares and Leases, as the node does). Always a valid state: the old
# lease or the new one, never a torn one counted as a lease, no temporary
# left, shares and count consistent, an index without shares pruned.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_lease_crash
import asyncio
import gc
import mpfake as F
from mptest import check, eq
from ohnode import lease as L
from ohnode import shares as S
from ohnode import upload as U
from ohnode.epoch import Epoch
from ohnode.lease import Leases
from ohproto import const as P
from ohproto import cbor

T0 = 1700000000
DEF = 5000


class Cut(Exception):
    pass


class OsAt:
    # A module's `os`, with a power cut at the n-th call of one function.
    def __init__(self, real, name, n=1):
        self.real, self.name, self.n = real, name, n

    def __getattr__(self, a):
        f = getattr(self.real, a)
        if a != self.name:
            return f

        def hook(*args):
            self.n -= 1
            if self.n:
                return f(*args)
            F.power_cut("/oht", "/oht2")
            raise Cut()

        return hook


def wire(nd):
    ep = Epoch(nd.clock.ticks())
    ep.set(T0 + nd.clock.t // 1000 - 1)
    nd.sh.lease = Leases(nd.sh, nd.cfg, ep)


def node():
    gc.collect()  # the loops below make a node per round: keep the heap whole
    nd = F.fresh({"lease_default": DEF})
    wire(nd)
    return nd


def boot(nd):
    nd.boot("/oht2")
    wire(nd)


def cut(mod, name, fn, n=1):
    real = mod.os
    mod.os = OsAt(real, name, n)
    try:
        fn()
        return False
    except Cut:
        return True
    finally:
        mod.os = real


def put(nd, si=F.SI, num=0, l="1000"):
    q = ("h=" + F.sha_hex(F.Pat(200, num)), "l=" + l)
    return nd.ask(P.PUT, F.spath(si, num), query=q, pl=F.Pat(200, num)[:]).code


def expiry(nd, si=F.SI):
    return cbor.loads(nd.ask(P.GET, "s/" + si, query=("l",)).pl).get(P.LE_EXPIRES)


def clean(d="/oht2/s"):
    check(F.temporaries(d) == [], "temporary left: %r" % F.temporaries(d))


def test_cut_while_renewing():
    nd = node()
    eq(put(nd), P.CREATED, "PUT")
    old = expiry(nd)
    check(cut(L, "rename", lambda: nd.ask(P.POST, "s/" + F.SI, query=("l=9",))), "cut")
    check(".lt" in F.ls("/oht2/s/" + F.SI), "cut after the temporary was written, in the share's folder")
    boot(nd)
    clean()
    eq(expiry(nd), old, "old lease intact")
    eq(nd.sh.count, 1, "count")
    eq(nd.ask(P.POST, "s/" + F.SI, query=("l=9",)).code, P.CHANGED, "renew again")


def test_cut_while_storing_lease_of_new_share():
    nd = node()
    check(cut(L, "rename", lambda: put(nd)), "cut")
    boot(nd)
    clean()
    eq(nd.sh.count, 1, "share stored")
    eq(expiry(nd), None, "no lease yet")
    eq(asyncio.run(nd.sh.lease.sweep()), 0, "sweep keeps it")
    check(expiry(nd) > T0, "and gives it the default")


def test_torn_lease_file_is_no_lease():
    nd = node()
    put(nd)
    with open("/oht/s/%s/.l" % F.SI, "wb") as f:
        f.write(b"\x00\x01")
    eq(expiry(nd), None, "2 bytes: no lease")
    eq(asyncio.run(nd.sh.lease.sweep()), 0, "not deleted")
    eq(expiry(nd), nd.sh.lease.epoch.now() + DEF, "default")
    for t in ("/oht/s/.lt", "/oht/s/%s/.lt" % F.SI):  # (earlier firmware left it at the top)
        with open(t, "wb") as f:
            f.write(b"\x00")
    nd.boot("/oht")
    eq((F.ls("/oht/s"), F.temporaries(), nd.sh.count), ([F.SI], [], 1), "boot removes .lt")


def sweep_cut(nd, name, n):
    put(nd, F.SI, 0, "1")
    put(nd, F.SI, 1, "1")
    put(nd, F.SI2, 0, "1000")
    nd.clock.t += 5000
    wire(nd)
    # (files go through ohnode.upload.rm, folders through shares' os)
    return cut(U if name == "remove" else S, name, lambda: asyncio.run(nd.sh.lease.sweep()), n)


def test_cut_during_expiry():
    # Cut at remove #1, #2 (the shares: n - 1 done), #3 (the lease), rmdir.
    for name, n in (("remove", 1), ("remove", 2), ("remove", 3), ("rmdir", 1)):
        nd = node()
        check(sweep_cut(nd, name, n), "cut at %s %d" % (name, n))
        boot(nd)
        left = F.ls("/oht2/s/" + F.SI)
        eq(nd.sh.count, 1 + (3 - n if name == "remove" and n < 3 else 0), "count %s %d" % (name, n))
        if nd.sh.count == 1:
            eq(left, None, "pruned at boot %s %d: %r" % (name, n, left))
        asyncio.run(nd.sh.lease.sweep())
        eq((nd.sh.count, F.ls("/oht2/s")), (1, [F.SI2]), "after a sweep %s %d" % (name, n))
        eq(F.download(nd, F.spath(F.SI2, 0)), F.sha_hex(F.Pat(200, 0)), "other intact")
        nd = None  # one node at a time on the test's heap


F.run(globals())
