# Block-wise transfer (RFC 7959) of shares through Server.datagram(): Block1
# uploads in several block sizes with the h= query, 2.31/2.01/2.04, Block2
# downloads with Size2 and the M bit, a node that prefers smaller blocks,
# and every way an upload can go wrong (gap, no transfer, retransmission,
# size mismatch, hash mismatch, Size1 limits, bad h=, bad path).
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_blockwise
import mpfake as F
import mptest
from mptest import check, eq
from ohnode import coap
from ohproto import const as P

H0 = "h=" + "00" * 32


block1, put_block = F.block1, F.put_block


def no_leftovers(where):
    names = F.ls("/oht/s") or []
    for n in F.temporaries():
        check(False, "temporary file %s left after %s" % (n, where))
    return names


def test_block1_echo_and_codes():
    # 256-byte blocks by hand: every intermediate block gets 2.31 echoing
    # NUM, M=1 and SZX; the last one 2.01 echoing NUM, M=0.
    nd = F.fresh()
    data = F.Pat(1000, 1)
    q = ("h=" + F.sha_hex(data),)
    for num in range(4):
        pl = data[num * 256 : num * 256 + 256]
        more = num < 3
        r = put_block(nd, F.spath(), num, more, 4, pl, q if num == 0 else ())
        if more:
            eq(r.code, P.CONTINUE, "block %d" % num)
            eq(block1(r), (num, 1, 4), "2.31 echoes Block1 of block %d" % num)
        else:
            eq(r.code, P.CREATED, "last block")
            eq(block1(r), (3, 0, 4), "final response echoes Block1")
    eq(F.download(nd, F.spath()), F.sha_hex(data), "stored bytes")
    eq(nd.sh.count, 1, "count")


def test_block1_sizes_then_block2_sizes():
    nd = F.fresh()
    for i, szx in enumerate((6, 4, 0)):  # 1024, 256, 16-byte blocks
        data = F.Pat(2500, szx)
        path = F.spath(F.SI, i)
        r, k = F.upload(nd, path, data, szx)
        n = (2500 + (16 << szx) - 1) // (16 << szx)
        eq((r.code, k), (P.CREATED, n), "2.31 then 2.01 at szx %d" % szx)
        eq(block1(r), (n - 1, 0, szx), "last echo at szx %d" % szx)
        for s in (None, 6, 5, 4, 2, 0):
            eq(F.download(nd, path, s), F.sha_hex(data), "share %d read back at szx %r" % (i, s))
    r, k = F.upload(nd, F.spath(F.SI, 0), F.Pat(3000, 9), 5)
    eq(r.code, P.CHANGED, "replacement: 2.04")
    eq(F.download(nd, F.spath(F.SI, 0)), F.sha_hex(F.Pat(3000, 9)), "replaced content")
    eq(nd.sh.count, 3, "count after replacement")
    no_leftovers("uploads")


def test_block2_size2_and_more_bit():
    nd = F.fresh()
    data = F.Pat(2500, 2)
    eq(F.upload(nd, F.spath(), data)[0].code, P.CREATED, "stored")
    r = nd.ask(P.GET, F.spath())  # no Block2 in the request
    eq((r.code, len(r.pl)), (P.CONTENT, 1024), "block 0 by default")
    eq(coap.block_of(r.opt(P.OPT_BLOCK2)), (0, 1, 6), "Block2 0/M/6")
    eq(r.opt_uint(P.OPT_SIZE2), 2500, "Size2 on block 0")
    eq(r.opt_uint(P.OPT_CONTENT_FORMAT), P.CF_OCTET_STREAM, "Content-Format 42")
    r = nd.ask(P.GET, F.spath(), opts=((P.OPT_BLOCK2, coap.block_val(2, 0, 6)),))
    eq(coap.block_of(r.opt(P.OPT_BLOCK2)), (2, 0, 6), "last block: M=0")
    eq(r.pl, data[2048:], "last block bytes")
    r = nd.ask(P.GET, F.spath(), opts=((P.OPT_BLOCK2, coap.block_val(9, 0, 4)),))
    eq(coap.block_of(r.opt(P.OPT_BLOCK2)), (9, 0, 4), "last 256-byte block: M=0")
    eq(r.pl, data[2304:], "last 256-byte block bytes")
    r = nd.ask(P.GET, F.spath(), opts=((P.OPT_BLOCK2, coap.block_val(3, 0, 4)),))
    eq(coap.block_of(r.opt(P.OPT_BLOCK2)), (3, 1, 4), "middle block: M=1")
    eq(r.pl, data[768:1024], "middle block bytes")


