"""Seeded datagram fuzzing of one virtual board.

10,000 datagrams: pure random bytes, valid requests mutated (byte flips,
truncation, extension, random options) and header-valid messages with
garbage options, sent in bursts of 50. After each burst a CoAP ping is sent
and its RST awaited: the node handles datagrams in order, so every direct
answer to the burst has arrived by then (this paces the fuzzer to the node's
speed instead of flooding it).

The fuzzer behaves as a correct peer towards what the node sends it:
notifications (of observations some fuzz datagrams register) get a RST,
separate responses an ACK. Observers that do not answer are a different
fault, tested in test_observers.py.

Afterwards the node must still answer, be the same process with no restart,
and have (after ending any observation and upload the fuzz left open) about
the free heap it had before. Every CON whose header the node can read must
have been acknowledged or reset (RFC 7252 4.2).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rawcoap import (ACK, CON, DELETE, GET, NON, OPT_BLOCK1, OPT_BLOCK2, OPT_CONTENT_FORMAT, OPT_OBSERVE,
                     OPT_SIZE1, PUT, RST, FormatError, Raw, block, decode, encode, path_opts)

SEED = 0x0BEA7
N = 10_000
PRE_N = 1_000
BURST = 50
HEAP_TOLERANCE = 1024
ST_HEAP_FREE, ST_SHARES, ST_RX_MSGS, ST_ERRORS = 4, 8, 9, 14

SIS = [hashlib.sha256(b"fuzz%d" % i).hexdigest()[:32] for i in range(3)]
SHARE = random.Random(1).randbytes(3000)  # the share the fuzzer "uploads"
SHARE_HASH = hashlib.sha256(SHARE).hexdigest()
SMALL = b"small fuzz share"
SMALL_HASH = hashlib.sha256(SMALL).hexdigest()
INTERESTING_OPTS = [1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 15, 17, 20, 23, 27, 28, 35, 39, 60, 258, 2048, 2049, 65000, 65535]


class Fuzzer:
    def __init__(self, seed: int, first_mid: int = 0):
        self.rng = random.Random(seed)
        self.mid = first_mid  # message IDs of generated messages count up from here (unique)

    def next_mid(self) -> int:
        self.mid += 1
        return self.mid

    def token(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 2, 4, 8]))

    def valid(self, kind: int | None = None) -> tuple[int, list, bytes]:
        """(code, options, payload) of a well-formed request (of ``kind`` 0-8 if given)."""
        r = self.rng
        si, n = r.choice(SIS), r.randrange(4)
        if kind is None:
            kind = r.randrange(9)
        if kind == 0:
            return GET, path_opts("i"), b""
        if kind == 1:
            return GET, path_opts("i") + [(OPT_OBSERVE, r.choice([0, 1]))], b""
        if kind == 2:
            return GET, path_opts(r.choice([".well-known/core", ".well-known/core?rt=oh.i", "s"])), b""
        if kind == 3:  # block 0 of a multi-block share
            return PUT, path_opts("s/%s/%d?h=%s" % (si, n, SHARE_HASH)) + [
                (OPT_BLOCK1, block(0, True, 6)), (OPT_SIZE1, len(SHARE)), (OPT_CONTENT_FORMAT, 42)], SHARE[:1024]
        if kind == 4:  # a later block
            num = r.randrange(1, 3)
            last = num == 2
            return PUT, path_opts("s/%s/%d" % (si, n)) + [(OPT_BLOCK1, block(num, not last, 6))], \
                SHARE[num * 1024:(num + 1) * 1024]
        if kind == 5:  # a whole small share
            return PUT, path_opts("s/%s/%d?h=%s" % (si, n, SMALL_HASH)), SMALL
        if kind == 6:
            return GET, path_opts("s/%s/%d" % (si, n)) + [(OPT_BLOCK2, block(r.randrange(4), False, r.randrange(7)))], b""
        if kind == 7:
            return GET, path_opts(r.choice(["s/%s" % si, "s"])), b""
        return DELETE, path_opts(r.choice(["s/%s/%d" % (si, n), "s/%s" % si])), b""

    def random_option(self) -> tuple[int, bytes]:
        r = self.rng
        num = r.choice(INTERESTING_OPTS) if r.random() < 0.6 else r.randrange(65536)
        return num, r.randbytes(r.choice([0, 1, 2, 3, 4, r.randrange(300)]))

    def mutate(self, data: bytes) -> bytes:
        r = self.rng
        b = bytearray(data)
        for _ in range(r.randint(1, 3)):
            what = r.randrange(4)
            if what == 0 and b:  # byte flips
                for _ in range(r.randint(1, 4)):
                    i = r.randrange(len(b))
                    b[i] = r.randrange(256) if r.random() < 0.5 else b[i] ^ (1 << r.randrange(8))
            elif what == 1:  # truncation
                b = b[:r.randrange(len(b) + 1)]
            elif what == 2:  # extension
                b += r.randbytes(r.randint(1, 64))
            else:  # splice a raw option-ish byte run after the header and token
                at = min(len(b), 4 + (b[0] & 15 if b else 0) + r.randrange(8))
                b[at:at] = r.randbytes(r.randint(1, 8))
        return bytes(b[:1300])

    def datagram(self) -> tuple[str, bytes]:
        r = self.rng
        x = r.random()
        if x < 0.25:
            return "random", r.randbytes(r.randrange(1301))
        t = CON if r.random() < 0.8 else NON
        if x < 0.35:
            c, opts, pl = self.valid()
            return "valid", encode(t, c, self.next_mid(), self.token(), opts, pl)
        if x < 0.70:
            c, opts, pl = self.valid()
            return "mutated", self.mutate(encode(t, c, self.next_mid(), self.token(), opts, pl))
        if x < 0.85:  # a valid request plus random (well-encoded) options
            c, opts, pl = self.valid()
            extra = [self.random_option() for _ in range(r.randint(1, 6))]
            return "options", encode(t, c, self.next_mid(), self.token(), opts + extra, pl)[:1300]
        # header-valid, then garbage where the options go
        tok = self.token()
        mid = self.next_mid()
        c = r.choice([GET, PUT, DELETE, 2, r.randrange(256)])
        head = bytes([0x40 | t << 4 | len(tok), c, mid >> 8, mid & 0xFF]) + tok
        return "garbage", head + r.randbytes(r.randrange(200))


def _describe(data: bytes):
    """(is a CON with a readable header, its MID)."""
    if len(data) >= 4 and data[0] >> 6 == 1 and (data[0] >> 4 & 3) == CON:
        return True, data[2] << 8 | data[3]
    return False, None


def _track(data: bytes, observe_tokens: set, upload_keys: set) -> None:
    """Remember what cleanup the datagram may need: Observe registrations
    (by token) and Block1 uploads (by path)."""
    try:
        m = decode(data)
    except FormatError:
        return
    if m.code == GET and m.opt(OPT_OBSERVE) is not None:
        observe_tokens.add(m.token)
    if m.code == PUT:
        try:
            path = [v.decode() for v in m.opts(11)]
        except UnicodeDecodeError:
            return
        if len(path) == 3 and path[0] == "s":
            upload_keys.add((path[1].lower(), path[2]))


def _sync(raw: Raw, stats: Counter, answered: set, mid: int) -> None:
    """Ping (Message ID ``mid``), and collect every datagram until its RST comes back."""
    ping = bytes([0x40, 0, mid >> 8, mid & 0xFF])
    for attempt in range(4):
        raw.send(ping)
        deadline = time.monotonic() + 2.0
        while True:
            d = raw.recv(max(0.0, deadline - time.monotonic()))
            if d is None:
                break
            if d == bytes([0x70, 0, mid >> 8, mid & 0xFF]):
                return
            _count(raw, d, stats, answered)
    raise AssertionError("the node stopped answering pings (ping %d): %s" % (mid, dict(stats)))


def _count(raw: Raw, d: bytes, stats: Counter, answered: set) -> None:
    stats["received"] += 1
    try:
        m = decode(d)
    except FormatError:
        stats["undecodable answers"] += 1
        return
    if m.t in (ACK, RST):
        answered.add(m.mid)
    if m.t == RST:
        stats["RST"] += 1
    elif m.code == 0:
        stats["empty ACK"] += 1
    elif m.opt(OPT_OBSERVE) is not None and m.t in (CON, NON):
        stats["notification"] += 1
        raw.send(bytes([0x70, 0, m.mid >> 8, m.mid & 0xFF]))  # RST: ends the observation (RFC 7641 3.6)
    else:
        stats["%d.xx" % m.cls] += 1
        stats["%d.%02d" % (m.cls, m.code & 31)] += 1
        if m.t == CON:  # a separate response: acknowledge it (RFC 7252 5.2.2)
            stats["separate"] += 1
            raw.send(bytes([0x60, 0, m.mid >> 8, m.mid & 0xFF]))


def _cleanup(raw: Raw, observe_tokens: set, upload_keys: set) -> None:
    """End what a run left open on the node: Observe registrations (a GET
    with Observe 1 and the same token deregisters) and Block1 uploads (a new
    block 0 of the same share restarts the upload; its wrong hash drops it)."""
    for tok in sorted(observe_tokens):
        raw.exchange(encode(CON, GET, raw.mid(), tok, path_opts("i") + [(OPT_OBSERVE, 1)]))
    for si, n in sorted(upload_keys):
        raw.exchange(encode(CON, PUT, raw.mid(), raw.token(),
                            [(11, b"s"), (11, si.encode()), (11, n.encode()), (15, b"h=" + b"0" * 64)], b"x"))
    raw.drain(0.3)


def _warm_up(raw: Raw) -> None:
    """Every request kind a few times, so that lazy imports and fixed-size
    caches (the de-duplication cache) settle before the heap is measured."""
    f = Fuzzer(1)
    tokens, keys = set(), set()
    for i in range(60):
        c, opts, pl = f.valid(i % 9)
        data = encode(CON, c, raw.mid(), raw.token(), opts, pl)
        _track(data, tokens, keys)
        raw.exchange(data, timeout=2.0)
    _cleanup(raw, tokens, keys)
    for si in SIS:
        raw.exchange(encode(CON, DELETE, raw.mid(), raw.token(), path_opts("s/%s" % si)))
    raw.drain(0.2)


def _heap(raw: Raw, floor: int | None = None) -> int:
    """Free heap after a quiet moment: the largest of three readings, so that
    a notification being built at that moment does not look like a leak.
    Below ``floor``, measured again (up to 3 more times, a second apart): only
    memory that stays taken counts."""
    best = 0
    for attempt in range(4):
        if attempt:
            time.sleep(1.0)
        raw.drain(0.3)
        for _ in range(3):
            best = max(best, raw.status()[ST_HEAP_FREE])
            raw.drain(0.1)
        if floor is None or best >= floor:
            break
    return best


@dataclass
class Run:
    """What one fuzz run sent and got back."""

    stats: Counter = field(default_factory=Counter)  # answers by kind and code
    kinds: Counter = field(default_factory=Counter)  # datagrams sent by generator
    cons: set = field(default_factory=set)  # MIDs of CONs with a readable header
    answered: set = field(default_factory=set)  # MIDs seen in ACK / RST answers
    observe_tokens: set = field(default_factory=set)
    upload_keys: set = field(default_factory=set)
    sent_bytes: int = 0
    seconds: float = 0.0

    @property
    def unanswered(self) -> list[int]:
        return sorted(self.cons - self.answered)


def _fuzz(raw: Raw, seed: int, n: int, first_mid: int, ping_mid: int) -> Run:
    """Send ``n`` fuzz datagrams in bursts of BURST, each burst closed by a ping."""
    t0 = time.monotonic()
    run = Run()
    fz = Fuzzer(seed, first_mid)
    for i in range(n):
        kind, data = fz.datagram()
        run.kinds[kind] += 1
        is_con, mid = _describe(data)
        if is_con:
            run.cons.add(mid)
        _track(data, run.observe_tokens, run.upload_keys)
        raw.send(data)
        run.sent_bytes += len(data)
        if i % BURST == BURST - 1:
            _sync(raw, run.stats, run.answered, ping_mid + i // BURST)
    _sync(raw, run.stats, run.answered, ping_mid + n // BURST + 1)
    run.seconds = time.monotonic() - t0
    return run


def test_fuzz(board, module_fleet, capsys):
    with Raw(board.host, board.port, first_mid=60000) as raw:
        side = Counter()  # what arrives outside the fuzz runs (answered like _count does)
        raw.on_other = lambda d: _count(raw, d, side, set())
        _warm_up(raw)
        heap_fresh = _heap(raw)
        # a short run first: what the node keeps for good after its first
        # taste of every kind of traffic (high-water marks) is not a leak
        pre = _fuzz(raw, SEED + 1, PRE_N, first_mid=20000, ping_mid=38000)
        _cleanup(raw, pre.observe_tokens, pre.upload_keys)
        before = raw.status()
        heap_before = _heap(raw)
        run = _fuzz(raw, SEED, N, first_mid=0, ping_mid=40000)
        heap_right_after = _heap(raw)
        _cleanup(raw, run.observe_tokens, run.upload_keys)
        after = raw.status()
        heap_after = _heap(raw, floor=heap_before - HEAP_TOLERANCE)

    unanswered = run.unanswered
    info = module_fleet.info(board.name)
    log = Path(board.log).read_text(errors="replace")
    node_errors = [ln for ln in log.splitlines() if ln.startswith("openheap: error")]
    stats = run.stats
    report = [
        "fuzz: %d datagrams (%d bytes) in %.1f s, seed %#x, after a %d-datagram run with seed %#x; kinds %s" % (
            N, run.sent_bytes, run.seconds, SEED, PRE_N, SEED + 1, dict(sorted(run.kinds.items()))),
        "answers: %s" % dict(sorted(stats.items())),
        "CONs with a readable header: %d, unanswered: %d %s" % (len(run.cons), len(unanswered), unanswered[:20]),
        "node: rx %d -> %d, errors %d -> %d, shares %d -> %d; 'openheap: error' log lines: %d %s" % (
            before[ST_RX_MSGS], after[ST_RX_MSGS], before[ST_ERRORS], after[ST_ERRORS],
            before[ST_SHARES], after[ST_SHARES], len(node_errors), sorted(Counter(node_errors).items())[:5]),
        "heap free: fresh %d, before %d, right after the fuzz %d, after cleanup %d (change %+d, %+d since fresh);"
        " peak use %s of %d" % (heap_fresh, heap_before, heap_right_after, heap_after, heap_after - heap_before,
                                heap_after - heap_fresh, after.get(13), after[5]),
        "observations ended %d, uploads ended %d" % (len(run.observe_tokens), len(run.upload_keys)),
    ]
    with capsys.disabled():  # in the test log even when the test passes
        print("\n" + "\n".join(report))

    assert info.pid == board.pid, "the board process changed: %s -> %s" % (board.pid, info.pid)
    assert info.restarts == 0 and info.state == "running", info
    os.kill(board.pid, 0)
    assert after[ST_RX_MSGS] >= before[ST_RX_MSGS] + N - 50, "the node did not see the datagrams"
    assert heap_after >= heap_before - HEAP_TOLERANCE, "\n".join(report)
    assert not unanswered, "CONs left without ACK or RST (RFC 7252 4.2):\n" + "\n".join(report)
    assert not node_errors, "the node caught exceptions in its handlers:\n" + "\n".join(report)
    assert run.seconds < 60


SOAK_RUNS = 4


def test_fuzz_soak(fleet, capsys):
    """Four 10,000-datagram runs back to back at a fresh board (seeds SEED,
    SEED+1, ...): it must keep answering throughout, and after the first run
    its free heap must not keep falling (the first run may settle high-water
    marks)."""
    b = fleet.up(1)[0]
    heaps = []
    lines = []
    unanswered = 0
    with Raw(b.host, b.port, first_mid=60000) as raw:
        side = Counter()
        raw.on_other = lambda d: _count(raw, d, side, set())
        _warm_up(raw)
        heaps.append(_heap(raw))
        for k in range(SOAK_RUNS):
            try:
                run = _fuzz(raw, SEED + k, N, first_mid=20000 * (k % 2), ping_mid=40000 + 300 * k)
            except AssertionError as e:
                lines.append("run %d: %s" % (k, e))
                break
            _cleanup(raw, run.observe_tokens, run.upload_keys)
            heaps.append(_heap(raw, floor=(heaps[1] if k else heaps[0]) - HEAP_TOLERANCE))
            unanswered += len(run.unanswered)
            lines.append("run %d (seed %#x): %.1f s, answers %d, unanswered CONs %d, heap free %d" % (
                k, SEED + k, run.seconds, run.stats["received"], len(run.unanswered), heaps[-1]))
    report = "soak: heap free fresh %d; %s" % (heaps[0], "; ".join(lines))
    with capsys.disabled():
        print("\n" + report)
    assert len(heaps) == SOAK_RUNS + 1, "the node stopped answering: " + report
    info = fleet.info(b.name)
    assert info.pid == b.pid and info.restarts == 0, info
    assert min(heaps[2:]) >= heaps[1] - HEAP_TOLERANCE, "free heap keeps falling: " + report
    assert unanswered == 0, "CONs left without ACK or RST: " + report
