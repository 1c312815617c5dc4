# Share storage (ohnode.shares) through Server.datagram(): the listing GET /s
# and GET /s/<si> decoded with ohproto.cbor, DELETE of one share and of a
# storage index, the share count limit (max_shares), a full filesystem, and
# no growth of the heap over many requests.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_storage
import gc
import binascii
import mpfake as F
import mptest
from mptest import check, eq
from ohproto import const as P
from ohproto import cbor


def store(nd, si, num, data, **kw):
    r, k = F.upload(nd, F.spath(si, num), data, **kw)
    return r.code


def listing(nd):
    r = nd.ask(P.GET, "s")
    eq(r.code, P.CONTENT, "GET /s")
    eq(r.opt_uint(P.OPT_CONTENT_FORMAT), P.CF_CBOR, "Content-Format 60")
    check(r.opt(P.OPT_BLOCK2) is None, "listing fits one block")
    return cbor.loads(r.pl)


def entries(m):
    # LS_SHARES as {si hex: sorted [[shnum, size], ...]}
    out = {}
    for si, ents in m[P.LS_SHARES]:
        check(isinstance(si, bytes) and len(si) == P.SI_LEN, "si is a 16-byte bstr: %r" % (si,))
        out[F.si_text(si)] = sorted(ents)
    return out


def no_leftovers():
    for n in F.temporaries():
        check(False, "temporary file %s left" % n)


def test_empty_listing():
    nd = F.fresh({"max_share": 5000})
    m = listing(nd)
    eq(sorted(m), [0, 1, 2, 3, 4], "keys LS_FREE..LS_MAX_SHARE")
    eq(m[P.LS_TOTAL], 64 * 512, "total")
    check(0 < m[P.LS_FREE] <= m[P.LS_TOTAL], "free %r" % m[P.LS_FREE])
    eq(m[P.LS_COUNT], 0, "count")
    eq(m[P.LS_SHARES], [], "no shares")
    eq(m[P.LS_MAX_SHARE], 5000, "max_share from the configuration")
    eq(nd.ask(P.GET, "s/" + F.SI).code, P.NOT_FOUND, "GET /s/<si> of nothing")


def test_listing_and_share_set():
    nd = F.fresh()
    free0 = listing(nd)[P.LS_FREE]
    eq(store(nd, F.SI, 0, F.Pat(1500, 1)), P.CREATED, "SI/0")
    eq(store(nd, F.SI, 3, F.Pat(100, 2)), P.CREATED, "SI/3")
    eq(store(nd, F.SI2, 255, F.Pat(700, 3)), P.CREATED, "SI2/255")
    m = listing(nd)
    eq(m[P.LS_COUNT], 3, "count")
    eq(entries(m), {F.SI: [[0, 1500], [3, 100]], F.SI2: [[255, 700]]}, "shares")
    check(m[P.LS_FREE] < free0, "free space went down")
    r = nd.ask(P.GET, "s/" + F.SI)
    eq((r.code, r.opt_uint(P.OPT_CONTENT_FORMAT)), (P.CONTENT, P.CF_CBOR), "GET /s/<si>")
    eq(sorted(cbor.loads(r.pl)), [[0, 1500], [3, 100]], "share-set")
    eq(cbor.loads(nd.ask(P.GET, "s/" + F.SI2).pl), [[255, 700]], "share-set of SI2")
    eq(nd.ask(P.GET, "s/" + F.SI2.upper()).code, P.NOT_FOUND, "base64url is case-sensitive")
    st = cbor.loads(nd.ask(P.GET, "i").pl)
    eq(st[P.ST_SHARES], 3, "status counts shares")


def test_delete_one_and_all():
    nd = F.fresh()
    for num in (0, 1, 2):
        eq(store(nd, F.SI, num, F.Pat(300, num)), P.CREATED, "SI/%d" % num)
    eq(store(nd, F.SI2, 7, F.Pat(300, 7)), P.CREATED, "SI2/7")
    r = nd.ask(P.DELETE, F.spath(F.SI, 1))
    eq(r.code, P.DELETED, "DELETE one")
    eq(r.pl, b"", "2.02 has no payload")
    eq(nd.ask(P.DELETE, F.spath(F.SI, 1)).code, P.NOT_FOUND, "again: 4.04")
    eq(nd.ask(P.GET, F.spath(F.SI, 1)).code, P.NOT_FOUND, "gone")
    eq(F.download(nd, F.spath(F.SI, 2)), F.sha_hex(F.Pat(300, 2)), "neighbour intact")
    eq(listing(nd)[P.LS_COUNT], 3, "count after one delete")
    eq(nd.ask(P.DELETE, "s/" + F.SI).code, P.DELETED, "DELETE /s/<si>")
    eq(nd.ask(P.DELETE, "s/" + F.SI).code, P.NOT_FOUND, "again: 4.04")
    eq(nd.ask(P.GET, "s/" + F.SI).code, P.NOT_FOUND, "share-set gone")
    eq(nd.ask(P.GET, F.spath(F.SI, 0)).code, P.NOT_FOUND, "share 0 gone")
    m = listing(nd)
    eq((m[P.LS_COUNT], entries(m)), (1, {F.SI2: [[7, 300]]}), "listing after deletes")
    eq(F.ls("/oht/s"), [F.SI2], "empty storage index directory removed")
    eq(nd.ask(P.DELETE, F.spath(F.SI2, 7)).code, P.DELETED, "last share")
    eq((listing(nd)[P.LS_SHARES], nd.sh.count, F.ls("/oht/s")), ([], 0, []), "empty again")