def test_block2_past_end():
    nd = F.fresh()
    eq(F.upload(nd, F.spath(F.SI, 0), F.Pat(2500))[0].code, P.CREATED, "stored")
    eq(F.upload(nd, F.spath(F.SI, 1), F.Pat(2048))[0].code, P.CREATED, "stored")
    for num, szx, path in ((3, 6, F.spath(F.SI, 0)), (200, 0, F.spath(F.SI, 0)),
                           (2, 6, F.spath(F.SI, 1)), (8, 4, F.spath(F.SI, 1))):
        r = nd.ask(P.GET, path, opts=((P.OPT_BLOCK2, coap.block_val(num, 0, szx)),))
        eq(r.code, P.BAD_OPTION, "block %d/%d past the end" % (num, szx))
    r = nd.ask(P.GET, F.spath(F.SI, 1), opts=((P.OPT_BLOCK2, coap.block_val(1, 0, 6)),))
    eq((r.code, coap.block_of(r.opt(P.OPT_BLOCK2))), (P.CONTENT, (1, 0, 6)), "exact multiple: M=0")
    eq(F.download(nd, F.spath(F.SI, 1)), F.sha_hex(F.Pat(2048)), "exact multiple read back")


def test_node_prefers_smaller_blocks():
    nd = F.fresh({"szx": 4})
    data = F.Pat(3000, 4)
    q = ("h=" + F.sha_hex(data),)
    r = put_block(nd, F.spath(), 0, 1, 6, data[:1024], q)
    eq(r.code, P.CONTINUE, "block 0 of 1024 bytes taken")
    eq(block1(r), (0, 1, 4), "2.31 asks for SZX 4")
    # continue at the byte offset, numbered in 256-byte blocks: NUM 4
    r = put_block(nd, F.spath(), 4, 1, 4, data[1024:1280])
    eq((r.code, block1(r)), (P.CONTINUE, (4, 1, 4)), "block 4/4")
    r, k = F.upload(nd, F.spath(F.SI, 1), data, 6)
    eq((r.code, k), (P.CREATED, 9), "1024 then 256-byte blocks")
    eq(F.download(nd, F.spath(F.SI, 1)), F.sha_hex(data), "content")
    r = nd.ask(P.GET, F.spath(F.SI, 1))
    eq((len(r.pl), coap.block_of(r.opt(P.OPT_BLOCK2))), (256, (0, 1, 4)), "Block2 at the node's size")
    r = nd.ask(P.GET, F.spath(F.SI, 1), opts=((P.OPT_BLOCK2, coap.block_val(0, 0, 6)),))
    eq((len(r.pl), coap.block_of(r.opt(P.OPT_BLOCK2))), (256, (0, 1, 4)), "asked 1024, got 256")
    eq(F.download(nd, F.spath(F.SI, 1), 6), F.sha_hex(data), "client asking 1024-byte blocks")


def test_block2_larger_szx_keeps_byte_offset():
    # RESOURCES.md, Block2: a node answering at a smaller size "sends the
    # block that starts at the requested byte offset, numbered in its own
    # size". Block 1 of 1024 bytes on a 256-byte node is block 4 of 256.
    nd = F.fresh({"szx": 4})
    data = F.Pat(3000, 5)
    eq(F.upload(nd, F.spath(), data, 4)[0].code, P.CREATED, "stored")
    r = nd.ask(P.GET, F.spath(), opts=((P.OPT_BLOCK2, coap.block_val(1, 0, 6)),))
    eq(r.code, P.CONTENT, "2.05")
    eq(coap.block_of(r.opt(P.OPT_BLOCK2)), (4, 1, 4), "numbered in the node's size")
    eq(r.pl, data[1024:1280], "bytes at offset 1024")


