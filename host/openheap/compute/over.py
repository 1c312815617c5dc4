"""Compute next to the data: a function mapped over byte ranges of a stored file.

zfec is systematic: in every segment, shares 0..k-1 hold the ciphertext
itself, block ``i`` of segment ``s`` being file bytes ``s*segsize + i*b ..
+b`` (``b`` the segment's block length) at byte ``block_offset(s)`` of share
``i`` (docs/STORAGE.md, :mod:`openheap.storage.layout`). The file is one
AES-128-CTR stream whose counter for file offset ``o`` is ``o // 16``, so a
board holding share ``i`` can decrypt any range of it that starts on a
16-byte boundary of the file given only the key and that counter: the task
carries ``TK_RANGE = [si, shnum, offset in the share, length, key, counter
block]`` instead of the bytes.

:func:`plan` cuts the file into ranges: each block into pieces of at most
``chunk`` bytes (a multiple of 16) that start on 16-byte file boundaries.
A block that does not start on such a boundary (with k=3 most do not) first
gets a *head* range of the 1-15 bytes up to the next boundary: its counter
block starts in the previous share, which the wire format cannot express,
so a head's bytes are fetched by the host and shipped as the argument.

The person opts in knowing that a board sees the ranges it computes on in
plaintext.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ohproto import const as P
from openheap.compute import wire as W
from openheap.errors import CoapError, UsageError
from openheap.storage import crypto
from openheap.storage.errors import StorageError
from openheap.storage.layout import Params, block_offset

__all__ = ["Range", "plan", "RangeRef", "Source", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 1024  # a shipped range must fit one datagram; a board needs twice it free
SKIP = 30.0  # seconds a holder that failed a read is left alone
CACHE_BLOCKS = 16  # blocks of ciphertext kept while shipping ranges
_B = 16


@dataclass(frozen=True)
class Range:
    """One piece of the file: ``length`` bytes at file ``offset``, stored at
    ``share_offset`` of share ``shnum`` (segment ``segnum``)."""

    index: int
    offset: int
    length: int
    segnum: int
    shnum: int
    share_offset: int
    block_pos: int = 0  # where the range starts in its block (the block holds block_size file bytes)
    block_size: int = 0

    @property
    def aligned(self) -> bool:
        """True when a board can decrypt it itself (16-byte file boundary)."""
        return self.offset % _B == 0


def plan(k: int, n: int, size: int, chunk: int = DEFAULT_CHUNK, segsize: int | None = None) -> list[Range]:
    """The ranges of a file of ``size`` bytes stored ``k``-of-``n``, in file order."""
    if chunk < _B or chunk % _B:
        raise UsageError("the range size must be a positive multiple of 16 bytes, not %d" % chunk)
    p = Params(k, n, size) if segsize is None else Params(k, n, size, segsize)
    out: list[Range] = []
    for s in range(p.num_segments):
        blen = p.block_length(s)
        base = block_offset(p, s)
        for i in range(k):
            start = p.segment_offset(s) + i * blen
            length = min(blen, size - start)
            pos = 0
            while pos < length:
                off = start + pos
                step = min(length - pos, chunk if off % _B == 0 else _B - off % _B)
                out.append(Range(len(out), off, step, s, i, base + pos, pos, length))
                pos += step
    return out


class Source:
    """A stored file's read-cap, where its systematic shares are, and a way
    to fetch plaintext ranges for tasks whose data must be shipped."""

    def __init__(self, cap, holders: dict[int, list], fallback=None):
        self.cap = cap
        self.key = cap.key
        self.si = cap.storage_index
        self.holders = holders  # shnum -> [BoardClient, ...], fastest first
        self.fallback = fallback  # async () -> whole plaintext (verified), when no holder answers
        self._whole: bytes | None = None
        self._whole_error: str | None = None
        self._bad: dict[str, float] = {}  # holder -> when it last failed
        self._blocks: dict[tuple, asyncio.Future] = {}  # (shnum, segnum) -> block ciphertext
        self.ship_all = False  # every range is shipped (--ship): read whole blocks once
        self._lock = asyncio.Lock()
        self.fetched = 0  # ciphertext bytes read from boards for shipping
        self.other_traffic: list[tuple] = []  # counters of whole-file reads (fallback)
        self.locate_traffic = (0, 0, 0, 0)  # counters of locating the shares

    def share_path(self, shnum: int) -> str:
        from openheap.node import si_text

        return "s/%s/%d" % (si_text(self.si), shnum)

    async def plaintext(self, r: Range) -> bytes:
        """The plaintext of range ``r`` for shipping: the ciphertext of its
        whole block is read once from a board holding the share (Block2
        runs; the last ``CACHE_BLOCKS`` blocks are kept, since ranges come
        in file order) and decrypted here. A holder that fails is skipped for
        ``SKIP`` seconds; when none answers, the whole file is read once
        through the storage engine (every block verified)."""
        if self._whole is None and not self.ship_all:
            got = await self._exact(r)
            if got is not None:
                return got
        if self._whole is None:
            key = (r.shnum, r.segnum)
            fut = self._blocks.get(key)
            if fut is None:
                fut = self._blocks[key] = asyncio.ensure_future(self._block(r))
                while len(self._blocks) > CACHE_BLOCKS:
                    self._blocks.pop(next(iter(self._blocks)))
            else:
                self._blocks[key] = self._blocks.pop(key)  # most recently used last
            try:
                block = await asyncio.shield(fut)
            except (CoapError, OSError):
                self._blocks.pop(key, None)
                block = None
            if block is not None:
                ct = block[r.block_pos:r.block_pos + r.length]
                return crypto.decrypt(self.key, r.offset, ct)
            async with self._lock:
                if self._whole is None:
                    if self._whole_error is not None:
                        raise CoapError(None, self._whole_error)
                    if self.fallback is None:
                        raise CoapError(None, "no board holding share %d answered" % r.shnum)
                    try:
                        self._whole = await self.fallback()
                    except (CoapError, OSError, StorageError) as e:
                        self._whole_error = "no board holding share %d answered, and reading the file " \
                                            "failed: %s" % (r.shnum, e)
                        raise CoapError(None, self._whole_error) from None
        return self._whole[r.offset:r.offset + r.length]

    async def _exact(self, r: Range) -> bytes | None:
        """The plaintext of just ``r`` (a few ranges shipped among many
        computed in place): read in the smallest Block2 size that holds it."""
        szx = 0
        while szx < 6 and (16 << szx) < r.length:
            szx += 1
        ct = await self._read(r.shnum, r.share_offset, r.length, szx)
        return None if ct is None else crypto.decrypt(self.key, r.offset, ct)

    async def _block(self, r: Range) -> bytes | None:
        """The ciphertext of the block holding ``r``, or None if no holder gave it."""
        return await self._read(r.shnum, r.share_offset - r.block_pos, r.block_size)

    async def _read(self, shnum: int, start: int, length: int, szx: int = P.MAX_BLOCK_SZX) -> bytes | None:
        """``length`` bytes of share ``shnum`` from ``start``, from the first
        holder that gives them all (one that fails is skipped for SKIP
        seconds), or None."""
        for client in self.holders.get(shnum, []):
            if time.monotonic() - self._bad.get(client.name, -SKIP) < SKIP:
                continue
            try:
                chan = await client.channel()
                chan.timeout = 5.0
                ct = await chan.read_range(self.share_path(shnum), start, length, szx)
            except (CoapError, OSError):
                ct = b""
            if len(ct) == length:
                self.fetched += len(ct)
                return ct
            self._bad[client.name] = time.monotonic()
        return None

    def ref(self, r: Range, ship: bool = False) -> "RangeRef":
        """The task attachment for range ``r`` (``ship``: always send the bytes)."""
        if ship:
            self.ship_all = True
        return RangeRef(self, r, None if ship or not r.aligned else (self.si, r.shnum))


class RangeRef:
    """What a :class:`~openheap.compute.scheduler.Task` over a range carries.

    ``where`` is ``(si, shnum)``: a board holding that share computes on it
    in place; None (or a board without it) gets the bytes shipped.
    """

    def __init__(self, source: Source, r: Range, where):
        self.source, self.range, self.where = source, r, where
        # the results cache key: the file's storage index and the range
        self.key = W.dumps(["range", source.si, r.offset, r.length])

    def wire(self) -> list:
        """TK_RANGE: [si, shnum, offset in share, length, key, counter block]."""
        r = self.range
        return [self.source.si, r.shnum, r.share_offset, r.length, self.source.key,
                (r.offset // _B).to_bytes(_B, "big")]

    async def plaintext(self) -> bytes:
        return await self.source.plaintext(self.range)
