# Test doubles for the firmware tests tests/firmware/mp_test_*.py, which run
# on MicroPython with the board heap (64 KiB) next to the whole firmware (the harness gives 96 KiB; see test_micropython_suite).
# The harness compiles this module into the ROMFS with the scripts, so its
# code costs no heap; what it allocates does: keep buffers few and fixed.
#
#   Pat       test data made on demand (Pat(n, seed)[a:b] -> bytes), so a
#             share of several KB never needs one contiguous heap block
#   Sock      records sendto(data, peer) (data copied)
#   Clock     fake millisecond clock; .ticks() is the (ticks_ms, ticks_diff)
#             pair Shares and Status take
#   Dev       littlefs block device (readblocks/writeblocks with offsets,
#             ioctl 4/5/6) over a small image file in $TMPDIR or /tmp: the
#             filesystem's bytes live outside the heap, and power_cut() can
#             copy the flash as it is at any instant
#   mount, fresh, power_cut, cleanup   filesystems for the tests
#   Node      Server + Client + Shares + Status on a mounted filesystem, fed
#             with Server.datagram() (no UDP); ask() sends one request
#             (mptask.wire() adds the code cache and tasks)
#   upload, download   Block1 PUT / Block2 GET loops like a CoAP client's
#   run       mptest.run with a gc.collect() before each test, then cleanup
#
# Import it first in a test script, and end the script with F.run(globals()).
import gc
import os
import vfs
import time
import hashlib
import binascii
from ohnode import coap
from ohproto import const as P

# The firmware, imported now: its long-lived objects then sit together at
# the bottom of the heap, not scattered among a test's garbage (the node
# does the same before it serves).
from ohnode import server, client, shares, status, wkc  # noqa
from ohproto import cbor  # noqa

# Collect often, as the node does (node.py, gc_threshold): short-lived
# garbage is then freed before it spreads long-lived objects over the heap.
gc.threshold(4096)

PEER = ("127.0.0.1", 40001)
PEER2 = ("127.0.0.1", 40002)
PEER3 = ("127.0.0.2", 40001)
def si_text(b):
    # A storage index's path form: base64url of its 16 bytes, unpadded.
    return binascii.b2a_base64(b).decode()[:22].replace("+", "-").replace("/", "_")


SI = "ASNFZ4mrze8BI0VniavN7w"  # 0123456789abcdef0123456789abcdef in hex
SI2 = "_ty6mHZUMhD-3LqYdlQyEA"  # fedcba9876543210fedcba9876543210 in hex


class Pat:
    # n bytes of test data, made on demand: Pat(n, seed)[a:b] is bytes, so
    # a share of several KB never needs one contiguous block of heap.
    # Every 16-byte block differs, so a shifted or repeated block shows.
    def __init__(self, n, seed=0):
        self.n, self.seed = n, seed

    def __len__(self):
        return self.n

    def __getitem__(self, s):
        a, b, _ = s.indices(self.n)
        k = self.seed * 31
        r = bytearray(max(0, b - a))
        for i in range(a, b):
            r[i - a] = (i + (i >> 4) * 5 + k) & 0xFF
        return bytes(r)


def sha_hex(data):
    # Hex SHA-256 of bytes or of a Pat.
    hs = hashlib.sha256()
    for o in range(0, len(data), 256):
        hs.update(data[o : o + 256])
    return binascii.hexlify(hs.digest()).decode()


class Sock:
    def __init__(self):
        self.out = []
        self._big = [bytearray(1300)]  # more only for bursts
        self.nbig = 0  # big buffers used since the last feed

    def sendto(self, data, peer):
        n = len(data)
        if n > 200:  # kept in reused buffers, one per large datagram
            if not self.out:  # what was sent before has been taken
                self.nbig = 0
            if self.nbig == len(self._big):
                self._big.append(bytearray(1300))
            b = self._big[self.nbig]
            self.nbig += 1
            b[:n] = data
            data = memoryview(b)[:n]
        self.out.append((bytes(data) if n <= 200 else data, peer))


class Clock:
    t = 1000

    def ms(self):
        return self.t

    def ticks(self):
        return (self.ms, time.ticks_diff)