def test_gap_is_408_naming_the_missing_block():
    # A lost block of a burst: later blocks get 4.08 with Block1 naming the
    # first block missing; the upload stays and resumes from there.
    nd = F.fresh()
    data = F.Pat(3000, 6)
    q = ("h=" + F.sha_hex(data),)
    eq(put_block(nd, F.spath(), 0, 1, 6, data[:1024], q).code, P.CONTINUE, "block 0")
    r = put_block(nd, F.spath(), 2, 0, 6, data[2048:])
    eq(r.code, P.REQUEST_ENTITY_INCOMPLETE, "skip block 1")
    eq(block1(r), (1, 1, 6), "4.08 names block 1")
    eq(put_block(nd, F.spath(), 1, 1, 6, data[1024:2048]).code, P.CONTINUE, "block 1 resumes")
    eq(put_block(nd, F.spath(), 1, 1, 6, data[1024:2048]).code, P.CONTINUE, "block 1 again: taken already")
    eq(put_block(nd, F.spath(), 2, 0, 6, data[2048:]).code, P.CREATED, "block 2 ends it")
    no_leftovers("gap")
    eq(F.download(nd, F.spath()), F.sha_hex(data), "content")


def test_nonzero_block_without_upload_408():
    nd = F.fresh()
    r = put_block(nd, F.spath(), 3, 1, 6, bytes(1024), ("h=" + "00" * 32,))
    eq(r.code, P.REQUEST_ENTITY_INCOMPLETE, "no transfer in progress")
    r = put_block(nd, F.spath(), 1, 0, 4, bytes(10))
    eq(r.code, P.REQUEST_ENTITY_INCOMPLETE, "last block, no transfer")
    no_leftovers("408")


def test_block0_restarts_transfer():
    nd = F.fresh()
    data = F.Pat(2500, 7)
    q = ("h=" + F.sha_hex(data),)
    eq(put_block(nd, F.spath(), 0, 1, 6, F.Pat(1024, 99)[:], ("h=" + "11" * 32,)).code, P.CONTINUE, "old")
    eq(put_block(nd, F.spath(), 1, 1, 6, F.Pat(1024, 98)[:]).code, P.CONTINUE, "old 1")
    eq(F.upload(nd, F.spath(), data)[0].code, P.CREATED, "a new block 0 restarts")
    eq(F.download(nd, F.spath()), F.sha_hex(data), "content of the new transfer only")
    no_leftovers("restart")


def test_retransmitted_block_new_mid():
    nd = F.fresh()
    data = F.Pat(3000, 8)
    q = ("h=" + F.sha_hex(data),)
    eq(put_block(nd, F.spath(), 0, 1, 6, data[:1024], q).code, P.CONTINUE, "block 0")
    r1 = put_block(nd, F.spath(), 1, 1, 6, data[1024:2048])
    r2 = put_block(nd, F.spath(), 1, 1, 6, data[1024:2048])  # ACK lost; new MID
    eq((r1.code, block1(r1)), (P.CONTINUE, (1, 1, 6)), "block 1")
    eq((r2.code, block1(r2)), (P.CONTINUE, (1, 1, 6)), "block 1 again: 2.31 again")
    eq(put_block(nd, F.spath(), 2, 0, 6, data[2048:]).code, P.CREATED, "last block")
    eq(F.download(nd, F.spath()), F.sha_hex(data), "block 1 stored once")


def test_block_size_mismatch_400():
    nd = F.fresh()
    q = ("h=" + "00" * 32,)
    eq(put_block(nd, F.spath(), 0, 1, 6, bytes(100), q).code, P.BAD_REQUEST, "M=1 with 100 bytes at SZX 6")
    eq(put_block(nd, F.spath(), 0, 1, 0, bytes(17), q).code, P.BAD_REQUEST, "M=1 with 17 bytes at SZX 0")
    no_leftovers("size mismatch")


