"""Share data to and from one node: a lean CoAP endpoint for the bulk path.

Every other request goes through aiocoap (``openheap.node``). Share bytes do
not, for two measured reasons (``../shared/BRIEF.md``, ``bench/RESULTS.md``):
aiocoap spends about a third of a millisecond of host CPU per message, which
caps a grid of boards at a few thousand blocks a second, and it keeps one
request in flight per peer (NSTART 1), so each 1 KiB block waits a round trip.
This module speaks the same RFC 7252 message layer with three additions that
``protocols/RESOURCES.md`` describes:

* **Block1 bursts.** A share is PUT as runs of blocks: all but the last of a
  run are NON with No-Response 2 (RFC 7967: no 2.xx answer), the last is CON.
  The node keeps blocks in order; a gap is answered 4.08 with a Block1 option
  naming the first missing block, and the run resumes there.
* **Block2 bursts.** ``GET /s/<si>/<n>?b=<count>`` asks for ``count`` blocks:
  the first comes piggybacked, the rest as NON 2.05 with the same token.
  Missing blocks are asked for again.
* **A per-node retransmission timer** from measured round trips (RFC 6298's
  estimator, as CoCoA does for CoAP) instead of a fixed 2 s, and a
  retransmission budget in seconds (the node's timeout) rather than four
  tries. On a lossy link a block is sent again until the deadline, so 20 %
  loss each way slows a transfer without failing it. The run length adapts
  like a congestion window: one more block after a clean run, halved after a
  loss.

Tokens are two bytes, no Uri-Host is sent: per 1024-byte block a PUT costs
about 69 bytes beyond the payload (IP and UDP included) and a GET about 38,
plus one request per run.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from typing import AsyncIterator

from ohproto import const as P
from openheap.errors import CoapError, NodeUnreachable, UsageError, from_code

CON, NON, ACK, RST = 0, 1, 2, 3
RTO_INIT = 1.0  # the first timer before any round trip is seen (RFC 6298 2.1; CoAP's 2 s is for unknown radios)
RTO_MIN = 0.08  # never retransmit sooner: a busy board answers late, not never
RTO_MAX = 4.0  # the back-off never waits longer than this
BACKOFF_CAP = 4  # ... nor longer than this many times the measured RTO (at least 0.5 s):
# loss on a link is mostly not congestion, and a doubling to seconds on a
# millisecond path stalls a transfer for nothing (a run is at most 16 blocks).
RUN_START = 4  # blocks in the first run
# Block1 runs sent before the first one's answer is in. 1: measured on 10
# virtual boards sharing 2 cores, an 8 MiB put took 2.9-5.2 s with 1, 5.3-7.9 s
# with 2 and 5.3-8.3 s with 3 (the boards, not the round trips, are the
# bottleneck there; more in flight only adds retransmissions). Boards on a
# radio, with real round trips, may want 2.
RUNS_IN_FLIGHT = 1
NO_RESPONSE_2XX = b"\x02"
_HDR = struct.Struct(">BBH")
# Round-trip estimates of channels closed in this process, by node address:
# the next channel to the same node starts from them instead of 2 s.
_RTT: dict[tuple[str, int], tuple[float, float, int]] = {}


def encode(t: int, code: int, mid: int, token: bytes, opts, payload: bytes | memoryview = b"") -> bytes:
    """One CoAP message (RFC 7252 3). ``opts``: ``(number, bytes)`` pairs
    sorted by number."""
    out = bytearray(_HDR.pack(0x40 | (t << 4) | len(token), code, mid))
    out += token
    prev = 0
    for num, val in opts:
        out += _opt(num - prev, val)
        prev = num
    if payload:
        out.append(0xFF)
        out += payload
    return bytes(out)


class RunBlocks:
    """The NON blocks in the middle of a Block1 run to one path (Uri-Path
    options, Block1 with M=1, No-Response 2), with everything but the
    Message ID, the block number and the payload encoded once: byte for byte
    what :func:`encode` makes of them, at a fraction of its cost per block
    (a share is thousands of blocks)."""

    __slots__ = ("_pre", "_b1_delta", "_nr")

    def __init__(self, path_opts):
        last = path_opts[-1][0] if path_opts else 0
        if last > P.OPT_BLOCK1:
            raise ValueError("options after Block1: not a run's middle block")
        self._pre = encode(NON, P.PUT, 0, b"", path_opts)[4:]
        self._b1_delta = P.OPT_BLOCK1 - last
        self._nr = _opt(P.OPT_NO_RESPONSE - P.OPT_BLOCK1, NO_RESPONSE_2XX)

    def encode(self, mid: int, num: int, szx: int, payload) -> bytes:
        """The datagram of block ``num`` (more to come) with ``payload``."""
        return b"".join((_HDR.pack(0x40 | (NON << 4), P.PUT, mid), self._pre,
                         _opt(self._b1_delta, block_opt(num, True, szx)), self._nr, b"\xff", payload))


def _opt(delta: int, val: bytes) -> bytes:
    """One option: its delta from the previous option number, and value."""
    dn, dx = _nibble(delta)
    ln, lx = _nibble(len(val))
    return bytes(((dn << 4) | ln,)) + dx + lx + val


def _nibble(v: int) -> tuple[int, bytes]:
    if v < 13:
        return v, b""
    if v < 269:
        return 13, bytes((v - 13,))
    return 14, struct.pack(">H", v - 269)


class Response:
    """A parsed response: code, options (number -> list of bytes), payload."""

    __slots__ = ("t", "code", "mid", "token", "opts", "payload")

    def __init__(self, data: bytes):
        b0, self.code, self.mid = _HDR.unpack_from(data)
        self.t = (b0 >> 4) & 3
        tkl = b0 & 15
        self.token = data[4:4 + tkl]
        self._options(data, 4 + tkl)

    @classmethod
    def of(cls, code: int, token: bytes, body: bytes) -> "Response":
        """A response that came without a UDP header (CoAP over TCP): its
        code, token and the options and payload after them."""
        r = cls.__new__(cls)
        r.t, r.code, r.mid, r.token = None, code, 0, token
        r._options(body, 0)
        return r

    def _options(self, data: bytes, i: int) -> None:
        self.opts: dict[int, list[bytes]] = {}
        self.payload = b""
        num, n = 0, len(data)
        while i < n:
            b = data[i]
            if b == 0xFF:
                self.payload = data[i + 1:]
                break
            i += 1
            d, i = _ext(data, i, b >> 4)
            ln, i = _ext(data, i, b & 15)
            num += d
            self.opts.setdefault(num, []).append(data[i:i + ln])
            i += ln

    def uint(self, num: int) -> int | None:
        v = self.opts.get(num)
        return int.from_bytes(v[0], "big") if v else None

    def block(self, num: int) -> tuple[int, bool, int] | None:
        """A Block1/Block2 option as (number, more, szx)."""
        v = self.uint(num)
        return None if v is None else (v >> 4, bool(v & 8), v & 7)

    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


def _ext(data, i, v):
    if v < 13:
        return v, i
    if v == 13:
        return data[i] + 13, i + 1
    if v == 14:
        return int.from_bytes(data[i:i + 2], "big") + 269, i + 2
    raise ValueError("bad option nibble")


def block_opt(num: int, more: bool, szx: int) -> bytes:
    v = (num << 4) | (8 if more else 0) | szx
    return v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""


def uint_opt(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""


class _Exchange:
    """One CON request waiting for its answer (retransmitted until then)."""

    __slots__ = ("data", "mid", "fut", "timer", "rto", "tries", "t0", "deadline")


class Channel(asyncio.DatagramProtocol):
    """A connected UDP socket to one node, with its own message IDs, tokens,
    retransmission timer and run length. ``timeout`` is the retransmission
    budget of one request, in seconds."""

    def __init__(self, host: str, port: int, *, name: str | None = None, timeout: float = 30.0,
                 run_max: int = P.BURST_MAX):
        self.host, self.port = host, port
        self.name = name or "%s:%d" % (host, port)
        self.timeout = timeout
        self.run_max = run_max
        self.run = min(RUN_START, run_max)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.sent = self.received = self.retransmissions = 0
        self.bytes_sent = self.bytes_received = 0  # UDP payload bytes, every datagram
        self._mid = random.randrange(1 << 16)
        self._tok = random.randrange(1 << 16)
        self._by_mid: dict[int, _Exchange] = {}
        self._by_tok: dict[bytes, object] = {}  # token -> callable(Response)
        self._tr: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: Exception | None = None

    # -- life cycle
    async def open(self) -> "Channel":
        self._loop = asyncio.get_running_loop()
        fam = 10 if ":" in self.host else 2
        await self._loop.create_datagram_endpoint(lambda: self, remote_addr=(self.host, self.port), family=fam)
        known = _RTT.get((self.host, self.port))
        if known is not None:
            self.srtt, self.rttvar, self.run = known
        return self

    def close(self) -> None:
        if self.srtt is not None:
            _RTT[(self.host, self.port)] = (self.srtt, self.rttvar, self.run)
        if self._tr is not None:
            self._tr.close()
            self._tr = None
        self._fail_all(NodeUnreachable(self.name, "channel closed"))

    def connection_made(self, transport):
        self._tr = transport

    def connection_lost(self, exc):
        self._tr = None

    def error_received(self, exc):
        # ICMP port unreachable on a connected socket: the node is down now.
        self._fail_all(NodeUnreachable(self.name, str(exc) or type(exc).__name__))

    def _fail_all(self, err: Exception) -> None:
        for ex in list(self._by_mid.values()):
            if not ex.fut.done():
                ex.fut.set_exception(err)
        self._by_mid.clear()

    # -- the message layer
    def next_mid(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def next_token(self) -> bytes:
        self._tok = (self._tok + 1) & 0xFFFF
        return self._tok.to_bytes(2, "big")

    def _send(self, data: bytes) -> None:
        if self._tr is None:
            raise NodeUnreachable(self.name, "channel closed")
        self._tr.sendto(data)
        self.sent += 1
        self.bytes_sent += len(data)

    def datagram_received(self, data: bytes, addr) -> None:
        self.bytes_received += len(data)
        if len(data) < 4 or data[0] >> 6 != 1:
            return
        try:
            r = Response(data)
        except (ValueError, IndexError, struct.error):
            return
        self.received += 1
        if r.t == ACK or r.t == RST:
            ex = self._by_mid.get(r.mid)
            if ex is None:
                return
            if r.t == RST:
                self._finish(ex, NodeUnreachable(self.name, "reset by the node"))
            elif r.code == 0:  # empty ACK: a separate response follows
                self._stop_timer(ex)
                ex.timer = self._loop.call_at(ex.deadline, self._expire, ex)
            else:
                self._finish(ex, r)
            return
        if r.code >> 5 in (2, 4, 5):
            if r.t == CON:
                self._send(encode(ACK, 0, r.mid, b"", ()))
            cb = self._by_tok.get(bytes(r.token))
            if cb is not None:
                cb(r)

    def _stop_timer(self, ex: _Exchange) -> None:
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None

    def _finish(self, ex: _Exchange, result) -> None:
        self._stop_timer(ex)
        self._by_mid.pop(ex.mid, None)
        if ex.fut.done():
            return
        if isinstance(result, Exception):
            ex.fut.set_exception(result)
            return
        if ex.tries == 0:  # Karn: only a first transmission times a round trip
            self._sample(self._loop.time() - ex.t0)
        ex.fut.set_result(result)

    def _sample(self, r: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r

    def rto(self) -> float:
        """The retransmission timeout now (RFC 6298 2, bounded)."""
        if self.srtt is None:
            return RTO_INIT * random.uniform(1.0, 1.5)
        return min(max(self.srtt + 4 * self.rttvar, RTO_MIN), RTO_MAX)

    def backoff_cap(self) -> float:
        """The longest wait between two transmissions of one request."""
        if self.srtt is None:
            return 2 * RTO_INIT
        return min(max(BACKOFF_CAP * self.rto(), 0.5), RTO_MAX)

    def _expire(self, ex: _Exchange) -> None:
        self._finish(ex, NodeUnreachable(self.name, "no answer in %g s" % self.timeout))

    def _resend(self, ex: _Exchange, now: float) -> float | None:
        """Retransmit ``ex`` now, with back-off (or end it at its deadline, or
        when the board's port is closed); the time of its next
        retransmission, or None when it ended."""
        if now >= ex.deadline:
            self._expire(ex)
            return None
        ex.tries += 1
        self.retransmissions += 1
        try:
            self._send(ex.data)
        except NodeUnreachable as e:
            self._finish(ex, e)
            return None
        ex.rto = min(ex.rto * 2, self.backoff_cap())
        return min(now + ex.rto, ex.deadline)

    def _retransmit(self, ex: _Exchange) -> None:
        ex.timer = None
        if ex.fut.done():
            return
        due = self._resend(ex, self._loop.time())
        if due is not None:
            ex.timer = self._loop.call_at(due, self._retransmit, ex)

    async def con(self, code: int, opts, payload=b"", token: bytes | None = None) -> Response:
        """Send a CON request and return its response (piggybacked or
        separate), retransmitting until the channel's timeout."""
        if self._error is not None:
            raise self._error
        if self._loop is None:
            await self.open()
        token = self.next_token() if token is None else token
        ex = _Exchange()
        ex.mid = self.next_mid()
        ex.data = encode(CON, code, ex.mid, token, opts, payload)
        ex.fut = self._loop.create_future()
        ex.tries, ex.rto = 0, self.rto()
        ex.t0 = self._loop.time()
        ex.deadline = ex.t0 + self.timeout
        self._by_mid[ex.mid] = ex
        sep = self._by_tok.get(token)
        if sep is None:  # a separate response comes by token
            self._by_tok[token] = lambda r: self._finish(ex, r)
        try:
            self._send(ex.data)
            ex.timer = self._loop.call_at(ex.t0 + ex.rto, self._retransmit, ex)
            return await ex.fut
        finally:
            self._stop_timer(ex)
            self._by_mid.pop(ex.mid, None)
            if sep is None:
                self._by_tok.pop(token, None)

    def non(self, code: int, opts, payload=b"", token: bytes = b"") -> None:
        """Send a NON request (no retransmission)."""
        self._send(encode(NON, code, self.next_mid(), token, opts, payload))

    def _grow(self, clean: bool) -> None:
        self.run = min(self.run + 1, self.run_max) if clean else max(1, self.run // 2)

    # -- shares
    async def request(self, code: int, path: str, *, query=(), opts=(), payload=b"") -> Response:
        """One CON request; a 4.xx/5.xx answer raises its CoapError."""
        o = _path_opts(path, query) + list(opts)
        o.sort(key=lambda kv: kv[0])
        r = await self.con(code, o, payload)
        if r.code >= 0x80:
            raise from_code(r.code, r.text())
        return r

    async def get_body(self, path: str, query=()) -> bytes:
        """GET a (small) resource, following Block2 one block at a time."""
        out, num, szx = bytearray(), 0, P.MAX_BLOCK_SZX
        while True:
            r = await self.request(P.GET, path, query=query, opts=[(P.OPT_BLOCK2, block_opt(num, False, szx))])
            out += r.payload
            b2 = r.block(P.OPT_BLOCK2)
            if b2 is None or not b2[1]:
                return bytes(out)
            num, szx = b2[0] + 1, b2[2]

    async def read_range(self, si_path: str, offset: int, length: int,
                         szx: int = P.MAX_BLOCK_SZX) -> bytes:
        """Bytes ``offset .. offset+length`` of the share at ``si_path`` (fewer
        at its end), in Block2 bursts."""
        if length <= 0:
            return b""
        got: dict[int, bytes] = {}  # byte offset -> block
        end = offset + length  # lowered to the share's end when seen
        pos = offset - offset % (1 << (szx + 4))
        while pos < end:
            bs = 1 << (szx + 4)
            num = pos // bs
            count = min(self.run, -(-(end - pos) // bs))
            token = self.next_token()
            arrived: dict[int, Response] = {}
            more_wait = asyncio.Event()

            def take(r, arrived=arrived, ev=more_wait):
                b2 = r.block(P.OPT_BLOCK2)
                if r.code == P.CONTENT and b2 is not None:
                    arrived[b2[0] << (b2[2] + 4)] = r
                    ev.set()

            self._by_tok[token] = take
            try:
                q = ("%s%d" % (P.QUERY_BURST, count),) if count > 1 else ()
                first = await self.con(P.GET, sorted(_path_opts(si_path, q) + [
                    (P.OPT_BLOCK2, block_opt(num, False, szx))], key=lambda kv: kv[0]), token=token)
                if first.code >= 0x80:
                    raise from_code(first.code, first.text())
                b2 = first.block(P.OPT_BLOCK2)
                if b2 is None:  # the whole share in one answer
                    got[0] = first.payload
                    end = min(end, len(first.payload))
                    break
                if b2[2] != szx:  # the node uses smaller blocks: renumber
                    szx = b2[2]
                    continue
                arrived[b2[0] << (szx + 4)] = first
                # The rest of the run follows at once; give it a few round
                # trips (and a little per block) to arrive.
                want = [pos + i * bs for i in range(count)]
                wait = max(2 * self.rto(), 0.02 * count)
                while not self._run_done(arrived, want):
                    more_wait.clear()
                    try:
                        await asyncio.wait_for(more_wait.wait(), wait)
                    except asyncio.TimeoutError:
                        break
            finally:
                self._by_tok.pop(token, None)
            clean = True
            for off in want:
                r = arrived.get(off)
                if r is None:
                    clean = False
                    break
                got[off] = r.payload
                pos = off + len(r.payload)
                if not r.block(P.OPT_BLOCK2)[1]:  # the share's last block
                    end = min(end, pos)
                    break
            self._grow(clean)
        data = b"".join(got[o] for o in sorted(got))
        skip = offset - min(got) if got else 0
        return data[skip:skip + length]

    @staticmethod
    def _run_done(arrived, want) -> bool:
        for off in want:
            r = arrived.get(off)
            if r is None:
                return False
            if not r.block(P.OPT_BLOCK2)[1]:
                return True
        return True

    async def put_share(self, si_path: str, chunks: AsyncIterator[bytes], size: int, *,
                        query=(), digest_query: bool = True, verify=None,
                        szx: int = P.MAX_BLOCK_SZX) -> int:
        """PUT a share of ``size`` bytes from an async iterator of chunks in
        Block1 runs, the SHA-256 with the last block. Returns 2.01 or 2.04.

        Block 0 goes alone (the node may refuse the share, or ask for smaller
        blocks); after it, up to ``RUNS_IN_FLIGHT`` runs are on their way. A
        4.08 naming a
        missing block sends everything again from there. ``verify`` (a
        coroutine function returning the size the node holds, or None)
        settles a last block whose answer was lost after the node had stored
        the share."""
        h = hashlib.sha256()
        src = _Blocks(chunks)
        base = _path_opts(si_path, ())
        middle = RunBlocks(base)
        first_q = _path_opts("", query)
        bs = 1 << (szx + 4)
        buf: dict[int, bytes] = {}  # offset -> block read but not yet taken by the node
        read_to = 0  # bytes read from chunks (and hashed) so far

        async def block_at(off: int) -> bytes:
            nonlocal read_to
            b = buf.get(off)
            if b is None:
                want = min(bs, size - off)
                b = await src.take(want)
                if len(b) != want or off != read_to:
                    raise UsageError("the share stream ended at %d of its %d bytes" % (off + len(b), size))
                h.update(b)  # every byte once, in order, when first read
                buf[off] = b
                read_to = off + len(b)
                if read_to == size and await src.take(1):
                    raise UsageError("the share stream is longer than its %d bytes" % size)
            return b

        async def send_run(start: int, n: int):
            off = start
            for i in range(n):
                block = await block_at(off)
                num = off // bs
                last = off + len(block) >= size
                closing = last or i == n - 1
                if num and not closing:  # the usual block: options encoded once
                    self._send(middle.encode(self.next_mid(), num, szx, block))
                    off += len(block)
                    continue
                o = list(base)
                if num == 0:
                    o += first_q + [(P.OPT_CONTENT_FORMAT, uint_opt(P.CF_OCTET_STREAM)),
                                    (P.OPT_SIZE1, uint_opt(size))]
                if last and digest_query:
                    o.append((P.OPT_URI_QUERY, (P.QUERY_HASH + h.hexdigest()).encode()))
                o.append((P.OPT_BLOCK1, block_opt(num, not last, szx)))
                if not closing:
                    o.append((P.OPT_NO_RESPONSE, NO_RESPONSE_2XX))
                o.sort(key=lambda kv: kv[0])
                if closing:
                    task = asyncio.ensure_future(self.con(P.PUT, o, block))
                    return task, off + len(block), last
                self.non(P.PUT, o, block)
                off += len(block)

        if size <= 0:
            raise UsageError("a share has at least one byte")
        pos = nxt = 0  # the node has every byte before pos; the next run starts at nxt
        inflight: list = []  # (answer task, start, end, last) in the order sent
        try:
            while True:
                depth = 1 if pos == 0 else RUNS_IN_FLIGHT
                while nxt < size and len(inflight) < depth:
                    task, end, last = await send_run(nxt, 1 if nxt == 0 else self.run)
                    inflight.append((task, nxt, end, last))
                    nxt = end
                task, start, end, last = inflight.pop(0)
                r = await task
                if last and r.code in (P.CREATED, P.CHANGED):
                    return r.code
                b1 = r.block(P.OPT_BLOCK1)
                if r.code == P.CONTINUE:
                    if b1 is not None and b1[2] < szx:
                        if start or inflight:
                            raise UsageError("node changed block size mid-transfer")
                        szx = b1[2]  # smaller blocks from here on (RFC 7959 2.5)
                        bs = 1 << (szx + 4)
                    pos = end
                    self._grow(True)
                elif r.code == P.REQUEST_ENTITY_INCOMPLETE:
                    if b1 is None:  # the node has no upload (any more)
                        if last and verify is not None and await verify() == size:
                            return P.CREATED  # stored; the answer was lost
                        raise from_code(r.code, r.text())
                    # (A resume before pos is stale: an earlier run's CON,
                    # retransmitted, filled the gap after this run was refused.)
                    resume = max(b1[0] << (b1[2] + 4), pos)
                    if resume > end:
                        raise from_code(r.code, r.text())
                    for t in inflight:  # refused too (out of sequence): let them end
                        await t[0]
                    inflight.clear()
                    pos = nxt = resume
                    self._grow(False)
                else:
                    raise from_code(r.code, r.text())
                for o in [o for o in buf if o < pos]:
                    del buf[o]
        finally:
            for t in inflight:
                t[0].cancel()
            if inflight:
                await asyncio.gather(*(t[0] for t in inflight), return_exceptions=True)


def _path_opts(path: str, query) -> list[tuple[int, bytes]]:
    o = [(P.OPT_URI_PATH, s.encode()) for s in path.split("/") if s]
    o += [(P.OPT_URI_QUERY, q.encode()) for q in query]
    return o


class _Blocks:
    """Fixed-size pieces from an async iterator of arbitrary chunks."""

    def __init__(self, chunks: AsyncIterator[bytes]):
        self._it = chunks.__aiter__()
        self._buf = bytearray()
        self._done = False

    async def take(self, n: int) -> bytes:
        while len(self._buf) < n and not self._done:
            try:
                self._buf += await self._it.__anext__()
            except StopAsyncIteration:
                self._done = True
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


__all__ = ["Channel", "Response", "encode", "block_opt", "uint_opt", "CoapError"]
