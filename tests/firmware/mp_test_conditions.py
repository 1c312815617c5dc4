# Conditional PUT (If-None-Match, If-Match) and Accept (RFC 7252 5.10.8,
# 5.10.4) on the real firmware, through Server.datagram with a fake socket.
import mptest
import mpfake as F
from ohnode import coap
from ohproto import const as P

IF_NONE_MATCH = ((P.OPT_IF_NONE_MATCH, b""),)
IF_MATCH = ((P.OPT_IF_MATCH, b""),)


def _put(nd, path, data, opts=()):
    return nd.ask(P.PUT, path, opts=opts, query=("h=" + F.sha_hex(data),), pl=data).code


def test_if_none_match_creates_only():
    nd = F.fresh()
    path = F.spath(F.SI, 0)
    mptest.eq(_put(nd, path, b"first", IF_NONE_MATCH), P.CREATED, "create with If-None-Match")
    mptest.eq(_put(nd, path, b"second", IF_NONE_MATCH), P.PRECONDITION_FAILED, "exists: 4.12")
    mptest.eq(F.download(nd, path), F.sha_hex(b"first"), "old content kept")


def test_if_match_replaces_only():
    nd = F.fresh()
    path = F.spath(F.SI, 1)
    mptest.eq(_put(nd, path, b"x", IF_MATCH), P.PRECONDITION_FAILED, "absent: 4.12")
    mptest.eq(nd.ask(P.GET, path).code, P.NOT_FOUND, "nothing created")
    mptest.eq(_put(nd, path, b"one"), P.CREATED, "plain create")
    mptest.eq(_put(nd, path, b"two", IF_MATCH), P.CHANGED, "replace with If-Match")
    etag = ((P.OPT_IF_MATCH, b"\x01\x02"),)
    mptest.eq(_put(nd, path, b"three", etag), P.PRECONDITION_FAILED, "no ETag matches")
    mptest.eq(F.download(nd, path), F.sha_hex(b"two"), "content after the failed condition")


def test_accept():
    nd = F.fresh()
    r = nd.ask(P.GET, "i", opts=((P.OPT_ACCEPT, P.CF_CBOR),))
    mptest.eq(r.code, P.CONTENT, "status as CBOR")
    r = nd.ask(P.GET, "i", opts=((P.OPT_ACCEPT, 50),))
    mptest.eq(r.code, P.NOT_ACCEPTABLE, "status as JSON: 4.06")
    mptest.check(len(r.pl) > 0, "diagnostic payload")
    r = nd.ask(P.GET, ".well-known/core", opts=((P.OPT_ACCEPT, P.CF_LINK_FORMAT),))
    mptest.eq(r.code, P.CONTENT, "link format accepted")


F.run(globals())