def test_hash_mismatch_keeps_nothing():
    nd = F.fresh()
    data = F.Pat(2500, 10)
    r, k = F.upload(nd, F.spath(), data, h=F.sha_hex(F.Pat(2499, 10)))
    eq((r.code, k), (P.BAD_REQUEST, 3), "4.00 at the end")
    check(len(r.pl) > 0, "diagnostic")
    eq(no_leftovers("hash mismatch"), [], "no share, no temporary file, no directory")
    eq(nd.ask(P.GET, F.spath()).code, P.NOT_FOUND, "nothing stored")
    eq(nd.sh.count, 0, "count")
    r = nd.ask(P.PUT, F.spath(), query=(H0,), pl=b"single block")
    eq(r.code, P.BAD_REQUEST, "single-block PUT with a wrong hash")
    eq(no_leftovers("single-block mismatch"), [], "nothing kept")


def test_size1_over_max_share_413():
    nd = F.fresh({"max_share": 4096})
    data = F.Pat(5000, 11)
    r, k = F.upload(nd, F.spath(), data, size1=5000)
    eq((r.code, k), (P.REQUEST_ENTITY_TOO_LARGE, 1), "refused at block 0")
    eq(r.opt_uint(P.OPT_SIZE1), 4096, "Size1 = max_share")
    r, k = F.upload(nd, F.spath(), data)  # no Size1: refused when data pass 4096
    eq((r.code, k), (P.REQUEST_ENTITY_TOO_LARGE, 5), "data past max_share, at the block crossing it")
    eq(r.opt_uint(P.OPT_SIZE1), 4096, "Size1 = max_share")
    eq(no_leftovers("4.13"), [], "nothing kept")
    eq(put_block(nd, F.spath(), 4, 0, 6, data[4096:]).code, P.REQUEST_ENTITY_INCOMPLETE, "transfer dropped")
    eq(F.upload(nd, F.spath(), F.Pat(4096, 11), size1=4096)[0].code, P.CREATED, "exactly max_share fits")


def test_data_and_size1_disagree_400():
    nd = F.fresh()
    data = F.Pat(2500, 12)
    r, k = F.upload(nd, F.spath(), data, size1=1500)
    eq((r.code, k), (P.BAD_REQUEST, 2), "data exceeding Size1")
    eq(put_block(nd, F.spath(), 2, 0, 6, data[2048:]).code, P.REQUEST_ENTITY_INCOMPLETE, "transfer dropped")
    r, k = F.upload(nd, F.spath(), data, size1=3000)
    eq((r.code, k), (P.BAD_REQUEST, 3), "data shorter than Size1")
    eq(no_leftovers("Size1"), [], "nothing kept")
    eq(F.upload(nd, F.spath(), data, size1=2500)[0].code, P.CREATED, "matching Size1")


def test_missing_or_bad_hash_query_400():
    nd = F.fresh()
    data = F.Pat(100)[:]
    good = F.sha_hex(data)
    absent = ((), ("x=" + good,), ("h" + good,))
    bad = (("h=",), ("h=" + good[:-2],), ("h=" + good + "00",), ("h=" + "zz" * 32,))
    for q in absent + bad:
        r = nd.ask(P.PUT, F.spath(), query=q, pl=data)
        eq(r.code, P.BAD_REQUEST, "single-block PUT, query %r" % (q,))
    for q in bad:  # ill-formed on block 0: refused at once
        eq(put_block(nd, F.spath(), 0, 1, 0, data[:16], q).code, P.BAD_REQUEST, "Block1 query %r" % (q,))
    for q in absent:  # may still come with the last block
        eq(put_block(nd, F.spath(), 0, 1, 0, data[:16], q).code, P.CONTINUE, "Block1 query %r" % (q,))
        eq(put_block(nd, F.spath(), 1, 0, 0, data[16:32]).code, P.BAD_REQUEST, "no h= by the last block")
    eq(no_leftovers("bad h="), [], "nothing kept")
    eq(nd.ask(P.PUT, F.spath(), query=("h=" + good,), pl=data).code, P.CREATED, "good h=")
    eq(nd.ask(P.PUT, F.spath(F.SI, 1), query=("a=b", "h=" + good, "c"), pl=data).code, P.CREATED,
       "h= among other queries")


