# Leases (ohnode.lease): PUT sets the lease of its storage index (l= or the
# default; never shortened by a PUT; nothing without time), POST /s/<si>?l=
# renews, GET /s/<si>?l reads it, the .l file is never counted or listed as
# a share, and the sweep deletes expired indexes (count, status, observers).
# Crash safety: mp_test_lease_crash.py.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_lease
import os
import asyncio
import mpfake as F
from mptest import check, eq
from ohnode.epoch import Epoch
from ohnode.lease import Leases
from ohproto import const as P
from ohproto import cbor

T0 = 1700000000
DEF = 5000  # lease_default of these nodes


def node(t=T0, n=64, **cfg):
    cfg["lease_default"] = DEF
    nd = F.fresh(cfg, n=n)
    wire(nd, t)
    return nd


def wire(nd, t=T0):
    # Leases and clock as ohnode.node sets them up (again after a boot).
    nd.ep = Epoch(nd.clock.ticks())
    if t is not None:
        nd.ep.set(t)
    nd.sh.lease = Leases(nd.sh, nd.cfg, nd.ep)
    nd.hits = []
    nd.sh.changed = lambda: nd.hits.append(1)


def put(nd, si=F.SI, num=0, size=300, l=None):
    q = ("h=" + F.sha_hex(F.Pat(size, num)),) + (("l=" + l,) if l is not None else ())
    return nd.ask(P.PUT, F.spath(si, num), query=q, pl=F.Pat(size, num)[:]).code


def lease(nd, si=F.SI):
    r = nd.ask(P.GET, "s/" + si, query=("l",))
    if r.code != P.CONTENT:
        return r.code
    eq(r.opt_uint(P.OPT_CONTENT_FORMAT), P.CF_CBOR, "cf")
    return cbor.loads(r.pl)


def renew(nd, si=F.SI, l="100"):
    return nd.ask(P.POST, "s/" + si, query=("l=" + l,) if l is not None else ())


def sweep(nd):
    return asyncio.run(nd.sh.lease.sweep())


def test_put_sets_lease():
    nd = node()
    eq(put(nd, l="1000"), P.CREATED, "PUT l=")
    eq(lease(nd), {P.LE_EXPIRES: T0 + 1000, P.LE_NOW: T0}, "lease-info")
    eq(F.ls("/oht/s/" + F.SI), [".l", "0"], "files")
    eq(os.stat("/oht/s/" + F.SI + "/.l")[6], 4, ".l is 4 bytes")
    eq(cbor.loads(nd.ask(P.GET, "s/" + F.SI).pl), [[0, 300]], "share-set")
    m = cbor.loads(nd.ask(P.GET, "s").pl)
    eq((m[P.LS_COUNT], m[P.LS_SHARES]), (1, [[bytes.fromhex("0123456789abcdef0123456789abcdef"), [[0, 300]]]]), "listing")
    eq(cbor.loads(nd.ask(P.GET, "i").pl)[P.ST_SHARES], 1, "status")
    nd.boot("/oht")
    eq(nd.sh.count, 1, "after boot: .l not counted")
    eq(F.ls("/oht/s/" + F.SI), [".l", "0"], ".l kept")


def test_put_default_and_never_shorter():
    nd = node()
    eq(put(nd), P.CREATED, "PUT")
    eq(lease(nd)[P.LE_EXPIRES], T0 + DEF, "default")
    nd.clock.t += 10000
    eq(put(nd, num=1, l="20"), P.CREATED, "shorter l=")
    eq(lease(nd)[P.LE_EXPIRES], T0 + DEF, "not shortened")
    eq(put(nd, num=2, l="9000"), P.CREATED, "longer l=")
    eq(lease(nd), {P.LE_EXPIRES: T0 + 9010, P.LE_NOW: T0 + 10}, "extended")
    eq(put(nd, num=2, l="9001"), P.CHANGED, "replace")
    eq(lease(nd)[P.LE_EXPIRES], T0 + 9011, "replace extends")


def test_blockwise_put_lease_on_last_block():
    nd = node()
    data = F.Pat(3000, 4)
    r, k = F.upload(nd, F.spath(), data, stop=2)
    eq(r.code, P.CONTINUE, "blocks 0, 1")
    o = ((P.OPT_BLOCK1, F.coap.block_val(2, 0, 6)),)
    eq(nd.ask(P.PUT, F.spath(), opts=o, query=("l=777",), pl=data[2048:]).code, P.CREATED, "last")
    eq(lease(nd)[P.LE_EXPIRES], T0 + 777, "l= of the last block")


def test_bad_lease_values():
    nd = node()
    for v in ("", "x", "-1", "+5", "1.5", "315360001", "99999999999"):
        eq(put(nd, l=v), P.BAD_REQUEST, "PUT l=%s" % v)
        eq(renew(nd, l=v).code, P.BAD_REQUEST, "POST l=%s" % v)
    eq(nd.sh.count, 0, "nothing stored")
    eq(F.ls("/oht/s"), [], "no files")
    data = F.Pat(3000, 5)
    F.upload(nd, F.spath(), data, stop=2)
    o = ((P.OPT_BLOCK1, F.coap.block_val(2, 0, 6)),)
    eq(nd.ask(P.PUT, F.spath(), opts=o, query=("l=x",), pl=data[2048:]).code, P.BAD_REQUEST, "last block")
    eq((nd.sh.count, F.ls("/oht/s")), (0, []), "dropped")
    eq(put(nd, l=str(P.LEASE_MAX)), P.CREATED, "LEASE_MAX")


