# Bursts: Block1 blocks sent as NON with No-Response (RFC 7967) and closed
# by a CON, and GET ?b=<n> answered with n Block2 blocks (the first one
# piggybacked, the rest NON with the request's token). protocols/RESOURCES.md.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_bursts
import mpfake as F
from mptest import check, eq
from ohnode import coap
from ohproto import const as P

block1, put_block = F.block1, F.put_block


def test_no_response_burst():
    # NON blocks with No-Response 2 (RFC 7967) get no answer while in
    # sequence; a gap is still answered (4.xx is not suppressed); the
    # closing CON is answered.
    nd = F.fresh()
    data = F.Pat(4096, 8)
    nr = ((P.OPT_NO_RESPONSE, b"\x02"),)

    def non(num, more, pl, q=()):
        o = [(P.OPT_BLOCK1, coap.block_val(num, more, 6))] + list(nr)
        return nd.feed(F.msg(P.PUT, F.spath(), t=P.NON, mid=100 + num, opts=o, query=q, pl=pl))

    eq(non(0, 1, data[:1024]), [], "block 0 unanswered")
    eq(non(1, 1, data[1024:2048]), [], "block 1 unanswered")
    out = non(3, 1, data[3072:])
    eq(len(out), 1, "a gap is answered")
    r = F.parse(out[0][0])
    eq((r.t, r.code, block1(r)), (P.NON, P.REQUEST_ENTITY_INCOMPLETE, (2, 1, 6)), "NON 4.08 naming block 2")
    eq(put_block(nd, F.spath(), 2, 1, 6, data[2048:3072]).code, P.CONTINUE, "CON block 2")
    r = put_block(nd, F.spath(), 3, 0, 6, data[3072:], ("h=" + F.sha_hex(data),))
    eq(r.code, P.CREATED, "last block with h=")
    eq(F.download(nd, F.spath()), F.sha_hex(data), "content")
    r = nd.ask(P.GET, "i", opts=((P.OPT_NO_RESPONSE, b"\x02"),))
    eq((r.t, r.code), (P.ACK, 0), "a suppressed CON still gets its empty ACK")


def test_get_burst():
    # GET ?b=4: the asked block piggybacked, then three NON 2.05 blocks with
    # the same token; it stops at the end of the share.
    nd = F.fresh()
    data = F.Pat(5000, 9)
    eq(F.upload(nd, F.spath(), data)[0].code, P.CREATED, "stored")
    o = [(P.OPT_BLOCK2, coap.block_val(1, 0, 6))]
    out = nd.feed(F.msg(P.GET, F.spath(), mid=7, tok=b"\x09", opts=o, query=("b=4",)))
    eq(len(out), 4, "four datagrams")
    rs = [F.parse(d) for d, _ in out]
    eq([(r.t, r.tok) for r in rs], [(P.ACK, b"\x09")] + [(P.NON, b"\x09")] * 3, "types and token")
    for i, r in enumerate(rs):
        check(r.pl == data[1024 * (i + 1):min(5000, 1024 * (i + 2))], "block %d" % (i + 1))
    eq([coap.block_of(r.opt(P.OPT_BLOCK2)) for r in rs], [(1, 1, 6), (2, 1, 6), (3, 1, 6), (4, 0, 6)], "Block2")
    out = nd.feed(F.msg(P.GET, F.spath(), mid=8, tok=b"\x0a", opts=o, query=("b=999",)))
    eq(len(out), 4, "b= beyond the end stops at the last block")
    out = nd.feed(F.msg(P.GET, F.spath(), mid=9, tok=b"\x0b", opts=o, query=("b=x",)))
    eq(len(out), 1, "a bad b= is one block")


F.run(globals())