class Dev:
    # n blocks of bs bytes in the image file `path`.
    def __init__(self, path, n, bs, fresh=True):
        self.path, self.n, self.bs = path, n, bs
        if fresh:
            with open(path, "wb") as f:
                for _ in range(n):
                    f.write(bytes(bs))
        self.f = open(path, "r+b")

    def readblocks(self, b, buf, off=0):
        self.f.seek(b * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, b, buf, off=None):
        try:
            self.f.seek(b * self.bs + (off or 0))
            self.f.write(buf)
        except ValueError:
            # Closed: this device was dropped, and the collector closed its
            # file before a firmware file left open on it. Nobody reads it.
            pass

    def ioctl(self, op, arg):
        return self.n if op == 4 else self.bs if op == 5 else 0


_mounted = {}  # mount point -> Dev
_seq = [0]


def mount(at, n=64, bs=512, dev=None):
    # Mount dev, or a new formatted device of n blocks, at `at` (replacing
    # what this module mounted there before).
    drop(at)
    if dev is None:
        _seq[0] += 1
        p = "%s/ohmp-%s-%d.img" % (os.getenv("TMPDIR") or "/tmp", binascii.hexlify(os.urandom(4)).decode(), _seq[0])
        dev = Dev(p, n, bs)
        vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), at)
    _mounted[at] = dev
    return dev


def drop(at):
    # Unmount and delete the image.
    d = _mounted.pop(at, None)
    if d:
        vfs.umount(at)
        os.remove(d.path)


def cleanup():
    for at in list(_mounted):
        drop(at)


def power_cut(at, new_at):
    # The flash of the filesystem at `at` as it is this instant (a reset
    # here), copied to a new image and mounted at new_at.
    d = _mounted[at]
    p = d.path + "-cut"
    buf = bytearray(d.bs)
    with open(p, "wb") as f:
        for b in range(d.n):
            d.readblocks(b, buf)
            f.write(buf)
    return mount(new_at, dev=Dev(p, d.n, d.bs, False))


def ls(d):
    try:
        return sorted(os.listdir(d))
    except OSError:
        return None


def temporaries(d="/oht/s"):
    # Upload and lease temporaries (.up<slot>, .lt) in the share store d and
    # its folders, as "folder/name".
    out = []
    for n in ls(d) or []:
        if n.startswith(".up") or n == ".lt":
            out.append(n)
        for m in ls(d + "/" + n) or []:
            if m.startswith(".up") or m == ".lt":
                out.append(n + "/" + m)
    return out


def _collected(fn):
    def t():
        gc.collect()
        try:
            fn()
        except MemoryError:  # show the heap: how much, how fragmented
            import micropython

            gc.collect()
            micropython.mem_info()
            raise

    return t


def run(ns):
    # mptest.run(ns) with a gc.collect() before each test, then remove the
    # image files, also when tests failed.
    import mptest

    for k in ns:
        if k.startswith("test_"):
            ns[k] = _collected(ns[k])
    try:
        mptest.run(ns)
    finally:
        cleanup()


_B = bytearray(1400)


def msg(code, path="", t=P.CON, mid=1, tok=b"\x01", opts=(), query=(), pl=None, buf=None):
    # One request datagram (bytes; a memoryview into buf when buf is given).
    # opts: [(number, bytes or int)] in any order; options of the same
    # number keep their order.
    o = []
    for n, v in [(P.OPT_URI_PATH, s) for s in path.split("/") if s] + [(P.OPT_URI_QUERY, q) for q in query] + list(opts):
        if isinstance(v, int):
            v = coap.uint_bytes(v)
        elif isinstance(v, str):
            v = v.encode()
        i = len(o)
        while i and o[i - 1][0] > n:
            i -= 1
        o.insert(i, (n, v))
    if buf is not None:
        return memoryview(buf)[: coap.build(buf, t, code, mid, tok, o, pl)]
    buf = bytearray(300 + (len(pl) if pl else 0))
    return bytes(buf[: coap.build(buf, t, code, mid, tok, o, pl)])


def parse(data):
    m = coap.Msg()
    coap.parse(data, m)
    m.pl = bytes(m.pl)
    return m


