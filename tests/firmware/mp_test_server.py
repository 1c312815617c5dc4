# ohnode.server message layer (RFC 7252 4, 5.4) and the resources /i and
# /.well-known/core, driven through Server.datagram() with a fake socket that
# records sendto(): pings, malformed and short datagrams, critical options,
# proxying, 4.04/4.05, the status map, discovery filters. After every bad
# datagram a good GET /i must still answer 2.05.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_server
import gc
import mpfake as F
import mptest
from mptest import check, eq
from ohproto import const as P
from ohproto import cbor

h = mptest.unhex
CON, NON, ACK, RST = P.CON, P.NON, P.ACK, P.RST

# One node for the whole script (two would not fit the heap next to each
# other); dedup 4 for the bounded-cache test.
nd = F.fresh({"name": "node-7", "board": "virtual", "dedup": 4})


def still_alive(after):
    r = nd.ask(P.GET, "i", tok=b"ok")
    eq((r.t, r.code, r.tok), (ACK, P.CONTENT, b"ok"), "GET /i after " + after)


def sent(data, peer=F.PEER):
    # Feed one datagram; the datagrams sent back (bytes), all to `peer`.
    out = nd.feed(data, peer)
    for d, p in out:
        eq(p, peer, "reply address")
    return [d for d, _ in out]


def test_ping_answered_with_rst():
    eq(sent(h("40001234")), [h("70001234")], "CON ping")
    eq(sent(h("4000ffff")), [h("7000ffff")], "CON ping MID 0xffff")
    still_alive("ping")


def test_stray_empty_messages_ignored():
    for d in ("50001234", "60001234", "70001234"):
        eq(sent(h(d)), [], d)
    still_alive("empty NON/ACK/RST")


def test_short_and_wrong_version_dropped():
    e = nd.srv.errs
    for d in ("", "40", "4001", "400100", "00010001", "80010001", "c0010001", "81010001aa"):
        eq(sent(h(d)), [], "datagram %r" % d)
        still_alive(d)
    eq(nd.srv.errs, e + 8, "dropped datagrams count as errors")


MALFORMED = (
    "49%s" + "00" * 9,  # token length 9
    "4f%s" + "00" * 15,  # token length 15
    "42%saa",  # token cut short
    "41%saa",  # empty with a token (code patched below)
    "40%sf0",  # option delta nibble 15
    "40%s0f",  # option length nibble 15
    "40%sb56162",  # option runs past the end
    "40%sbd",  # extended length missing
    "40%sff",  # payload marker, no payload
    "40%sb161ff",  # option, marker, no payload
)


def _malformed(t):
    for i, f in enumerate(MALFORMED):
        mid = 0x0B00 + i
        d = bytearray(h(f % ("01%04x" % mid)))
        d[0] |= t << 4
        if i == 3:
            d[1] = 0  # Empty code
        yield bytes(d), mid


def test_malformed_con_gets_rst():
    for d, mid in _malformed(CON):
        e = nd.srv.errs
        out = sent(d)
        eq(out, [bytes([0x70, 0, mid >> 8, mid & 255])], "RST for " + d.hex())
        eq(nd.srv.errs, e + 1, "counted " + d.hex())
        still_alive(d.hex())


def test_malformed_non_dropped():
    for d, mid in _malformed(NON):
        e = nd.srv.errs
        eq(sent(d), [], "NON " + d.hex())
        eq(nd.srv.errs, e + 1, "counted " + d.hex())
        still_alive(d.hex())


def test_reserved_code_class_con_rst():
    for code in (0x20, 0xC0, 0xE0):
        eq(sent(bytes([0x40, code, 0x0C, 0x01])), [h("70000c01")], "class %d" % (code >> 5))
        still_alive("reserved class")


def test_unknown_critical_option_con_402():
    for num in (9, 13, 2049, 65001):
        r = nd.ask(P.GET, "i", mid=0x4242, tok=b"\xaa\xbb", opts=((num, b"\x01"),))
        eq((r.t, r.code, r.mid, r.tok), (ACK, P.BAD_OPTION, 0x4242, b"\xaa\xbb"), "option %d" % num)
        check(len(r.pl) > 0, "diagnostic payload")
        r.pl.decode()  # UTF-8 text
        check(r.opt(P.OPT_CONTENT_FORMAT) is None, "no Content-Format on a diagnostic")
        still_alive("critical option %d" % num)