def test_share_count_limit():
    nd = F.fresh({"max_shares": 2})
    eq(store(nd, F.SI, 0, F.Pat(300, 0)), P.CREATED, "first")
    eq(store(nd, F.SI, 1, F.Pat(1500, 1)), P.CREATED, "second")
    eq(store(nd, F.SI2, 0, F.Pat(1500, 2)), P.SERVICE_UNAVAILABLE, "third: 5.03")
    eq(store(nd, F.SI2, 1, F.Pat(200, 3)), P.SERVICE_UNAVAILABLE, "third, one block: 5.03")
    eq(nd.ask(P.GET, F.spath(F.SI2, 0)).code, P.NOT_FOUND, "third not kept")
    no_leftovers()
    eq(F.ls("/oht/s"), [F.SI], "nothing of the refused shares")
    eq((listing(nd)[P.LS_COUNT], nd.sh.count), (2, 2), "count")
    eq(nd.ask(P.DELETE, F.spath(F.SI, 0)).code, P.DELETED, "delete one")
    eq(store(nd, F.SI2, 0, F.Pat(1500, 2)), P.CREATED, "room again")
    eq(F.download(nd, F.spath(F.SI2, 0)), F.sha_hex(F.Pat(1500, 2)), "content")


def test_replace_at_share_count_limit():
    # Replacing a share does not add one: at the limit it must still work
    # (a repair re-uploads shares a node already holds).
    nd = F.fresh({"max_shares": 2})
    eq(store(nd, F.SI, 0, F.Pat(300, 0)), P.CREATED, "first")
    eq(store(nd, F.SI, 1, F.Pat(300, 1)), P.CREATED, "second")
    eq(store(nd, F.SI, 1, F.Pat(400, 5)), P.CHANGED, "replace the second at the limit")
    eq(F.download(nd, F.spath(F.SI, 1)), F.sha_hex(F.Pat(400, 5)), "replaced")


def fill(nd, size, first=0):
    # Store SI/<first>, SI/<first+1>, ... of `size` bytes until one fails;
    # returns (numbers stored, failing code).
    ok = []
    for num in range(first, first + 30):
        c = store(nd, F.SI, num, F.Pat(size, num))
        if c != P.CREATED:
            return ok, c
        ok.append(num)
    return ok, None


def test_filesystem_full():
    nd = F.fresh(n=24)  # 12 KiB of flash
    ok, code = fill(nd, 2000)
    eq(code, P.SERVICE_UNAVAILABLE, "5.03 when the filesystem is full")
    check(len(ok) >= 2, "stored %d shares first" % len(ok))
    bad = ok[-1] + 1
    eq(nd.ask(P.GET, F.spath(F.SI, bad)).code, P.NOT_FOUND, "nothing partial under the name")
    no_leftovers()
    eq(nd.sh.count, len(ok), "count")
    eq(listing(nd)[P.LS_COUNT], len(ok), "listing count")
    for num in ok:
        eq(F.download(nd, F.spath(F.SI, num)), F.sha_hex(F.Pat(2000, num)), "share %d intact" % num)
    eq(store(nd, F.SI, bad, F.Pat(2000, bad), size1=2000), P.SERVICE_UNAVAILABLE, "with Size1 too")
    no_leftovers()
    eq(nd.ask(P.DELETE, F.spath(F.SI, ok[0])).code, P.DELETED, "free one")
    eq(store(nd, F.SI, bad, F.Pat(2000, bad)), P.CREATED, "uploads work again")
    eq(F.download(nd, F.spath(F.SI, bad)), F.sha_hex(F.Pat(2000, bad)), "new share intact")


