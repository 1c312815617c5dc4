# Uploads in progress (ohnode.shares): crash safety, expiry, concurrency.
# A reset is simulated by copying the flash image at that instant (mpfake
# power_cut) and starting new resources (Shares, Status) on the copy, as the
# board does at boot: no partial share under a real name, no temporary file
# left, the count right, an old share intact after an interrupted
# replacement. Expiry runs on a fake clock; two upload slots, a third
# upload gets 5.03.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_uploads
import mpfake as F
import mptest
from mptest import check, eq
from ohnode import coap
from ohnode import shares as S
from ohproto import const as P
from ohproto import cbor

OLD = F.Pat(2500, 1)
NEW = F.Pat(3000, 2)


def store(nd, path, data, **kw):
    return F.upload(nd, path, data, **kw)[0].code


def ups(d):
    return [n for n in (F.ls(d) or []) if n.startswith(".up")]


def reboot(nd):
    # Power cut now; the board boots on what the flash holds.
    F.power_cut("/oht", "/oht2")
    nd.boot("/oht2")
    return nd


def check_listing(nd, want):
    # GET /s: count and entries agree with `want` {si: [[shnum, size]...]}
    m = cbor.loads(nd.ask(P.GET, "s").pl)
    got = {}
    for si, ents in m[P.LS_SHARES]:
        check(len(ents) > 0, "share-set of %s is empty (share-set = [+ share])" % F.si_text(si))
        got[F.si_text(si)] = sorted(ents)
    eq(got, want, "listing")
    eq(m[P.LS_COUNT], sum(len(v) for v in want.values()), "LS_COUNT")
    eq(nd.sh.count, m[P.LS_COUNT], "count")


def test_reset_mid_upload():
    nd = F.fresh()
    eq(store(nd, F.spath(F.SI, 1), OLD), P.CREATED, "an older share")
    r, k = F.upload(nd, F.spath(F.SI, 0), NEW, stop=2)
    eq((r.code, k), (P.CONTINUE, 2), "two blocks in")
    eq(ups("/oht/s/" + F.SI), [".up0"], "the upload streams into a temporary file in the share's folder")
    reboot(nd)
    eq(ups("/oht2/s/" + F.SI), [], "temporary file removed at boot")
    eq(nd.ask(P.GET, F.spath(F.SI, 0)).code, P.NOT_FOUND, "no partial share")
    eq(F.download(nd, F.spath(F.SI, 1)), F.sha_hex(OLD), "older share intact")
    check_listing(nd, {F.SI: [[1, 2500]]})
    eq(store(nd, F.spath(F.SI, 0), NEW), P.CREATED, "the upload can be redone")
    check_listing(nd, {F.SI: [[0, 3000], [1, 2500]]})


def test_reset_mid_replacement():
    nd = F.fresh()
    eq(store(nd, F.spath(), OLD), P.CREATED, "old share")
    eq(F.upload(nd, F.spath(), NEW, stop=2)[0].code, P.CONTINUE, "replacement under way")
    reboot(nd)
    eq(ups("/oht2/s/" + F.SI), [], "temporary file removed")
    eq(F.download(nd, F.spath()), F.sha_hex(OLD), "old content")
    check_listing(nd, {F.SI: [[0, 2500]]})


def test_reset_after_last_block_before_reply():
    # The board resets right after the last block's 2.01 went out: the share
    # is complete (the client was told so).
    nd = F.fresh()
    eq(store(nd, F.spath(), NEW), P.CREATED, "stored")
    reboot(nd)
    eq(F.download(nd, F.spath()), F.sha_hex(NEW), "complete share")
    check_listing(nd, {F.SI: [[0, 3000]]})


class Cut(Exception):
    pass


class OsAt:
    # ohnode.shares' `os`, with a power cut (or an error) at one call.
    def __init__(self, name, err=None):
        self.name, self.err = name, err

    def __getattr__(self, a):
        f = getattr(S._real_os, a)
        if a != self.name:
            return f

        def hook(*args):
            if self.err:
                raise self.err
            F.power_cut("/oht", "/oht2")
            raise Cut()

        return hook


S._real_os = S.os


