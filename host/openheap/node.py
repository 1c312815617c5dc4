"""Talking to one node: an aiocoap client for the resources in
protocols/RESOURCES.md.

Block-wise transfers of shares are driven here, block by block, rather than by
aiocoap's automatic reassembly: a share is streamed from a file-like source to
the node and from the node to the caller without ever being held whole, and
the node's preferred block size (RFC 7959 2.3) is honoured mid-transfer.
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
from typing import AsyncIterator, BinaryIO

import aiocoap
import cbor2
from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption

from ohproto import const as P
from openheap.errors import NodeUnreachable, UsageError, from_code

BlockTuple = BlockOption.BlockwiseTuple
DEFAULT_TIMEOUT = 30.0


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


class NodeClient:
    """CoAP client for one node at ``host:port``.

    Use as ``async with NodeClient(host, port) as node: ...``, or pass a shared
    aiocoap ``context`` (then the caller owns and shuts it down).
    """

    def __init__(self, host: str, port: int = P.DEFAULT_PORT, *, name: str | None = None,
                 context: aiocoap.Context | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.host = host
        self.port = port
        self.name = name or "%s:%d" % (host, port)
        self.timeout = timeout
        self._ctx = context
        self._own_ctx = context is None
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
        if self._own_ctx and self._ctx is not None:
            await self._ctx.shutdown()
            self._ctx = None

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

    async def share_set(self, si: bytes | str) -> dict[int, int]:
        """GET /s/<si>: ``{share number: size}`` held for a storage index."""
        data = b"".join([c async for c in self._blocks("%s/%s" % (P.PATH_SHARES, si_text(si)))])
        return {n: size for n, size in cbor2.loads(data)}

    async def put_share(self, si: bytes | str, shnum: int, data: bytes | BinaryIO, *,
                        size: int | None = None, digest: bytes | None = None,
                        szx: int = P.MAX_BLOCK_SZX) -> int:
        """PUT a share block-wise; returns the final response code (2.01/2.04).

        ``data`` is bytes or a binary file positioned at the share's start; for
        a file, ``size`` and ``digest`` (SHA-256) must be given so that the
        share can be streamed in one pass.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            size = len(data)
            digest = hashlib.sha256(data).digest()
            src: BinaryIO = io.BytesIO(data)
        else:
            if size is None or digest is None:
                raise UsageError("streaming a share needs its size and SHA-256")
            src = data
        path = "%s/%s/%d" % (P.PATH_SHARES, si_text(si), shnum)
        query = (P.QUERY_HASH + digest.hex(),)
        off = 0
        while True:
            bs = 1 << (szx + 4)
            chunk = src.read(bs)
            more = off + len(chunk) < size
            if more and len(chunk) < bs:
                raise UsageError("the share source ended before its declared size")
            num = off // bs
            rsp = await self.request(
                Code.PUT, path, payload=chunk, query=query if num == 0 else (),
                block1=BlockTuple(num, more, szx), size1=size if num == 0 else None,
                content_format=P.CF_OCTET_STREAM if num == 0 else None)
            off += len(chunk)
            if not more:
                return int(rsp.code)
            b1 = rsp.opt.block1
            if b1 is not None and b1.size_exponent < szx:
                szx = b1.size_exponent  # the node asks for smaller blocks
                new = 1 << (szx + 4)
                if off % new:
                    raise UsageError("node changed block size to a misaligned one")

    async def put_share_stream(self, si: bytes | str, shnum: int, chunks: AsyncIterator[bytes],
                               size: int, *, szx: int = P.MAX_BLOCK_SZX,
                               query: tuple[str, ...] = ()) -> int:
        """PUT a share of ``size`` bytes from an async iterator of chunks, in one
        pass: the SHA-256 is computed while sending and goes with the last
        block (protocols/RESOURCES.md). Returns the final code (2.01/2.04)."""
        path = "%s/%s/%d" % (P.PATH_SHARES, si_text(si), shnum)
        h = hashlib.sha256()
        buf = bytearray()
        off = 0
        it = chunks.__aiter__()
        done = False
        while True:
            bs = 1 << (szx + 4)
            while len(buf) < bs and not done:
                try:
                    buf += await it.__anext__()
                except StopAsyncIteration:
                    done = True
            block = bytes(buf[:bs])
            del buf[:bs]
            h.update(block)
            more = off + len(block) < size
            if more and len(block) < bs:
                raise UsageError("the share stream ended at %d of its %d bytes" % (off + len(block), size))
            if not more and (buf or off + len(block) != size):
                raise UsageError("the share stream is longer than its %d bytes" % size)
            num = off // bs
            q = tuple(query) if num == 0 else ()
            if not more:
                q += (P.QUERY_HASH + h.hexdigest(),)
            rsp = await self.request(
                Code.PUT, path, payload=block, query=q, block1=BlockTuple(num, more, szx),
                size1=size if num == 0 else None)
            off += len(block)
            if not more:
                return int(rsp.code)
            b1 = rsp.opt.block1
            if b1 is not None and b1.size_exponent < szx:
                szx = b1.size_exponent

    async def read_range(self, si: bytes | str, shnum: int, offset: int, length: int,
                         szx: int = P.MAX_BLOCK_SZX) -> bytes:
        """Bytes ``offset .. offset+length`` of a share (fewer at its end), fetched
        with the Block2 blocks that cover them."""
        path = "%s/%s/%d" % (P.PATH_SHARES, si_text(si), shnum)
        out = bytearray()
        bs = 1 << (szx + 4)
        num = offset // bs
        skip = offset - num * bs
        while len(out) < skip + length:
            rsp = await self.request(Code.GET, path, block2=BlockTuple(num, False, szx))
            out += rsp.payload
            b2 = rsp.opt.block2
            if b2 is None or not b2.more:
                break
            if b2.size_exponent != szx:  # the node uses smaller blocks: renumber
                szx = b2.size_exponent
                bs = 1 << (szx + 4)
            num = b2.block_number + 1
        return bytes(out[skip:skip + length])

    async def get_share(self, si: bytes | str, shnum: int, szx: int = P.MAX_BLOCK_SZX) -> bytes:
        """GET a whole share (for small shares; use :meth:`iter_share` to stream)."""
        return b"".join([c async for c in self.iter_share(si, shnum, szx)])

    def iter_share(self, si: bytes | str, shnum: int,
                   szx: int = P.MAX_BLOCK_SZX) -> AsyncIterator[bytes]:
        """Stream a share's bytes block by block (Block2)."""
        return self._blocks("%s/%s/%d" % (P.PATH_SHARES, si_text(si), shnum), szx=szx)

    async def delete_share(self, si: bytes | str, shnum: int | None = None) -> None:
        """DELETE one share, or every share of the storage index."""
        path = "%s/%s" % (P.PATH_SHARES, si_text(si))
        if shnum is not None:
            path += "/%d" % shnum
        await self.request(Code.DELETE, path)

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
