"""Share data over CoAP over TCP (RFC 8323), in BERT blocks.

Over UDP (:mod:`openheap.bulk`) a share moves as 1024-byte datagrams, and
each one costs both ends a system call, a parse and a dispatch: measured on
10 virtual boards, an 8 MiB put spent about 40 µs of coordinator CPU and
over 70 µs of board CPU per datagram. A node that also listens on TCP (the
same port number, ``protocols/RESOURCES.md``) takes a share as **BERT
blocks** (RFC 8323 section 6, Block1/Block2 with SZX 7): one PUT carries up
to ``P.BERT_MAX`` KiB and the node streams it from its socket to flash
through one small buffer; one GET with ``?b=<count>`` brings up to that
many KiB back. Several PUTs are in flight at once (the node handles a
connection's requests in order, and TCP's flow control paces them).

TCP gives reliability and ordering, so there is no retransmission timer
here: each request has a deadline (the node's timeout, at least
``ANSWER_DEADLINE``), and a connection that closes fails every request on
it with
:class:`openheap.errors.NodeUnreachable`. :meth:`TcpChannel.open` raises
:class:`TcpUnavailable` when the node takes no TCP (refused, silent, or no
capabilities message): the caller then uses UDP.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
from typing import AsyncIterator

from ohproto import const as P
from openheap.bulk import Response, _Blocks, _opt, _path_opts, block_opt, uint_opt
from openheap.errors import NodeUnreachable, UsageError, from_code

__all__ = ["TcpChannel", "TcpUnavailable", "frame", "acquire", "release", "PUT_BLOCKS", "PUT_IN_FLIGHT"]

CONNECT_TIMEOUT = 2.0  # seconds to connect and get the node's CSM
# Seconds an answer may take on an open connection, whatever the node's
# (UDP) timeout: TCP sends lost segments again itself, its timer backing off
# from 200 ms, so on a lossy link one segment lost a few times running
# holds a block up for seconds (measured with 20% of packets lost: 5 s was
# passed now and then, failing the share); a node that dies closes the
# connection, which fails its requests at once.
ANSWER_DEADLINE = 20.0
MAX_MESSAGE_SIZE = 1 << 20  # what we take (our CSM); a node's answer is at most P.BERT_MAX KiB
PUT_BLOCKS = 64  # KiB per BERT PUT (P.BERT_MAX; 32 measured: an 8 MiB put on 10 boards 0.40-0.42 s, 64: 0.35-0.37 s, less CPU on both ends)
PUT_IN_FLIGHT = 4  # BERT PUTs sent before the oldest one's answer is awaited
BLOCK = 1024  # the unit BERT block numbers count


class TcpUnavailable(Exception):
    """The node takes no CoAP over TCP (use UDP). ``busy``: it accepted the
    connection and closed it at once (it serves another one: try again soon)."""

    def __init__(self, msg: str, busy: bool = False):
        super().__init__(msg)
        self.busy = busy


def frame(code: int, token: bytes, opts, payload: bytes | memoryview = b"") -> bytes:
    """The head of one CoAP-over-TCP message (RFC 8323 3.2) up to its
    payload: length, token length, code, token, options (sorted ``(number,
    bytes)`` pairs) and the payload marker. The payload follows it."""
    body = bytearray()
    prev = 0
    for num, val in opts:
        body += _opt(num - prev, val)
        prev = num
    if len(payload):
        body.append(0xFF)
    n = len(body) + len(payload)
    if n < 13:
        head = bytes(((n << 4) | len(token),))
    elif n < 269:
        head = bytes(((13 << 4) | len(token), n - 13))
    elif n < 65805:
        head = bytes(((14 << 4) | len(token),)) + (n - 269).to_bytes(2, "big")
    else:
        head = bytes(((15 << 4) | len(token),)) + (n - 65805).to_bytes(4, "big")
    return head + bytes((code,)) + token + bytes(body)


class TcpChannel:
    """One TCP connection to a node, with requests matched to answers by token."""

    def __init__(self, host: str, port: int, *, name: str | None = None, timeout: float = 30.0):
        self.host, self.port = host, port
        self.name = name or "%s:%d" % (host, port)
        self.timeout = timeout
        self.mms = 1152  # the node's Max-Message-Size (RFC 8323 5.3.1 default until its CSM)
        self.bert = False  # the node takes BERT blocks
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task | None = None
        self._waiting: dict[bytes, asyncio.Future] = {}
        self._tokens = itertools.count(1)
        self._csm: asyncio.Future | None = None
        self._error: Exception | None = None
        self._kept: tuple | None = None  # (path, offset, bytes, the share's last?): the last block read

    async def open(self) -> "TcpChannel":
        """Connect and exchange capabilities; :class:`TcpUnavailable` if the node takes no TCP."""
        loop = asyncio.get_running_loop()
        self._csm = loop.create_future()
        try:
            self._r, self._w = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=1 << 20), CONNECT_TIMEOUT)
            sock = self._w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._w.write(frame(P.CSM, b"", [(P.OPT_MAX_MESSAGE_SIZE, uint_opt(MAX_MESSAGE_SIZE)),
                                              (P.OPT_BLOCK_WISE_TRANSFER, b"")]))
            self._reader = asyncio.create_task(self._read_loop())
            await asyncio.wait_for(asyncio.shield(self._csm), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, NodeUnreachable) as e:
            busy = isinstance(e, NodeUnreachable)  # connected, then closed before its CSM
            self.close()
            raise TcpUnavailable("%s: no CoAP over TCP (%s)" % (self.name, e or type(e).__name__), busy) from None
        return self

    @property
    def broken(self) -> bool:
        """The connection failed or was closed: no more requests on it."""
        return self._error is not None or self._w is None

    def close(self) -> None:
        """Close the connection; requests still waiting fail."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._w is not None:
            self._w.close()
            self._w = None
        self._fail_all(NodeUnreachable(self.name, "connection closed"))

    def _fail_all(self, err: Exception) -> None:
        self._error = self._error or err
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(err)
        self._waiting.clear()
        if self._csm is not None and not self._csm.done():
            self._csm.set_exception(err)
            self._csm.exception()  # (seen: open() may have stopped waiting for it)

    async def _read_loop(self) -> None:
        r = self._r
        try:
            while True:
                b0 = (await r.readexactly(1))[0]
                ln, tkl = b0 >> 4, b0 & 15
                if ln >= 13:
                    xl = (1, 2, 4)[ln - 13]
                    ln = int.from_bytes(await r.readexactly(xl), "big") + (13, 269, 65805)[ln - 13]
                head = await r.readexactly(1 + tkl)
                body = await r.readexactly(ln) if ln else b""
                code, token = head[0], head[1:]
                if code >> 5 == 7:
                    self._signal(Response.of(code, token, body))
                    continue
                fut = self._waiting.pop(token, None)
                if fut is not None and not fut.done():
                    fut.set_result(Response.of(code, token, body))
        except (asyncio.IncompleteReadError, OSError, ValueError, IndexError) as e:
            why = "connection closed" if isinstance(e, asyncio.IncompleteReadError) else str(e)
            self._fail_all(NodeUnreachable(self.name, why))

    def _signal(self, s: Response) -> None:
        if s.code == P.CSM:
            self.mms = s.uint(P.OPT_MAX_MESSAGE_SIZE) or self.mms
            self.bert = P.OPT_BLOCK_WISE_TRANSFER in s.opts
            if not self._csm.done():
                self._csm.set_result(None)
        elif s.code == P.PING and self._w is not None:
            self._w.write(frame(P.PONG, s.token, []))
        elif s.code in (P.RELEASE, P.ABORT):
            self._fail_all(NodeUnreachable(self.name, "the node ended the connection: %s" % s.text()))

    def send(self, code: int, opts, payload: bytes | memoryview = b"") -> asyncio.Future:
        """Write one request; its answer (a :class:`openheap.bulk.Response`) comes on the future."""
        if self._error is not None or self._w is None:
            raise self._error or NodeUnreachable(self.name, "connection closed")
        token = (next(self._tokens) & 0xFFFFFFFF).to_bytes(4, "big").lstrip(b"\0") or b"\0"
        fut = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        # One write: a frame's head written on its own goes out at once as
        # a segment of its own (asyncio sets TCP_NODELAY), one more packet
        # and system call for every BERT block; the copy costs less.
        self._w.write(frame(code, token, opts, payload) + payload)
        return fut

    async def answer(self, fut: asyncio.Future) -> Response:
        """The answer on ``fut`` (from :meth:`send`), within the timeout
        (at least ``ANSWER_DEADLINE``)."""
        wait = max(self.timeout, ANSWER_DEADLINE)
        try:
            return await asyncio.wait_for(fut, wait)
        except asyncio.TimeoutError:
            raise NodeUnreachable(self.name, "no answer in %g s" % wait) from None

    async def request(self, code: int, path: str, *, query=(), opts=(), payload=b"") -> Response:
        """One request; 4.xx/5.xx answers are returned, not raised."""
        o = sorted(_path_opts(path, query) + list(opts), key=lambda kv: kv[0])
        fut = self.send(code, o, payload)
        await self._w.drain()
        return await self.answer(fut)

    async def read_range(self, si_path: str, offset: int, length: int, upto: int | None = None) -> bytes:
        """Bytes ``offset .. offset+length`` of the share at ``si_path`` (fewer
        at its end), in BERT Block2 answers of up to ``P.BERT_MAX`` KiB.

        Answers start on a 1024-byte boundary; what an answer brought past
        the range (from the block holding its end) is kept, so the next read
        of the same share that starts there (a get reads a share's segments
        in order) does not fetch it again. ``upto``: the caller reads on in
        order up to that share offset, so each answer may bring up to
        ``P.BERT_MAX`` KiB of it (fewer, larger answers: a board's cost is
        per request)."""
        if length <= 0:
            return b""
        end = offset + length
        pos = offset - offset % BLOCK
        start = pos
        parts = []
        kept = self._kept
        last = False  # the share's end was seen
        if kept is not None and kept[0] == si_path and kept[1] == pos and len(kept[2]) > offset - pos:
            parts.append(kept[2])
            pos += len(kept[2])
            last = kept[3]
        want = max(end, upto or 0)
        while pos < end and not last:
            count = min(P.BERT_MAX, -(-(want - pos) // BLOCK))
            r = await self.request(P.GET, si_path, query=("%s%d" % (P.QUERY_BURST, count),),
                                   opts=[(P.OPT_BLOCK2, block_opt(pos // BLOCK, False, P.BERT_SZX))])
            if r.code >= 0x80:
                raise from_code(r.code, r.text())
            b2 = r.block(P.OPT_BLOCK2)
            if b2 is None:  # the whole share in one answer
                parts, start, last = [r.payload], 0, True
                break
            at = b2[0] * (BLOCK if b2[2] == P.BERT_SZX else 1 << (b2[2] + 4))
            if at != pos:
                raise UsageError("%s answered bytes at %d for %d" % (self.name, at, pos))
            parts.append(r.payload)
            pos += len(r.payload)
            last = not b2[1] or not r.payload
        data = b"".join(parts)
        # keep from the block holding the range's end (or the last block)
        at = min(end, start + len(data) - 1) // BLOCK * BLOCK if data else start
        self._kept = (si_path, at, data[at - start:], last)
        return data[offset - start:offset - start + length]

    async def put_share(self, si_path: str, chunks: AsyncIterator[bytes], size: int, *,
                        query=(), blocks: int = PUT_BLOCKS) -> int:
        """PUT a share of ``size`` bytes from an async iterator of chunks in
        BERT blocks of ``blocks`` KiB, up to ``PUT_IN_FLIGHT`` at once, the
        SHA-256 with the last (``h=``). Returns 2.01 or 2.04."""
        if size <= 0:
            raise UsageError("a share has at least one byte")
        if not self.bert:
            blocks = 1  # a node without BERT: one 1024-byte block per message
        bs = blocks * BLOCK
        h = hashlib.sha256()
        src = _Blocks(chunks)
        base = _path_opts(si_path, ())
        inflight: list[asyncio.Future] = []
        off = 0
        try:
            while True:
                data = await src.take(min(bs, size - off))
                if len(data) != min(bs, size - off):
                    raise UsageError("the share stream ended at %d of its %d bytes" % (off + len(data), size))
                h.update(data)
                last = off + len(data) >= size
                if last and await src.take(1):
                    raise UsageError("the share stream is longer than its %d bytes" % size)
                o = list(base)
                if off == 0:
                    o += _path_opts("", query) + [(P.OPT_CONTENT_FORMAT, uint_opt(P.CF_OCTET_STREAM)),
                                                  (P.OPT_SIZE1, uint_opt(size))]
                if last:
                    o.append((P.OPT_URI_QUERY, (P.QUERY_HASH + h.hexdigest()).encode()))
                szx = P.BERT_SZX if blocks > 1 else P.MAX_BLOCK_SZX
                o.append((P.OPT_BLOCK1, block_opt(off // BLOCK, not last, szx)))
                o.sort(key=lambda kv: kv[0])
                inflight.append(self.send(P.PUT, o, data))
                off += len(data)
                await self._w.drain()
                # The first block goes alone: the node may refuse the share.
                while inflight and (last or off == len(data) or len(inflight) >= PUT_IN_FLIGHT):
                    r = await self.answer(inflight.pop(0))
                    if r.code in (P.CREATED, P.CHANGED) and last and not inflight:
                        return r.code
                    if r.code != P.CONTINUE:
                        raise from_code(r.code, r.text()) if r.code >= 0x80 else UsageError(
                            "%s answered %d.%02d mid-share" % (self.name, r.code >> 5, r.code & 31))
        finally:
            for fut in inflight:
                fut.cancel()
                self._waiting = {t: f for t, f in self._waiting.items() if f is not fut}


# -- one connection per node and process, shared
#
# A node serves one TCP connection at a time (an open one costs it about
# 3.6 KB of its 64 KiB heap; the next waits), so the operations of one
# process (the coordinator's puts, gets, checks and repairs, at the same
# time) share one channel per node: their requests interleave on it, told
# apart by token. It closes when its last user lets go.

_POOL: dict[tuple, TcpChannel] = {}
_LOCKS: dict[tuple, asyncio.Lock] = {}


async def acquire(host: str, port: int, *, name: str | None = None, timeout: float = 30.0) -> TcpChannel:
    """The process's shared channel to ``host:port`` (on this event loop),
    opened if need be; :class:`TcpUnavailable` when the node takes no TCP.
    Give it back with :func:`release`."""
    key = (id(asyncio.get_running_loop()), host, port)
    lock = _LOCKS.setdefault(key, asyncio.Lock())
    async with lock:
        ch = _POOL.get(key)
        if ch is not None and ch.broken:
            _forget(ch)
            ch = None
        if ch is None:
            ch = await TcpChannel(host, port, name=name, timeout=timeout).open()
            ch._users, ch._key = 0, key
            _POOL[key] = ch
        ch._users += 1
        ch.timeout = max(ch.timeout, timeout)
        return ch


def release(ch: TcpChannel) -> None:
    """Let go of a channel from :func:`acquire`; the last user's release closes it."""
    ch._users -= 1
    if ch._users <= 0:
        _forget(ch)  # (the node stops listening once its last connection ends)


def _forget(ch: TcpChannel) -> None:
    if _POOL.get(ch._key) is ch:
        del _POOL[ch._key]
        _LOCKS.pop(ch._key, None)
    ch.close()