def commit_with(nd, hook, path, data):
    # Upload data; ohnode.shares sees `hook` as its os module meanwhile.
    S.os = hook
    try:
        return store(nd, path, data)
    except Cut:
        return None
    finally:
        S.os = S._real_os


def test_reset_while_renaming_replacement():
    # The node writes the new share under a temporary name and renames it
    # into place; a reset at that rename must leave the old share (or the
    # new one), never none. littlefs's rename replaces atomically.
    nd = F.fresh()
    eq(store(nd, F.spath(), OLD), P.CREATED, "old share")
    eq(commit_with(nd, OsAt("rename"), F.spath(), NEW), None, "power cut at the rename")
    nd.boot("/oht2")
    got = F.download(nd, F.spath())
    check(got in (F.sha_hex(OLD), F.sha_hex(NEW)), "share lost by a reset during its replacement: %r" % got)
    eq(ups("/oht2/s"), [], "temporary file removed")
    eq(nd.sh.count, 1, "count")


def test_reset_while_renaming_new_share():
    # A reset just before a new share is renamed into place: after boot no
    # trace of it, and the listing has no storage index without shares.
    nd = F.fresh()
    eq(store(nd, F.spath(F.SI, 0), OLD), P.CREATED, "a share of another index")
    eq(commit_with(nd, OsAt("rename"), F.spath(F.SI2, 0), NEW), None, "power cut at the rename")
    nd.boot("/oht2")
    eq(nd.ask(P.GET, F.spath(F.SI2, 0)).code, P.NOT_FOUND, "no share")
    eq(nd.ask(P.GET, "s/" + F.SI2).code, P.NOT_FOUND, "no share-set")
    check_listing(nd, {F.SI: [[0, 2500]]})


def test_rename_failure_keeps_old_share():
    # The rename into place fails (flash full: ENOSPC): 5.03, and the share
    # that was there is still there, with its content, and counted.
    nd = F.fresh()
    eq(store(nd, F.spath(), OLD), P.CREATED, "old share")
    code = commit_with(nd, OsAt("rename", OSError(28)), F.spath(), NEW)
    eq(code, P.SERVICE_UNAVAILABLE, "5.03")
    eq(ups("/oht/s"), [], "temporary file removed")
    eq(F.download(nd, F.spath()), F.sha_hex(OLD), "old share still readable")
    check_listing(nd, {F.SI: [[0, 2500]]})


def test_upload_expiry():
    clock = F.Clock()
    nd = F.fresh(clock=clock)
    data = F.Pat(5000, 3)
    h = ("h=" + F.sha_hex(data),)

    def blk(num, peer=F.PEER, q=()):
        o = ((P.OPT_BLOCK1, coap.block_val(num, 1, 6)),)
        return nd.ask(P.PUT, F.spath(), peer=peer, opts=o, query=q, pl=data[num * 1024 : num * 1024 + 1024]).code

    eq(blk(0, q=h), P.CONTINUE, "block 0")
    clock.t += 59000
    eq(blk(1), P.CONTINUE, "59 s later: still going")
    clock.t += 59000
    eq(blk(2), P.CONTINUE, "59 s after the last block: still going")
    clock.t += 60001
    eq(blk(3), P.REQUEST_ENTITY_INCOMPLETE, "60 s silent: abandoned")
    eq(ups("/oht/s"), [], "its temporary file removed")
    eq(nd.ask(P.GET, F.spath()).code, P.NOT_FOUND, "nothing stored")
    # Both slots taken, then abandoned: the slots come free.
    eq(F.upload(nd, F.spath(F.SI, 1), data, peer=F.PEER, stop=1)[0].code, P.CONTINUE, "slot 1")
    eq(F.upload(nd, F.spath(F.SI, 2), data, peer=F.PEER2, stop=1)[0].code, P.CONTINUE, "slot 2")
    eq(F.upload(nd, F.spath(F.SI, 3), data, peer=F.PEER3, stop=1)[0].code, P.SERVICE_UNAVAILABLE, "no slot")
    clock.t += 61000
    eq(store(nd, F.spath(F.SI, 3), data, peer=F.PEER3), P.CREATED, "slots freed by expiry")
    eq(ups("/oht/s"), [], "temporary files removed")
    eq(nd.sh.count, 1, "count")