def test_unknown_elective_option_ignored():
    for num in (4, 2048, 65000):
        r = nd.ask(P.GET, "i", opts=((num, b"\x01\x02"),))
        eq(r.code, P.CONTENT, "elective option %d" % num)
    gc.collect()  # GET /i renders the status map: give it a whole heap
    r = nd.ask(P.GET, "i", opts=((258, 0),))  # No-Response is known
    eq(r.code, P.CONTENT, "No-Response")


def test_unknown_critical_option_non_rst():
    out = sent(F.msg(P.GET, "i", t=NON, mid=0x5151, tok=b"t", opts=((2049, b""),)))
    eq(out, [h("70005151")], "NON with option 2049 is rejected with RST")
    still_alive("NON critical")


def test_rst_for_non_counts_as_error():
    # RESOURCES.md: "Dropped datagrams and RSTs count in ST_ERRORS".
    e = nd.srv.errs
    sent(F.msg(P.GET, "i", t=NON, mid=0x5152, opts=((9, b""),)))
    eq(nd.srv.errs, e + 1, "errors after a RST for a NON with a critical option")


def test_repeated_block_options_402():
    n = nd.sh.count
    b = (P.OPT_BLOCK2, b"\x02")
    r = nd.ask(P.GET, "s", opts=(b, b))
    eq(r.code, P.BAD_OPTION, "two Block2")
    b = (P.OPT_BLOCK1, b"\x08")
    r = nd.ask(P.PUT, F.spath(), opts=(b, b), query=("h=" + "00" * 32,), pl=bytes(16))
    eq(r.code, P.BAD_OPTION, "two Block1")
    eq(nd.sh.count, n, "nothing stored")
    still_alive("repeated Block")


def test_proxy_options_505():
    for num, v in ((35, b"coap://h/i"), (39, b"coap")):
        r = nd.ask(P.GET, "i", opts=((num, v),))
        eq(r.code, 0xA5, "option %d: 5.05 Proxying Not Supported" % num)
    still_alive("proxy")


def test_not_found():
    for path in ("x", "", "i/x", "s/%s/0/x" % F.SI, "S", "ii", ".well-known"):
        r = nd.ask(P.GET, path)
        eq(r.code, P.NOT_FOUND, "GET /" + path)
        check(len(r.pl) > 0, "diagnostic for /" + path)
    eq(nd.ask(P.DELETE, "nothing").code, P.NOT_FOUND, "DELETE /nothing")


def test_method_not_allowed():
    for code, path in ((P.PUT, "i"), (2, "i"), (P.DELETE, "i"), (2, "s"), (P.PUT, "s"),
                       (P.DELETE, "s"), (2, "s/" + F.SI), (P.PUT, "s/" + F.SI),
                       (2, F.spath()), (7, F.spath()), (P.PUT, ".well-known/core")):
        eq(nd.ask(code, path).code, P.METHOD_NOT_ALLOWED, "method %d on /%s" % (code, path))


def test_status_map():
    srv = nd.srv
    r = nd.ask(P.GET, "i", mid=0x0102, tok=b"T1")
    eq((r.t, r.code, r.mid, r.tok), (ACK, P.CONTENT, 0x0102, b"T1"), "piggybacked 2.05")
    eq(r.opt_uint(P.OPT_CONTENT_FORMAT), P.CF_CBOR, "Content-Format")
    m = cbor.loads(r.pl)
    eq(m[P.ST_NAME], "node-7", "name")
    eq(m[P.ST_BOARD], "virtual", "board")
    check(isinstance(m[P.ST_FIRMWARE], str) and m[P.ST_FIRMWARE], "firmware version")
    for k in range(15):
        if k not in (P.ST_NAME, P.ST_BOARD, P.ST_FIRMWARE, P.ST_HEAP_PEAK):
            check(isinstance(m.get(k), int) and m[k] >= 0, "key %d uint: %r" % (k, m.get(k)))
    eq(m[P.ST_RX_MSGS], srv.rx_m, "rx messages counted, this request included")
    eq(m[P.ST_RX_BYTES], srv.rx_b, "rx bytes")
    eq(m[P.ST_TX_MSGS], srv.tx_m - 1, "tx messages before this response")
    eq(m[P.ST_ERRORS], srv.errs, "errors")
    eq(m[P.ST_SHARES], nd.sh.count, "shares")
    eq(m[P.ST_FS_TOTAL], 64 * 512, "filesystem size")
    check(0 < m[P.ST_FS_FREE] <= m[P.ST_FS_TOTAL], "filesystem free")
    check(0 < m[P.ST_HEAP_FREE] < m[P.ST_HEAP_TOTAL] <= gc.mem_alloc() + gc.mem_free(), "heap")
    n = srv.tx_m
    r2 = cbor.loads(nd.ask(P.GET, "i").pl)
    eq(r2[P.ST_TX_MSGS], n, "tx counter moves")
    eq(r2[P.ST_RX_MSGS], m[P.ST_RX_MSGS] + 1, "rx counter moves")