class Node:
    mid = 0x1000

    def __init__(self, root, cfg=None, clock=None):
        cfg = cfg or {}
        cfg.setdefault("name", "n1")
        cfg.setdefault("board", "virtual")
        cfg.setdefault("block_size", 512)
        self.cfg = cfg
        self.clock = clock or Clock()
        self.sock = Sock()
        self.srv = server.Server(self.sock, cfg)
        self.srv.client = client.Client(self.srv)
        self.boot(root)

    def boot(self, root):
        # New resources on root, as after a reset of the board.
        tk = self.clock.ticks()
        res = self.srv.res
        res.clear()
        self.sh = shares.Shares(self.srv, root, self.cfg, tk)
        res[P.PATH_SHARES] = self.sh
        res[P.PATH_STATUS] = status.Status(self.srv, self.cfg, self.sh, tk)

    def feed(self, data, peer=PEER):
        # One datagram in; what the node sent: [(bytes, peer)].
        self.sock.nbig = 0
        self.srv.datagram(data, peer)
        o = self.sock.out
        self.sock.out = []
        return o

    def ask(self, code, path="", peer=PEER, mid=None, **kw):
        # One request; its single response, parsed.
        if mid is None:
            self.mid = mid = (self.mid + 1) & 0xFFFF
        o = self.feed(msg(code, path, mid=mid, buf=_B, **kw), peer)
        if len(o) != 1 or o[0][1] != peer:
            raise AssertionError("want one datagram to %r, got %r" % (peer, o))
        return parse(o[0][0])


def block1(r):
    # The Block1 option of a response as (num, more, szx); it must be there.
    v = r.opt(P.OPT_BLOCK1)
    if v is None:
        raise AssertionError("response %x without Block1" % r.code)
    return coap.block_of(v)


def put_block(nd, path, num, more, szx, pl, q=(), peer=PEER, opts=()):
    # One Block1 PUT request; its response.
    o = [(P.OPT_BLOCK1, coap.block_val(num, more, szx))] + list(opts)
    return nd.ask(P.PUT, path, peer=peer, opts=o, query=q, pl=pl)


def fresh(cfg=None, n=64, clock=None):
    # A node on a new empty filesystem of n 512-byte blocks at /oht.
    mount("/oht", n)
    return Node("/oht", cfg, clock)


def spath(si=SI, num=0):
    return "s/%s/%d" % (si, num)


def upload(nd, path, data, szx=6, h=None, size1=None, peer=PEER, stop=0):
    # PUT data (bytes or Pat) with Block1 (block 0 carries h= and Size1),
    # taking a smaller SZX from the node as RFC 7959 2.5 says. Ends at the
    # first response that is not 2.31, or after `stop` blocks. Returns
    # (last response, number of requests): all responses but the last were
    # 2.31.
    h = h if h is not None else sha_hex(data)
    num = off = n = 0
    while True:
        bs = 1 << (szx + 4)
        more = off + bs < len(data)
        opts = [(P.OPT_BLOCK1, coap.block_val(num, more, szx))]
        q = ()
        if num == 0:
            q = ("h=" + h,) if h else ()
            if size1 is not None:
                opts.append((P.OPT_SIZE1, size1))
        r = nd.ask(P.PUT, path, peer=peer, opts=opts, query=q, pl=data[off : off + bs])
        n += 1
        if r.code != P.CONTINUE or not more or n == stop:
            return r, n
        szx = min(szx, coap.block_of(r.opt(P.OPT_BLOCK1))[2])
        off += bs
        num = off >> (szx + 4)


def download(nd, path, szx=None, peer=PEER):
    # GET with Block2 until M=0: sha_hex() of the bytes received (not the
    # bytes: the heap is small), or the first error code (int). Checks that
    # every block starts where the previous one ended.
    hs = hashlib.sha256()
    got = num = 0
    while True:
        opts = () if szx is None else ((P.OPT_BLOCK2, coap.block_val(num, 0, szx)),)
        r = nd.ask(P.GET, path, peer=peer, opts=opts)
        if r.code != P.CONTENT:
            return r.code
        b = r.opt(P.OPT_BLOCK2)
        if b is not None:
            num, more, szx = coap.block_of(b)
            if num << (szx + 4) != got:
                raise AssertionError("block %d szx %d at offset %d" % (num, szx, got))
        hs.update(r.pl)
        got += len(r.pl)
        if b is None or not more:
            return binascii.hexlify(hs.digest()).decode()
        num += 1