def test_expiry_across_tick_wrap():
    # ticks_ms wraps; ticks_diff handles it. An upload started just before
    # the wrap is not dropped right after it.
    import time

    clock = F.Clock()
    clock.t = time.ticks_add(0, -1000)
    nd = F.fresh(clock=clock)
    r, k = F.upload(nd, F.spath(), NEW, stop=1)
    eq(r.code, P.CONTINUE, "block 0")
    clock.t = time.ticks_add(clock.t, 2000)
    o = ((P.OPT_BLOCK1, coap.block_val(1, 1, 6)),)
    eq(nd.ask(P.PUT, F.spath(), opts=o, pl=NEW[1024:2048]).code, P.CONTINUE, "after the wrap")


def test_two_uploads_at_once_third_refused():
    nd = F.fresh()
    a, b, c = F.Pat(3000, 4), F.Pat(2500, 5), F.Pat(1500, 6)
    pa, pb, pc = F.spath(F.SI, 0), F.spath(F.SI2, 0), F.spath(F.SI, 1)

    def blk(path, data, num, peer, q=()):
        more = (num + 1) * 1024 < len(data)
        o = ((P.OPT_BLOCK1, coap.block_val(num, more, 6)),)
        return nd.ask(P.PUT, path, peer=peer, opts=o, query=q, pl=data[num * 1024 : num * 1024 + 1024])

    eq(blk(pa, a, 0, F.PEER, ("h=" + F.sha_hex(a),)).code, P.CONTINUE, "A block 0")
    eq(blk(pb, b, 0, F.PEER2, ("h=" + F.sha_hex(b),)).code, P.CONTINUE, "B block 0")
    r = blk(pc, c, 0, F.PEER3, ("h=" + F.sha_hex(c),))
    eq(r.code, P.SERVICE_UNAVAILABLE, "third upload: 5.03")
    check(r.opt_uint(P.OPT_MAX_AGE) is not None, "Max-Age says when to retry")
    for num in (1, 2):  # interleaved
        eq(blk(pa, a, num, F.PEER).code, P.CONTINUE if num < 2 else P.CREATED, "A block %d" % num)
        eq(blk(pb, b, num, F.PEER2).code, P.CONTINUE if num < 2 else P.CREATED, "B block %d" % num)
    eq(F.download(nd, pa), F.sha_hex(a), "A content")
    eq(F.download(nd, pb), F.sha_hex(b), "B content")
    eq(store(nd, pc, c, peer=F.PEER3), P.CREATED, "the third, later")
    eq((nd.sh.count, ups("/oht/s")), (3, []), "count, no temporary files")


def test_same_share_from_two_peers():
    # Two clients store the same share at once: each transfer is its own;
    # both complete, the share is whole (one or the other).
    nd = F.fresh()
    a, b = F.Pat(2500, 7), F.Pat(2500, 8)
    F.upload(nd, F.spath(), a, peer=F.PEER, stop=1)
    F.upload(nd, F.spath(), b, peer=F.PEER2, stop=1)
    o1 = ((P.OPT_BLOCK1, coap.block_val(1, 1, 6)),)
    o2 = ((P.OPT_BLOCK1, coap.block_val(2, 0, 6)),)
    eq(nd.ask(P.PUT, F.spath(), peer=F.PEER, opts=o1, pl=a[1024:2048]).code, P.CONTINUE, "A 1")
    eq(nd.ask(P.PUT, F.spath(), peer=F.PEER2, opts=o1, pl=b[1024:2048]).code, P.CONTINUE, "B 1")
    eq(nd.ask(P.PUT, F.spath(), peer=F.PEER, opts=o2, pl=a[2048:]).code, P.CREATED, "A done")
    eq(nd.ask(P.PUT, F.spath(), peer=F.PEER2, opts=o2, pl=b[2048:]).code, P.CHANGED, "B replaces")
    eq(F.download(nd, F.spath()), F.sha_hex(b), "B's share")
    eq((nd.sh.count, ups("/oht/s")), (1, []), "count, no temporary files")


F.run(globals())