def test_no_time_no_lease_file():
    nd = node(t=None)
    eq(put(nd, l="60"), P.CREATED, "PUT")
    eq(F.ls("/oht/s/" + F.SI), ["0"], "no .l")
    eq(lease(nd), {}, "lease-info empty")
    eq(renew(nd).code, P.SERVICE_UNAVAILABLE, "POST: 5.03")
    eq(sweep(nd), 0, "sweep does nothing")
    nd.ep.set(T0)
    eq(sweep(nd), 0, "nothing deleted")
    eq(lease(nd)[P.LE_EXPIRES], T0 + DEF, "default given by the sweep")
    eq(nd.sh.count, 1, "share kept")


def test_renew():
    nd = node()
    put(nd, l="1000")
    nd.clock.t += 3000
    r = renew(nd, l="50")
    eq(r.code, P.CHANGED, "2.04")
    eq(cbor.loads(r.pl), {P.LE_EXPIRES: T0 + 53, P.LE_NOW: T0 + 3}, "payload")
    eq(lease(nd)[P.LE_EXPIRES], T0 + 53, "set, even shorter")
    eq(renew(nd, si=F.SI2).code, P.NOT_FOUND, "no shares: 4.04")
    eq(renew(nd, l=None).code, P.BAD_REQUEST, "no l=: 4.00")
    eq(nd.ask(P.POST, "s/bad", query=("l=5",)).code, P.BAD_REQUEST, "bad si")
    eq(nd.ask(P.POST, F.spath(), query=("l=5",)).code, P.METHOD_NOT_ALLOWED, "POST a share")
    eq(nd.ask(P.POST, "s").code, P.METHOD_NOT_ALLOWED, "POST /s")
    eq(lease(nd, F.SI2), P.NOT_FOUND, "GET ?l of nothing")
    # a retransmitted POST is answered from the de-duplication cache
    r1 = renew(nd, l="70").mid
    nd.clock.t += 5000
    r2 = nd.ask(P.POST, "s/" + F.SI, mid=r1, query=("l=70",))
    eq(cbor.loads(r2.pl)[P.LE_EXPIRES], T0 + 73, "cached answer")
    eq(lease(nd)[P.LE_EXPIRES], T0 + 73, "not executed again")


def test_delete_removes_lease():
    nd = node()
    put(nd, num=0)
    put(nd, num=1)
    eq(nd.ask(P.DELETE, F.spath(F.SI, 0)).code, P.DELETED, "one")
    eq(F.ls("/oht/s/" + F.SI), [".l", "1"], "lease stays")
    eq(nd.ask(P.DELETE, F.spath(F.SI, 1)).code, P.DELETED, "last")
    eq(F.ls("/oht/s"), [], "folder and lease gone")
    put(nd, si=F.SI2)
    eq(nd.ask(P.DELETE, "s/" + F.SI2).code, P.DELETED, "DELETE /s/<si>")
    eq(nd.ask(P.DELETE, "s/" + F.SI2).code, P.NOT_FOUND, "again: 4.04")
    eq((F.ls("/oht/s"), nd.sh.count), ([], 0), "empty")


def test_sweep_expires():
    nd = node()
    put(nd, si=F.SI, num=0, l="10")
    put(nd, si=F.SI, num=1, l="5")
    put(nd, si=F.SI2, num=0, l="1000")
    nd.hits = []
    nd.clock.t += 9000
    eq(sweep(nd), 0, "not yet")
    nd.clock.t += 1000
    eq(sweep(nd), 2, "SI: 2 shares")
    eq(F.ls("/oht/s"), [F.SI2], "SI folder gone")
    eq((nd.sh.count, nd.sh.lease.expired), (1, 2), "counts")
    check(nd.hits, "observers told")
    st = cbor.loads(nd.ask(P.GET, "i").pl)
    eq((st[P.ST_SHARES], st[P.ST_EXPIRED], st[P.ST_TIME]), (1, 2, T0 + 10), "status")
    eq(nd.ask(P.GET, F.spath(F.SI, 0)).code, P.NOT_FOUND, "gone")
    eq(F.download(nd, F.spath(F.SI2, 0)), F.sha_hex(F.Pat(300, 0)), "other intact")


def test_sweep_many():
    nd = node(n=200)
    for i in range(20):
        eq(put(nd, si=F.si_text(bytes(15) + bytes([i])), l="1" if i % 3 else "100"), P.CREATED, "PUT %d" % i)
    nd.clock.t += 2000
    eq(sweep(nd), 13, "all expired, in batches")
    eq((nd.sh.count, len(F.ls("/oht/s"))), (7, 7), "the rest")


F.run(globals())