def test_hash_with_the_last_block():
    # One-pass uploads: the hash of a share still being computed comes last.
    nd = F.fresh()
    data = F.Pat(40)[:]
    h = "h=" + F.sha_hex(data)
    other = "h=" + F.sha_hex(data[:-1])
    path = F.spath(F.SI, 7)
    eq(put_block(nd, path, 0, 1, 0, data[:16]).code, P.CONTINUE, "block 0 without h=")
    eq(put_block(nd, path, 1, 1, 0, data[16:32]).code, P.CONTINUE, "block 1")
    eq(put_block(nd, path, 2, 0, 0, data[32:], (h,)).code, P.CREATED, "last block with h=")
    eq(F.download(nd, path), F.sha_hex(data), "stored as sent")
    # h= on block 0 and a different one on the last block: refused
    eq(put_block(nd, path, 0, 1, 0, data[:16], (other,)).code, P.CONTINUE, "block 0")
    eq(put_block(nd, path, 1, 1, 0, data[16:32]).code, P.CONTINUE, "block 1")
    eq(put_block(nd, path, 2, 0, 0, data[32:], (h,)).code, P.BAD_REQUEST, "h= changed")
    # a wrong hash given last is caught like one given first
    eq(put_block(nd, path, 0, 1, 0, data[:16]).code, P.CONTINUE, "block 0")
    eq(put_block(nd, path, 1, 1, 0, data[16:32]).code, P.CONTINUE, "block 1")
    eq(put_block(nd, path, 2, 0, 0, data[32:], (other,)).code, P.BAD_REQUEST, "hash mismatch")
    eq(F.download(nd, path), F.sha_hex(data), "the stored share is untouched")
    eq(no_leftovers("hash last"), [F.SI], "only the share's folder")


def test_bad_storage_index_or_shnum_400():
    nd = F.fresh()
    data = F.Pat(64)[:]
    q = ("h=" + F.sha_hex(data),)
    # wrong length, not base64url, non-canonical last character, hex form
    for si, num in ((F.SI[:21], "0"), (F.SI + "A", "0"), ("!" * 22, "0"), (F.SI[:-1] + "x", "0"),
                    ("0123456789abcdef0123456789abcdef", "0"), ("+" + F.SI[1:], "0"),
                    (F.SI, "256"), (F.SI, "01"), (F.SI, "-1"), (F.SI, "x"), (F.SI, " 1"),
                    (F.SI, "1.0"), (F.SI, "+1"), (F.SI, "1000")):
        path = "s/%s/%s" % (si, num)
        eq(nd.ask(P.PUT, path, query=q, pl=data).code, P.BAD_REQUEST, "PUT /" + path)
        eq(nd.ask(P.GET, path).code, P.BAD_REQUEST, "GET /" + path)
        eq(nd.ask(P.DELETE, path).code, P.BAD_REQUEST, "DELETE /" + path)
    eq(nd.ask(P.GET, "s/" + F.SI[:21]).code, P.BAD_REQUEST, "GET /s/<21 chars>")
    eq(no_leftovers("bad path"), [], "nothing kept")
    eq(nd.ask(P.PUT, F.spath(F.SI, 255), query=q, pl=data).code, P.CREATED, "shnum 255")
    eq(nd.ask(P.PUT, F.spath(F.SI, 0), query=q, pl=data).code, P.CREATED, "shnum 0")


def test_reserved_szx_7_is_400():
    # RFC 7959 2.2: SZX 7 "MUST lead to a 4.00 Bad Request response code
    # upon reception in a request".
    nd = F.fresh()
    eq(nd.ask(P.PUT, F.spath(), query=("h=" + F.sha_hex(b"abc"),), pl=b"abc").code, P.CREATED, "stored")
    r = nd.ask(P.GET, F.spath(), opts=((P.OPT_BLOCK2, b"\x07"),))
    eq(r.code, P.BAD_REQUEST, "Block2 SZX 7")
    r = put_block(nd, F.spath(F.SI, 1), 0, 0, 7, b"abc", ("h=" + F.sha_hex(b"abc"),))
    eq(r.code, P.BAD_REQUEST, "Block1 SZX 7")


F.run(globals())
