"""Talking to one node: an aiocoap client for the resources in
protocols/RESOURCES.md.

Share bytes (PUT and ranged GET) go over CoAP over TCP in BERT blocks
(:mod:`openheap.coaptcp`, one connection per node shared by the process)
when the node takes it, else through the lean UDP bulk channel of
:mod:`openheap.bulk` (Block1 and Block2 runs, a measured retransmission
timer, a budget in seconds), which also carries the share set and DELETE:
a share is streamed from a file-like source to the node and from the node
to the caller without ever being held whole, and the node's preferred block
size (RFC 7959 2.3) is honoured mid-transfer. Status, discovery, Observe and :meth:`NodeClient.request`
use aiocoap.
Every error response becomes an :class:`openheap.errors.CoapError` carrying
the code and the node's diagnostic text; silence becomes
:class:`openheap.errors.NodeUnreachable`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import os
from typing import AsyncIterator, BinaryIO

import aiocoap
import cbor2
from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption

from ohproto import const as P
from openheap.bulk import Channel
from openheap import coaptcp
from openheap.coaptcp import TcpChannel, TcpUnavailable
from openheap.errors import CoapError, NodeUnreachable, UsageError, from_code

BlockTuple = BlockOption.BlockwiseTuple
DEFAULT_TIMEOUT = 30.0
TCP_BUSY_WAITS = (0.05, 0.2, None)  # seconds between tries when a node is busy with another connection


def si_text(si: bytes | str) -> str:
    """The path form of a storage index: base64url of its 16 bytes, unpadded
    (22 characters; RFC 4648 section 5). Text is checked and passed through."""
    if isinstance(si, str):
        try:
            raw = base64.urlsafe_b64decode(si + "==")
        except (ValueError, binascii.Error):
            raw = b""
        if len(si) != P.SI_TEXT_LEN or len(raw) != P.SI_LEN or si_text(raw) != si:
            raise UsageError("a storage index is %d base64url characters, not %r" % (P.SI_TEXT_LEN, si))
        return si
    if len(si) != P.SI_LEN:
        raise UsageError("a storage index is %d bytes, not %d" % (P.SI_LEN, len(si)))
    return base64.urlsafe_b64encode(bytes(si)).rstrip(b"=").decode()


class ContextPool:
    """One aiocoap client context per node address, kept from one operation
    to the next by a long-running process (the coordinator).

    Every grid operation gives each node a context of its own (see
    :class:`openheap.storage.engine.Grid`); creating them takes about 0.4 ms
    each (measured in an idle process: 4 ms for 10, 25 ms the first time),
    which a pool pays once per node. The pool's owner shuts it down
    with :meth:`close`; the clients that borrow a context leave it open.
    """

    MAX = 1024  # contexts kept; past this, clients make their own again

    def __init__(self):
        self._ctx: dict[tuple[str, int], aiocoap.Context] = {}
        self._lock = asyncio.Lock()

    async def get(self, host: str, port: int) -> aiocoap.Context | None:
        """The context for ``host:port`` (made on first use), or None when the pool is full."""
        key = (host, port)
        ctx = self._ctx.get(key)
        if ctx is None:
            async with self._lock:
                ctx = self._ctx.get(key)
                if ctx is None and len(self._ctx) < self.MAX:
                    ctx = self._ctx[key] = await aiocoap.Context.create_client_context()
        return ctx

    def __len__(self) -> int:
        return len(self._ctx)

    async def close(self) -> None:
        """Shut every context down."""
        ctxs, self._ctx = list(self._ctx.values()), {}
        await asyncio.gather(*(c.shutdown() for c in ctxs), return_exceptions=True)


class NodeClient:
    """CoAP client for one node at ``host:port``.

    Use as ``async with NodeClient(host, port) as node: ...``, or pass a shared
    aiocoap ``context`` (then the caller owns and shuts it down).
    """

    def __init__(self, host: str, port: int = P.DEFAULT_PORT, *, name: str | None = None,
                 context: aiocoap.Context | None = None, timeout: float = DEFAULT_TIMEOUT,
                 tcp: bool | None = None):
        self.host = host
        self.port = port
        self.name = name or "%s:%d" % (host, port)
        self.timeout = timeout
        self._ctx = context
        self._own_ctx = context is None
        self._chan: Channel | None = None
        self._tcp: TcpChannel | None = None
        if tcp is None:  # $OPENHEAP_TCP=0: share data over UDP only
            tcp = os.environ.get("OPENHEAP_TCP", "1") != "0"
        self._tcp_tried = not tcp  # False: try CoAP over TCP for share data first
        self._tcp_lock = asyncio.Lock()
        self._tcp_again = False  # a broken channel was replaced already
        host_part = "[%s]" % host if ":" in host else host
        self.base = "coap://%s:%d" % (host_part, port)

    async def __aenter__(self) -> "NodeClient":
        if self._ctx is None:
            self._ctx = await aiocoap.Context.create_client_context()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Shut down the aiocoap context if this client created it."""
        if self._chan is not None:
            self._chan.close()
            self._chan = None
        if self._tcp is not None:
            coaptcp.release(self._tcp)
            self._tcp = None
        if self._own_ctx and self._ctx is not None:
            await self._ctx.shutdown()
            self._ctx = None

    async def channel(self) -> Channel:
        """The bulk channel to this node (opened on first use)."""
        if self._chan is None:
            self._chan = await Channel(self.host, self.port, name=self.name, timeout=self.timeout).open()
        return self._chan

    async def tcp_channel(self, si: bytes | str | None = None) -> TcpChannel | None:
        """The CoAP-over-TCP channel to this node for share data, or None
        when the node takes no TCP: then UDP it is, for the life of this
        client. The channel is this process's one connection to the node,
        shared with other clients (:func:`openheap.coaptcp.acquire`).

        A node listens on TCP from a share set request with ``?tcp`` until
        its last connection ends (protocols/RESOURCES.md): refused, the
        client sends that request for ``si`` over UDP and connects again,
        once; a node busy with another connection is tried again soon."""
        async with self._tcp_lock:
            if self._tcp is not None and self._tcp.broken:
                coaptcp.release(self._tcp)
                self._tcp = None
                if not self._tcp_again:  # it broke: connect again, once
                    self._tcp_again, self._tcp_tried = True, False
            if self._tcp is None and not self._tcp_tried:
                self._tcp_tried = True
                woken = si is None
                for wait in TCP_BUSY_WAITS:
                    try:
                        self._tcp = await coaptcp.acquire(self.host, self.port, name=self.name,
                                                          timeout=self.timeout)
                        break
                    except TcpUnavailable as e:
                        if not e.busy and not woken:  # not listening (yet)
                            woken = True
                            try:
                                await self.share_set(si, query=(P.QUERY_TCP,))
                            except (CoapError, OSError):
                                pass
                            continue
                        if not e.busy or wait is None:
                            break
                        # The node serves one connection at a time: another
                        # process's, or one just closed that has not ended there yet.
                        await asyncio.sleep(wait)
            return self._tcp

    # -- the request layer
    async def request(self, code: Code, path: str, *, payload: bytes = b"",
                      query: tuple[str, ...] = (), block1: BlockTuple | None = None,
                      block2: BlockTuple | None = None, size1: int | None = None,
                      content_format: int | None = None, check: bool = True) -> Message:
        """Send one request (no automatic block-wise) and return the response.

        Raises :class:`CoapError` for a 4.xx/5.xx response when ``check`` is
        true, and :class:`NodeUnreachable` when no response arrives in time.
        """
        if self._ctx is None:
            await self.__aenter__()
        msg = Message(code=code, uri=self.base + "/" + path.lstrip("/"), payload=payload)
        if query:
            msg.opt.uri_query = tuple(query)
        if block1 is not None:
            msg.opt.block1 = block1
        if block2 is not None:
            msg.opt.block2 = block2
        if size1 is not None:
            msg.opt.size1 = size1
        if content_format is not None:
            msg.opt.content_format = content_format
        try:
            req = self._ctx.request(msg, handle_blockwise=False)
            rsp = await asyncio.wait_for(req.response, self.timeout)
        except asyncio.TimeoutError:
            raise NodeUnreachable(self.name, "no answer in %g s" % self.timeout) from None
        except aiocoap.error.NetworkError as e:
            raise NodeUnreachable(self.name, str(e) or type(e).__name__) from None
        if check and not rsp.code.is_successful():
            raise from_code(int(rsp.code), rsp.payload.decode("utf-8", "replace"))
        return rsp

    # -- resources
    async def status(self) -> dict:
        """GET /i: the node's status map (keys are the ST_* numbers)."""
        rsp = await self.request(Code.GET, P.PATH_STATUS)
        return cbor2.loads(rsp.payload)

    async def discover(self, rt: str | None = None) -> str:
        """GET /.well-known/core (optionally filtered by ``rt``): link format."""
        q = ("rt=" + rt,) if rt else ()
        data = b"".join([c async for c in self._blocks(".well-known/core", q)])
        return data.decode()

    async def list_shares(self) -> dict:
        """GET /s: the share list map (keys are the LS_* numbers)."""
        data = b"".join([c async for c in self._blocks(P.PATH_SHARES)])
        return cbor2.loads(data)

    async def share_set(self, si: bytes | str, query: tuple[str, ...] = ()) -> dict[int, int]:
        """GET /s/<si>: ``{share number: size}`` held for a storage index
        (``query`` ``("tcp",)``: and listen for CoAP over TCP)."""
        chan = await self.channel()
        data = await chan.get_body("%s/%s" % (P.PATH_SHARES, si_text(si)), query)
        return {n: size for n, size in cbor2.loads(data)}

    async def put_share(self, si: bytes | str, shnum: int, data: bytes | BinaryIO, *,
                        size: int | None = None, digest: bytes | None = None,
                        szx: int = P.MAX_BLOCK_SZX) -> int:
        """PUT a share block-wise; returns the final response code (2.01/2.04).

        ``data`` is bytes or a binary file positioned at the share's start (then
        ``size`` must be given). The SHA-256 goes with the last block; a given
        ``digest`` is checked against the bytes sent.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            size = len(data)
            src: BinaryIO = io.BytesIO(bytes(data))
        else:
            if size is None:
                raise UsageError("streaming a share needs its size")
            src = data

        async def chunks():
            left = size
            while left > 0:
                c = src.read(min(left, 64 * 1024))
                if not c:
                    return
                left -= len(c)
                yield c

        if digest is not None and not isinstance(data, (bytes, bytearray, memoryview)):
            pass  # checked by the node: h= is computed from the bytes sent
        elif digest is not None and hashlib.sha256(data).digest() != digest:
            raise UsageError("the share's SHA-256 does not match its bytes")
        return await self.put_share_stream(si, shnum, chunks(), size, szx=szx)

    async def put_share_stream(self, si: bytes | str, shnum: int, chunks: AsyncIterator[bytes],
                               size: int, *, szx: int = P.MAX_BLOCK_SZX,
                               query: tuple[str, ...] = ()) -> int:
        """PUT a share of ``size`` bytes from an async iterator of chunks, in one
        pass: the SHA-256 is computed while sending and goes with the last
        block (protocols/RESOURCES.md). Returns the final code (2.01/2.04)."""
        path = "%s/%s/%d" % (P.PATH_SHARES, si_text(si), shnum)
        tcp = await self.tcp_channel(si)
        if tcp is not None and szx == P.MAX_BLOCK_SZX:
            return await tcp.put_share(path, chunks, size, query=query)
        chan = await self.channel()

        async def held() -> int | None:
            try:
                return (await self.share_set(si)).get(shnum)
            except (CoapError, OSError):
                return None

        return await chan.put_share(path, chunks, size, query=query, verify=held, szx=szx)

    async def read_range(self, si: bytes | str, shnum: int, offset: int, length: int,
                         szx: int = P.MAX_BLOCK_SZX, upto: int | None = None) -> bytes:
        """Bytes ``offset .. offset+length`` of a share (fewer at its end), fetched
        in Block2 runs. ``upto``: the caller goes on reading in order up to
        that offset (over TCP, answers then bring what follows, kept for the
        next read)."""
        path = "%s/%s/%d" % (P.PATH_SHARES, si_text(si), shnum)
        tcp = await self.tcp_channel(si)
        if tcp is not None and szx == P.MAX_BLOCK_SZX:
            return await tcp.read_range(path, offset, length, upto)
        chan = await self.channel()
        return await chan.read_range(path, offset, length, szx)

    async def get_share(self, si: bytes | str, shnum: int, szx: int = P.MAX_BLOCK_SZX) -> bytes:
        """GET a whole share (for small shares; use :meth:`iter_share` to stream)."""
        return b"".join([c async for c in self.iter_share(si, shnum, szx)])

    async def iter_share(self, si: bytes | str, shnum: int, szx: int = P.MAX_BLOCK_SZX,
                         piece: int = 64 * 1024) -> AsyncIterator[bytes]:
        """Stream a share's bytes, ``piece`` bytes at a time."""
        off = 0
        while True:
            try:
                data = await self.read_range(si, shnum, off, piece, szx)
            except CoapError as e:
                if off and e.code == P.BAD_OPTION:  # "block beyond end": the share
                    return  # is a whole number of pieces long
                raise
            if data:
                yield data
            if len(data) < piece:
                return
            off += len(data)

    async def delete_share(self, si: bytes | str, shnum: int | None = None) -> None:
        """DELETE one share, or every share of the storage index."""
        path = "%s/%s" % (P.PATH_SHARES, si_text(si))
        if shnum is not None:
            path += "/%d" % shnum
        chan = await self.channel()
        await chan.request(P.DELETE, path)

    async def observe_status(self) -> AsyncIterator[dict]:
        """Observe /i (RFC 7641): yields the status map at every notification."""
        if self._ctx is None:
            await self.__aenter__()
        msg = Message(code=Code.GET, uri=self.base + "/" + P.PATH_STATUS, observe=0)
        req = self._ctx.request(msg)
        try:
            first = await asyncio.wait_for(req.response, self.timeout)
        except asyncio.TimeoutError:
            raise NodeUnreachable(self.name, "no answer in %g s" % self.timeout) from None
        if not first.code.is_successful():
            raise from_code(int(first.code), first.payload.decode("utf-8", "replace"))
        try:
            yield cbor2.loads(first.payload)
            async for note in req.observation:
                yield cbor2.loads(note.payload)
        finally:
            if not req.observation.cancelled:
                req.observation.cancel()

    async def _blocks(self, path: str, query: tuple[str, ...] = (),
                      szx: int = P.MAX_BLOCK_SZX) -> AsyncIterator[bytes]:
        num = 0
        while True:
            rsp = await self.request(Code.GET, path, query=query, block2=BlockTuple(num, False, szx))
            yield rsp.payload
            b2 = rsp.opt.block2
            if b2 is None or not b2.more:
                return
            # The response's Block2 says what it carried, in the node's own
            # block size (which may be smaller than asked for).
            num = b2.block_number + 1
            szx = b2.size_exponent
