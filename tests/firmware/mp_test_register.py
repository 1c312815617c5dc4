# Registration with the coordinator (ohnode.reg) through the fake socket and
# a coordinator double (mp_test_register_double): the POST /rd?ep=&lt=
# payload decodes to the documented map, the Location-Path is kept and
# refreshed with fresh figures every lifetime/2 with jitter, a 4.04 makes
# the node register again at once, and the time comes from the answers.
# Back-off and errors: mp_test_register_backoff.py; the clock and odd
# answers: mp_test_register_time.py.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_register
import gc
import socket
import mpfake as F
from mptest import check, eq
from mp_test_register_double import node, when, created, changed, answer, status, check_delay, T0, COORD
from ohnode.status import VERSION
from ohproto import const as P
from ohproto import cbor


def test_register_payload_and_location():
    nd = node(zone="shelf-2", max_share=70000)
    eq(F.upload(nd, F.spath(), F.Pat(300, 1))[0].code, P.CREATED, "share")
    st = status(nd)
    eq((st[P.ST_REGISTERED], st[P.ST_COORDINATOR]), (False, COORD), "status before")
    check(P.ST_TIME not in st, "no time yet")
    d, seen = when(nd, created("rd", "a7"))
    eq(len(seen), 1, "one datagram")
    m = seen[0]
    eq((m.t, m.code), (P.CON, P.POST), "CON POST")
    eq(m.opt_all(P.OPT_URI_PATH), ["rd"], "path")
    eq(m.opt_all(P.OPT_URI_QUERY), ["ep=n1", "lt=60"], "queries")
    eq(m.opt_uint(P.OPT_CONTENT_FORMAT), P.CF_CBOR, "cf")
    eq(m.peer, socket.getaddrinfo("127.0.0.1", 5999, 0, socket.SOCK_DGRAM)[0][-1], "to")
    pl = cbor.loads(m.pl)
    free, total = nd.sh.stat()
    eq(sorted(pl), list(range(9)), "keys")
    eq((pl[P.RG_NAME], pl[P.RG_BOARD], pl[P.RG_FIRMWARE]), ("n1", "virtual", VERSION), "who")
    eq((pl[P.RG_FS_TOTAL], pl[P.RG_FS_FREE]), (total, free), "fs")
    eq((pl[P.RG_MAX_SHARE], pl[P.RG_SHARES], pl[P.RG_ZONE]), (70000, 1, "shelf-2"), "shares, zone")
    check(60000 <= pl[P.RG_HEAP_TOTAL] <= gc.mem_alloc() + gc.mem_free(), "heap")
    eq(nd.reg.loc, (b"rd", b"a7"), "location")
    check_delay(nd, d)
    check(nd.reg.registered(), "registered")
    eq(nd.ep.now(), T0, "time")
    st = status(nd)
    eq((st[P.ST_REGISTERED], st[P.ST_COORDINATOR], st[P.ST_TIME]), (True, COORD, T0), "status")


def test_no_zone_no_key():
    d, seen = when(node(), created("rd", "1"))
    check(P.RG_ZONE not in cbor.loads(seen[0].pl), "no RG_ZONE")


def test_refresh_to_location_with_fresh_figures():
    nd = node(lt=20)
    when(nd, created("rd", "grid", "n-1"))
    nd.clock.t += 9000
    eq(F.upload(nd, F.spath(F.SI2, 4), F.Pat(900, 2))[0].code, P.CREATED, "share")
    d, seen = when(nd, changed(cbor.dumps({P.RR_TIME: T0 + 100})))
    m = seen[0]
    eq((m.t, m.code), (P.CON, P.POST), "POST")
    eq(m.opt_all(P.OPT_URI_PATH), ["rd", "grid", "n-1"], "every segment")
    eq(m.opt_all(P.OPT_URI_QUERY), [], "no query")
    pl = cbor.loads(m.pl)
    eq((pl[P.RG_SHARES], pl[P.RG_FS_FREE]), (1, nd.sh.stat()[0]), "fresh figures")
    check_delay(nd, d)
    eq(nd.ep.now(), T0 + 100, "time from 2.04")
    nd.clock.t += 2500
    eq(nd.ep.now(), T0 + 102, "time runs on")
    when(nd, changed())
    eq(nd.ep.now(), T0 + 102, "no payload: same time")
    check(nd.reg.registered(), "registered")


def test_refresh_jitter():
    nd = node(lt=100)
    when(nd, created("rd", "1"))
    ds = []
    for _ in range(8):
        d, _ = when(nd, changed())
        check_delay(nd, d)
        ds.append(d)
    check(len(set(ds)) > 1, "jitter %r" % ds)


def test_not_found_registers_again_at_once():
    nd = node()
    when(nd, created("rd", "old"))
    d, seen = when(nd, lambda m: answer(m, P.NOT_FOUND))
    eq(seen[0].opt_all(P.OPT_URI_PATH), ["rd", "old"], "refresh")
    eq((d, nd.reg.loc, nd.reg.registered()), (0, None, False), "again at once")
    d, seen = when(nd, created("rd", "new"))
    eq(seen[0].opt_all(P.OPT_URI_PATH), ["rd"], "registers")
    eq(seen[0].opt_all(P.OPT_URI_QUERY), ["ep=n1", "lt=60"], "ep, lt")
    eq(nd.reg.loc, (b"rd", b"new"), "new location")
    check_delay(nd, d)


F.run(globals())