def test_non_request_non_response():
    out = sent(F.msg(P.GET, "i", t=NON, mid=0x3333, tok=b"nn"))
    eq(len(out), 1, "one response")
    r = F.parse(out[0])
    eq((r.t, r.code, r.tok), (NON, P.CONTENT, b"nn"), "NON 2.05 with the token")
    out = sent(F.msg(P.GET, "zz", t=NON, mid=0x3334, tok=b"n2"))
    r = F.parse(out[0])
    eq((r.t, r.code, r.tok), (NON, P.NOT_FOUND, b"n2"), "errors the way the request came")


def test_bad_utf8_path_answered():
    # A Uri-Path that is not UTF-8 must get an error response (4.00 or
    # 4.04), not an exception out of datagram() (which leaves a CON client
    # retransmitting into silence).
    try:
        out = sent(F.msg(P.GET, "", mid=0x6001, opts=((P.OPT_URI_PATH, b"\xff\xfe"),)))
    except Exception as e:
        check(False, "datagram() raised %r" % e)
    eq(len(out), 1, "one response")
    r = F.parse(out[0])
    check(r.t == ACK and r.code in (P.BAD_REQUEST, P.NOT_FOUND), "code %x" % r.code)
    still_alive("bad UTF-8 path")


def test_bad_utf8_query_answered():
    try:
        out = sent(F.msg(P.PUT, F.spath(), mid=0x6002, opts=((P.OPT_URI_QUERY, b"h=\xff"),), pl=b"x"))
    except Exception as e:
        check(False, "datagram() raised %r" % e)
    eq(len(out), 1, "one response")
    eq(F.parse(out[0]).code, P.BAD_REQUEST, "4.00")


_BIG = bytes(1250)  # allocated at import, while the heap is not yet fragmented


def test_datagram_too_large_413():
    n = nd.sh.count
    d = F.msg(P.PUT, F.spath(), mid=0x7001, query=("h=" + "00" * 32,), pl=_BIG, buf=F._B)
    check(len(d) >= 1280, "datagram fills the node's receive buffer")
    out = sent(d)
    r = F.parse(out[0])
    eq((r.t, r.code, r.mid), (ACK, P.REQUEST_ENTITY_TOO_LARGE, 0x7001), "4.13")
    check(r.opt(P.OPT_BLOCK1) is not None, "Block1 hints the block size")
    eq(nd.sh.count, n, "nothing stored")
    still_alive("large datagram")


WKC = '</s>;rt="oh.s";ct=60,</i>;rt="oh.i";ct=60;obs'


def wkc(query=(), **kw):
    r = nd.ask(P.GET, ".well-known/core", query=query, **kw)
    eq(r.code, P.CONTENT, "2.05 for %r" % (query,))
    eq(r.opt_uint(P.OPT_CONTENT_FORMAT), P.CF_LINK_FORMAT, "Content-Format 40")
    return r.pl.decode()


def test_well_known_core():
    eq(wkc(), WKC, "full document")
    eq(wkc(("rt=oh.s",)), '</s>;rt="oh.s";ct=60', "rt=oh.s")
    eq(wkc(("rt=oh.i",)), '</i>;rt="oh.i";ct=60;obs', "rt=oh.i")
    eq(wkc(("rt=oh.*",)), WKC, "rt=oh.* prefix")
    eq(wkc(("rt=*",)), WKC, "rt=*")
    eq(wkc(("rt=nothing",)), "", "no match: empty 2.05")
    eq(wkc(("rt=oh.",)), "", "no prefix match without *")
    eq(wkc(("href=/i",)), '</i>;rt="oh.i";ct=60;obs', "href=/i")
    eq(nd.ask(P.GET, ".well-known/x").code, P.NOT_FOUND, "/.well-known/x")
    eq(nd.ask(P.GET, ".well-known/core/x").code, P.NOT_FOUND, "/.well-known/core/x")