def test_filesystem_full_small_shares():
    # Many one-block shares in their own storage indexes (a directory each).
    nd = F.fresh(n=24)
    ok = []
    for i in range(40):
        si = F.si_text(bytes(15) + bytes([i + 1]))
        c = store(nd, si, 0, F.Pat(300, i))
        if c != P.CREATED:
            break
        ok.append(si)
    eq(c, P.SERVICE_UNAVAILABLE, "5.03 at the end")
    check(len(ok) >= 2, "some stored first")
    no_leftovers()
    eq(nd.sh.count, len(ok), "count")
    m = listing(nd)
    eq(sorted(entries(m)), ok, "listing: exactly the stored ones")
    for i, si in enumerate(ok):
        eq(F.download(nd, F.spath(si, 0)), F.sha_hex(F.Pat(300, i)), "share %d" % i)


def test_filesystem_full_mid_upload():
    # No Size1: the node finds out while writing (ENOSPC), not at block 0.
    nd = F.fresh(n=24)
    r, k = F.upload(nd, F.spath(), F.Pat(12000, 1))
    eq(r.code, P.SERVICE_UNAVAILABLE, "5.03 when the filesystem fills during the upload")
    check(k > 1, "refused after %d blocks" % k)
    no_leftovers()
    eq((nd.sh.count, F.ls("/oht/s")), (0, []), "nothing kept")
    eq(store(nd, F.SI, 1, F.Pat(2000, 1)), P.CREATED, "the space came back")


def test_free_space_sane_when_full():
    # littlefs's block count in use is an estimate that can exceed the
    # device (statvfs then wraps f_bfree); free must stay within 0..total.
    nd = F.fresh(n=24)
    for size in range(11000, 3000, -250):
        if store(nd, F.SI, 0, F.Pat(size, 1)) == P.CREATED:
            break
    eq(nd.sh.count, 1, "one big share fills the filesystem")
    m = listing(nd)
    check(0 <= m[P.LS_FREE] <= m[P.LS_TOTAL], "LS_FREE %d of LS_TOTAL %d" % (m[P.LS_FREE], m[P.LS_TOTAL]))
    st = cbor.loads(nd.ask(P.GET, "i").pl)
    check(st[P.ST_FS_FREE] <= st[P.ST_FS_TOTAL], "ST_FS_FREE %d of %d" % (st[P.ST_FS_FREE], st[P.ST_FS_TOTAL]))
    r, k = F.upload(nd, F.spath(F.SI, 1), F.Pat(3000, 2), size1=3000)
    eq((r.code, k), (P.SERVICE_UNAVAILABLE, 1), "Size1 larger than the free space: 5.03 at block 0")


def test_free_space_counted_without_walking_the_filesystem():
    # Free space is counted by walking littlefs once, then each new share's
    # blocks are charged against it: the figure stays at or below the real
    # one, and a delete counts again.
    import os

    nd = F.fresh(n=64)

    def real():
        s = os.statvfs("/oht/s")
        return s[0] * s[4]

    f0 = listing(nd)[P.LS_FREE]
    eq(f0, real(), "counted at first")
    for num in range(3):
        eq(store(nd, F.SI, num, F.Pat(2000, num)), P.CREATED, "PUT %d" % num)
    f1 = listing(nd)[P.LS_FREE]
    check(f1 <= real(), "estimate %d at or below the real %d" % (f1, real()))
    check(f1 <= f0 - 3 * 2000, "three shares charged: %d -> %d" % (f0, f1))
    eq(nd.ask(P.DELETE, F.spath(F.SI, 0)).code, P.DELETED, "DELETE")
    eq(listing(nd)[P.LS_FREE], real(), "counted again after a delete")


def test_heap_does_not_grow():
    nd = F.fresh()

    def round(i):
        nd.ask(P.GET, "i")
        nd.ask(P.GET, "s")
        nd.ask(P.GET, ".well-known/core", query=("rt=oh.s",))
        eq(store(nd, F.SI, 1, F.Pat(2500, i)), P.CREATED if i == 0 else P.CHANGED, "PUT")
        eq(F.download(nd, F.spath(F.SI, 1), 4), F.sha_hex(F.Pat(2500, i)), "GET")
        nd.ask(P.GET, "s/" + F.SI)
        nd.ask(P.PUT, F.spath(F.SI, 2), query=("h=" + "00" * 32,), pl=b"x")  # 4.00
        nd.ask(P.GET, F.spath(F.SI, 9), opts=((P.OPT_BLOCK1, b"\x38"),), pl=bytes(16))  # 4.08
        nd.feed(b"\x40\x01")  # dropped
        nd.feed(b"\x40\x00\x12\x34")  # ping
        eq(store(nd, F.SI2, 0, F.Pat(100, i)), P.CREATED, "PUT small")
        eq(nd.ask(P.DELETE, "s/" + F.SI2).code, P.DELETED, "DELETE")

    round(0)
    round(1)
    gc.collect()
    first = gc.mem_free()
    for i in range(2, 22):
        round(i)
    gc.collect()
    last = gc.mem_free()
    check(first - last <= 256, "heap free went from %d to %d over 20 rounds" % (first, last))


F.run(globals())
