"""Encoding parameters, the URI extension block (UEB) and the share format.

A share (what a node stores at ``/s/<si>/<shnum>``) is::

    header (64 bytes) | blocks (one per segment) | trailer

Every size in the header and the trailer follows from :class:`Params`
alone, so an uploader knows a share's total length (CoAP Size1) before it
encodes anything and can stream the share. docs/STORAGE.md is the spec.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import cbor2

from openheap.errors import UsageError
from openheap.storage.errors import CorruptShare
from openheap.storage.hashing import HASH_LEN, TAG_UEB, next_power_of_two, tagged_hash, tree_size

__all__ = [
    "MAX_SEGSIZE", "HEADER_SIZE", "MAGIC", "VERSION", "Params", "UEB", "Header", "Trailer",
    "encode_ueb", "parse_ueb", "ueb_hash", "ueb_length", "chain_length",
    "share_length", "trailer_offset", "trailer_length", "header_bytes", "parse_header",
    "trailer_bytes", "parse_trailer", "block_offset", "segment_range", "trailer_range",
]

MAX_SEGSIZE = 128 * 1024
MAGIC = b"OHS1"
VERSION = 1
HEADER_SIZE = 64
_HEADER = struct.Struct(">4sBBHHHIQIIIQI")
_CHAIN_ENTRY = struct.Struct(">H32s")


def _next_multiple(x: int, k: int) -> int:
    return -(-x // k) * k


@dataclass(frozen=True)
class Params:
    """k-of-n encoding of a file of ``size`` bytes in segments of ``segsize``.

    ``segsize`` given is a maximum: the segment size used is
    ``min(segsize, size)`` rounded up to a multiple of k (at least k), so
    ``Params(k, n, size, p.segsize) == p``.
    """

    k: int
    n: int
    size: int
    segsize: int = MAX_SEGSIZE

    def __post_init__(self):
        for name in ("k", "n", "size", "segsize"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise UsageError("%s must be an integer" % name)
        if not 1 <= self.k <= self.n <= 256:
            raise UsageError("k=%d, n=%d is impossible: 1 <= k <= n <= 256 is required" % (self.k, self.n))
        if not 0 <= self.size < 1 << 64:
            raise UsageError("a file size must be between 0 and 2**64 - 1")
        if self.segsize < 1:
            raise UsageError("the segment size must be positive")
        segsize = max(self.k, _next_multiple(min(self.segsize, self.size), self.k))
        if segsize >= 1 << 32:
            raise UsageError("the segment size must be below 4 GiB")
        object.__setattr__(self, "segsize", segsize)

    @property
    def num_segments(self) -> int:
        """Number of segments (at least 1: an empty file has one empty segment)."""
        return max(1, -(-self.size // self.segsize))

    @property
    def block_size(self) -> int:
        """Bytes of every block but the last: ``segsize // k``."""
        return self.segsize // self.k

    @property
    def tail_segment_size(self) -> int:
        """Bytes of plaintext in the last segment (before padding)."""
        return self.size - (self.num_segments - 1) * self.segsize

    @property
    def tail_block_size(self) -> int:
        """Bytes of the last block: the tail segment zero-padded to a multiple of k, over k."""
        return -(-self.tail_segment_size // self.k)

    def segment_size(self, segnum: int) -> int:
        """Plaintext bytes of segment ``segnum`` (unpadded)."""
        self._check_segnum(segnum)
        return self.tail_segment_size if segnum == self.num_segments - 1 else self.segsize

    def block_length(self, segnum: int) -> int:
        """Bytes of block ``segnum`` of every share."""
        self._check_segnum(segnum)
        return self.tail_block_size if segnum == self.num_segments - 1 else self.block_size

    def segment_offset(self, segnum: int) -> int:
        """File offset of segment ``segnum``."""
        self._check_segnum(segnum)
        return segnum * self.segsize

    def _check_segnum(self, segnum: int) -> None:
        if not 0 <= segnum < self.num_segments:
            raise IndexError("segment %d is outside a file of %d segments" % (segnum, self.num_segments))


@dataclass(frozen=True)
class UEB:
    """The URI extension block: the parameters and the two roots of a file."""

    params: Params
    share_root: bytes
    crypttext_root: bytes


def encode_ueb(params: Params, share_root: bytes, crypttext_root: bytes) -> bytes:
    """The canonical CBOR bytes of a UEB."""
    return cbor2.dumps({0: VERSION, 1: params.k, 2: params.n, 3: params.size, 4: params.segsize,
                        5: bytes(share_root), 6: bytes(crypttext_root)}, canonical=True)


def ueb_hash(ueb_bytes: bytes) -> bytes:
    """``tagged_hash(b"openheap:ueb:v1", ueb_bytes)``: what a capability holds."""
    return tagged_hash(TAG_UEB, ueb_bytes)


def parse_ueb(data: bytes) -> UEB:
    """Decode and validate UEB bytes (raises :class:`CorruptShare`)."""
    try:
        m = cbor2.loads(data)
    except Exception:
        raise CorruptShare("its UEB is not valid CBOR") from None
    if not isinstance(m, dict) or set(m) != set(range(7)):
        raise CorruptShare("its UEB is not a map with keys 0 to 6")
    if m[0] != VERSION:
        raise CorruptShare("its UEB has version %r, not %d" % (m[0], VERSION))
    for key in (5, 6):
        if not isinstance(m[key], bytes) or len(m[key]) != HASH_LEN:
            raise CorruptShare("its UEB has a malformed hash root")
    try:
        params = Params(m[1], m[2], m[3], m[4])
    except UsageError as e:
        raise CorruptShare("its UEB has impossible parameters (%s)" % e) from None
    if params.segsize != m[4]:
        raise CorruptShare("its UEB has an impossible segment size %d" % m[4])
    if encode_ueb(params, m[5], m[6]) != data:
        raise CorruptShare("its UEB is not in canonical form")
    return UEB(params, m[5], m[6])


@functools.lru_cache(maxsize=64)
def ueb_length(params: Params) -> int:
    """Length of the UEB of a file with these parameters."""
    return len(encode_ueb(params, bytes(HASH_LEN), bytes(HASH_LEN)))


def chain_length(params: Params) -> int:
    """Entries in a share hash chain: the depth of the share hash tree over n leaves."""
    return next_power_of_two(params.n).bit_length() - 1


def trailer_offset(params: Params) -> int:
    """Byte offset of the trailer in a share."""
    return HEADER_SIZE + (params.num_segments - 1) * params.block_size + params.tail_block_size


def trailer_length(params: Params) -> int:
    """Length of a share's trailer."""
    trees = 2 * tree_size(params.num_segments) * HASH_LEN
    return 2 + ueb_length(params) + trees + 1 + chain_length(params) * _CHAIN_ENTRY.size


def share_length(params: Params) -> int:
    """Total length of every share of a file with these parameters."""
    return trailer_offset(params) + trailer_length(params)


def block_offset(params: Params, segnum: int) -> int:
    """Byte offset of block ``segnum`` in a share."""
    return HEADER_SIZE + params.segment_offset(segnum) // params.k


def segment_range(params: Params, segnum: int) -> tuple[int, int]:
    """``(offset, length)`` a reader fetches from a share for segment ``segnum``."""
    return block_offset(params, segnum), params.block_length(segnum)


def trailer_range(params: Params) -> tuple[int, int]:
    """``(offset, length)`` of the trailer in a share."""
    return trailer_offset(params), trailer_length(params)


@dataclass(frozen=True)
class Header:
    """A parsed share header."""

    shnum: int
    params: Params


def header_bytes(params: Params, shnum: int) -> bytes:
    """The 64-byte header of share ``shnum``."""
    if not 0 <= shnum < params.n:
        raise UsageError("share number %d is outside 0..%d" % (shnum, params.n - 1))
    h = _HEADER.pack(MAGIC, VERSION, 0, shnum, params.k, params.n, params.segsize, params.size,
                     params.num_segments, params.block_size, params.tail_block_size,
                     trailer_offset(params), trailer_length(params))
    return h + bytes(HEADER_SIZE - len(h))


def parse_header(data: bytes) -> Header:
    """Parse and validate the first 64 bytes of a share (raises :class:`CorruptShare`)."""
    if len(data) < HEADER_SIZE:
        raise CorruptShare("it is %d bytes long, shorter than a share header" % len(data))
    data = bytes(data[:HEADER_SIZE])
    (magic, version, pad, shnum, k, n, segsize, size, nseg, bsize, tbsize,
     toff, tlen) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptShare("it does not start with the share magic %r" % MAGIC.decode())
    if version != VERSION:
        raise CorruptShare("its format version is %d, this openheap reads version %d" % (version, VERSION))
    if pad or any(data[_HEADER.size:]):
        raise CorruptShare("its header padding is not zero")
    if not 1 <= k <= n <= 256:
        raise CorruptShare("its header says k=%d, n=%d (1 <= k <= n <= 256 is required)" % (k, n))
    if shnum >= n:
        raise CorruptShare("its header says share %d of only %d" % (shnum, n))
    if segsize < 1:
        raise CorruptShare("its header says segment size 0")
    try:
        params = Params(k, n, size, segsize)
    except UsageError as e:
        raise CorruptShare("its header has impossible parameters (%s)" % e) from None
    if params.segsize != segsize:
        raise CorruptShare("its segment size %d does not fit k=%d and size %d" % (segsize, k, size))
    expect = header_bytes(params, shnum)
    if expect != data:
        names = ("num_segments", "block_size", "tail_block_size", "trailer_offset", "trailer_length")
        got = (nseg, bsize, tbsize, toff, tlen)
        want = _HEADER.unpack_from(expect)[8:]
        bad = [nm for nm, g, w in zip(names, got, want) if g != w]
        raise CorruptShare("its header field%s %s %s inconsistent with its size and parameters"
                           % ("s" if len(bad) > 1 else "", ", ".join(bad), "are" if len(bad) > 1 else "is"))
    return Header(shnum, params)


@dataclass(frozen=True)
class Trailer:
    """A parsed trailer: UEB bytes, the block and crypttext trees, the share hash chain."""

    ueb_bytes: bytes
    block_tree: list
    crypttext_tree: list
    chain: list


def trailer_bytes(params: Params, ueb_bytes: bytes, block_tree, crypttext_tree, chain) -> bytes:
    """Serialize a trailer (tree node lists and ``[(index, hash)]`` chain)."""
    count = tree_size(params.num_segments)
    if len(ueb_bytes) != ueb_length(params) or len(block_tree) != count or \
            len(crypttext_tree) != count or len(chain) != chain_length(params):
        raise ValueError("trailer parts do not match the parameters")
    out = [struct.pack(">H", len(ueb_bytes)), ueb_bytes]
    out += block_tree
    out += crypttext_tree
    out.append(bytes([len(chain)]))
    out += [_CHAIN_ENTRY.pack(i, h) for i, h in chain]
    data = b"".join(out)
    assert len(data) == trailer_length(params)
    return data


def parse_trailer(data: bytes, params: Params) -> Trailer:
    """Split a trailer into its parts, checking every length (raises :class:`CorruptShare`).

    Nothing is verified against hashes here; :mod:`openheap.storage.decoder` does that.
    """
    data = bytes(data)
    if len(data) != trailer_length(params):
        raise CorruptShare("its trailer is %d bytes, not %d" % (len(data), trailer_length(params)))
    (ulen,) = struct.unpack_from(">H", data)
    if ulen != ueb_length(params):
        raise CorruptShare("its trailer declares a UEB of %d bytes, not %d" % (ulen, ueb_length(params)))
    pos = 2 + ulen
    ueb = data[2:pos]
    count = tree_size(params.num_segments)
    trees = []
    for _ in range(2):
        trees.append([data[pos + i * HASH_LEN:pos + (i + 1) * HASH_LEN] for i in range(count)])
        pos += count * HASH_LEN
    if data[pos] != chain_length(params):
        raise CorruptShare("its share hash chain has %d entries, not %d" % (data[pos], chain_length(params)))
    pos += 1
    chain = [_CHAIN_ENTRY.unpack_from(data, pos + i * _CHAIN_ENTRY.size) for i in range(data[pos - 1])]
    return Trailer(ueb, trees[0], trees[1], chain)