def test_well_known_core_block2():
    # 16-byte blocks: block 0 carries M=1, the client gets it all.
    r = nd.ask(P.GET, ".well-known/core", opts=((P.OPT_BLOCK2, b"\x00"),))
    eq(len(r.pl), 16, "block 0 of 16 bytes")
    eq(r.opt(P.OPT_BLOCK2) is not None, True, "Block2 in response")
    eq(F.download(nd, ".well-known/core", 0), F.sha_hex(WKC.encode()), "reassembled")


def test_separate_peers_do_not_mix():
    r = nd.ask(P.GET, "i", peer=F.PEER3, tok=b"p3")
    eq((r.code, r.tok), (P.CONTENT, b"p3"), "other peer")


# -- de-duplication (RFC 7252 4.5): same peer and MID -> cached response

BODY = b"a small share"


def put_small(dn, num=0, mid=None):
    q = ("h=" + F.sha_hex(BODY),)
    return dn.ask(P.PUT, F.spath(F.SI, num), mid=mid, query=q, pl=BODY)


def dd_node():
    return nd


def test_dedup_delete_processed_once():
    dn = dd_node()
    eq(put_small(dn).code, P.CREATED, "stored")
    d = F.msg(P.DELETE, F.spath(), mid=0xD777, tok=b"dd")
    a = sent_by(dn, d)
    b = sent_by(dn, d)
    eq(F.parse(a).code, P.DELETED, "first copy deletes")
    eq(b, a, "second copy gets the identical cached response")
    eq(dn.sh.count, 0, "count")
    eq(dn.ask(P.DELETE, F.spath(), mid=0xD778).code, P.NOT_FOUND, "new MID is a new request")


def sent_by(dn, d, peer=F.PEER):
    out = dn.feed(d, peer)
    eq(len(out), 1, "one response")
    return out[0][0]


def test_dedup_put_not_replayed():
    dn = dd_node()
    n = dn.srv.tx_m
    d = F.msg(P.PUT, F.spath(F.SI, 1), mid=0xD201, tok=b"p", query=("h=" + F.sha_hex(BODY),), pl=BODY)
    a = sent_by(dn, d)
    eq(F.parse(a).code, P.CREATED, "first copy")
    eq(sent_by(dn, d), a, "duplicate: same 2.01, not 2.04")
    eq(F.parse(sent_by(dn, F.msg(P.PUT, F.spath(F.SI, 1), mid=0xD202, query=("h=" + F.sha_hex(BODY),), pl=BODY))).code,
       P.CHANGED, "new MID replaces")
    eq(dn.srv.tx_m, n + 3, "three responses sent")


def test_dedup_cache_bounded():
    dn = dd_node()  # dedup: 4 entries
    eq(put_small(dn, 2).code, P.CREATED, "stored")
    d = F.msg(P.DELETE, F.spath(F.SI, 2), mid=0xD300)
    eq(F.parse(sent_by(dn, d)).code, P.DELETED, "deleted")
    for i in range(3):  # 4 entries in use: still cached
        eq(dn.ask(P.DELETE, F.spath(F.SI, 100 + i), mid=0xD310 + i).code, P.NOT_FOUND, "other")
    eq(F.parse(sent_by(dn, d)).code, P.DELETED, "still cached after 3 others")
    eq(dn.ask(P.DELETE, F.spath(F.SI, 200), mid=0xD320).code, P.NOT_FOUND, "fifth entry")
    eq(F.parse(sent_by(dn, d)).code, P.NOT_FOUND, "evicted: processed again")


def test_dedup_per_peer():
    dn = dd_node()
    eq(put_small(dn, 3).code, P.CREATED, "stored")
    d = F.msg(P.DELETE, F.spath(F.SI, 3), mid=0xD400)
    a = sent_by(dn, d, F.PEER)
    eq(F.parse(a).code, P.DELETED, "peer 1 deletes")
    eq(F.parse(sent_by(dn, d, F.PEER2)).code, P.NOT_FOUND, "other port, same MID: new request")
    eq(F.parse(sent_by(dn, d, F.PEER3)).code, P.NOT_FOUND, "other host, same MID: new request")
    eq(sent_by(dn, d, F.PEER), a, "peer 1 still gets its cached response")


def test_dedup_error_responses_cached():
    dn = dd_node()
    d = F.msg(P.PUT, F.spath(F.SI, 4), mid=0xD500, query=("h=" + "00" * 32,), pl=BODY)
    a = sent_by(dn, d)
    eq(F.parse(a).code, P.BAD_REQUEST, "hash mismatch")
    eq(sent_by(dn, d), a, "duplicate of an error gets the same error")


F.run(globals())
