# ohnode.codecache, resource /c: PUT with Block1 into a temporary file, the
# SHA-256 check and the rename into place, GET /c, DELETE, the size bound and
# least-recently-used eviction, modules surviving a reset.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_codecache
import os
import gc
import mpfake as F
import mptask as T
from mptest import check, eq
from ohnode import coap
from ohproto import const as P
from ohproto import cbor

MODS = "/rom/taskmods/"


def mpy(stem):
    with open(MODS + stem + ".mpy", "rb") as f:
        return f.read()


def cpath(h):
    return "c/" + h


def node(cfg=None):
    gc.collect()
    nd = F.fresh(cfg, n=96)
    T.wire(nd)
    return nd


class Ran:
    # Stands in for ohnode.tasks at /t: the modules tasks ran lately, and
    # those the cache told it to drop (revoke).
    def __init__(self, recent):
        self.recent = recent
        self.revoked = []

    def revoke(self, nm):
        self.revoked.append(nm)


def put(nd, data, h=None, szx=6):
    return F.upload(nd, cpath(h or F.sha_hex(data)), data, szx=szx, h="")[0]


def listed(nd):
    r = nd.ask(P.GET, "c")
    eq(r.code, P.CONTENT, "GET /c")
    return sorted(x.hex() for x in cbor.loads(r.pl))


def files():
    return F.ls("/oht/c")


def test_put_list_delete():
    nd = node()
    data = mpy("tk_basic")
    h = F.sha_hex(data)
    eq(listed(nd), [], "empty cache")
    r = put(nd, data)
    eq(r.code, P.CREATED, "first PUT")
    eq(put(nd, data).code, P.CHANGED, "the same module again")
    eq(listed(nd), [h], "GET /c lists its hash")
    eq(files(), [h + ".mpy"], "stored by hash, no temporary left")
    with open("/oht/c/%s.mpy" % h, "rb") as f:
        eq(f.read() == data, True, "stored bytes")
    eq(nd.ask(P.DELETE, cpath(h)).code, P.DELETED, "DELETE")
    eq(nd.ask(P.DELETE, cpath(h)).code, P.NOT_FOUND, "DELETE again")
    eq(listed(nd), [], "gone")


def test_block1_small_blocks_and_reset():
    nd = node()
    data = mpy("tk_imports")
    check(len(data) > 256, "several blocks at SZX 3")
    r = put(nd, data, szx=3)
    eq(r.code, P.CREATED, "Block1 upload of 128-byte blocks")
    h = F.sha_hex(data)
    nd.boot("/oht")  # a reset: the module stays
    T.wire(nd)
    eq(listed(nd), [h], "listed after a reset")


def test_hash_mismatch_keeps_nothing():
    nd = node()
    data = mpy("tk_basic")
    wrong = F.sha_hex(b"something else")
    r = put(nd, data, h=wrong)
    eq(r.code, P.BAD_REQUEST, "hash mismatch")
    eq(r.pl, b"hash mismatch", "diagnostic")
    eq(files(), [], "nothing kept, no temporary")
    eq(nd.ask(P.PUT, "c/ABC", pl=b"x").code, P.BAD_REQUEST, "a path that is no hash")
    eq(nd.ask(P.PUT, cpath(wrong.upper()), pl=b"x").code, P.BAD_REQUEST, "upper case hex")
    eq(nd.ask(P.POST, "c").code, P.METHOD_NOT_ALLOWED, "POST /c")


def test_gap_names_missing_block():
    nd = node()
    data = mpy("tk_imports")
    h = F.sha_hex(data)
    b1 = lambda n, m: ((P.OPT_BLOCK1, coap.block_val(n, m, 2)),)  # noqa: E731 (64-byte blocks)
    eq(nd.ask(P.PUT, cpath(h), opts=b1(0, 1), pl=data[:64]).code, P.CONTINUE, "block 0")
    r = nd.ask(P.PUT, cpath(h), opts=b1(2, 1), pl=data[128:192])
    eq(r.code, P.REQUEST_ENTITY_INCOMPLETE, "block 2 before block 1")
    eq(coap.block_of(r.opt(P.OPT_BLOCK1)), (1, 1, 2), "4.08 names block 1")
    eq(nd.ask(P.PUT, cpath(h), opts=b1(1, 1), pl=data[64:128]).code, P.CONTINUE, "block 1 resumes")
    eq(nd.ask(P.PUT, cpath(h), opts=b1(1, 1), pl=data[64:128]).code, P.CONTINUE, "block 1 again: taken")
    n = (len(data) + 63) // 64
    for i in range(2, n):
        r = nd.ask(P.PUT, cpath(h), opts=b1(i, int(i < n - 1)), pl=data[64 * i : 64 * i + 64])
    eq(r.code, P.CREATED, "the rest, then stored")
    eq(listed(nd), [h], "listed")


def test_bound_and_lru_eviction():
    a = mpy("tk_basic")
    b = mpy("tk_evil")
    cap = len(a) + 2 * len(b) - 16  # a, b and b2 do not fit together
    nd = node({"code_cache": cap})
    r = nd.ask(P.PUT, cpath(F.sha_hex(b"big")), opts=((P.OPT_BLOCK1, coap.block_val(0, 1, 2)), (P.OPT_SIZE1, cap + 1)),
               pl=bytes(64))
    eq(r.code, P.REQUEST_ENTITY_TOO_LARGE, "Size1 beyond the cache")
    eq(r.opt_uint(P.OPT_SIZE1), cap, "4.13 carries the cache size")
    r = None
    b2 = b + b"\x00"  # another module of (about) the same size
    eq(put(nd, b).code, P.CREATED, "b")
    r = put(nd, a)
    eq((r.code, r.pl), (P.CREATED, b""), "a")
    ran = nd.srv.res[P.PATH_TASKS] = Ran([F.sha_hex(b)])  # a task ran b: a is the least recently used
    eq(put(nd, b2).code, P.CREATED, "b2 needs room")
    del nd.srv.res[P.PATH_TASKS]
    eq(ran.revoked, [F.sha_hex(a)], "the task machinery drops its loaded copy of a")
    eq(listed(nd), sorted([F.sha_hex(b), F.sha_hex(b2)]), "a evicted, b (used) kept")
    total = sum(os.stat("/oht/c/" + n)[6] for n in files())
    check(total <= cap, "within the bound: %d > %d" % (total, cap))
    check(P.PATH_CODE not in nd.srv.res, "unloaded once answered, with no upload in progress")
    eq(listed(nd), sorted([F.sha_hex(b), F.sha_hex(b2)]), "made again on the next request")
    eq(nd.ask(P.PUT, cpath(F.sha_hex(b)), opts=((P.OPT_BLOCK1, coap.block_val(0, 1, 2)),), pl=b[:64]).code,
       P.CONTINUE, "an upload begins")
    check(P.PATH_CODE in nd.srv.res, "kept while it is in progress")
    eq(T.retire(nd, 1999), 0, "not idle yet")
    eq(T.retire(nd, 60001), 1, "an abandoned upload goes when idle")
    eq(files(), sorted([F.sha_hex(b) + ".mpy", F.sha_hex(b2) + ".mpy"]), "no temporary left")


F.run(globals())
