"""Encoding a file into n shares: encrypt, erasure-code, hash, segment by segment.

Memory stays bounded by one segment's blocks (plus 32 bytes per block for
the hash trees) whatever the file size: feed :meth:`Encoder.encode_segment`
one plaintext segment at a time, write each returned block to its share,
then append the trailers from :meth:`Encoder.finish`.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Sequence

import zfec

from openheap.storage.caps import ReadCap
from openheap.storage.crypto import CTR, storage_index
from openheap.storage.errors import StorageError
from openheap.storage.hashing import TAG_BLOCK, TAG_SEGMENT, HashTree, tagged_hash
from openheap.storage.layout import (Params, encode_ueb, header_bytes, share_length,
                                     trailer_bytes, ueb_hash)

__all__ = ["ErasureCoder", "Encoder", "encode_file", "block_hash", "segment_hash", "read_exactly"]


def block_hash(block: bytes) -> bytes:
    """The leaf of a block in its share's block hash tree."""
    return tagged_hash(TAG_BLOCK, block)


def segment_hash(ciphertext_segment: bytes) -> bytes:
    """The leaf of a ciphertext segment (unpadded) in the crypttext hash tree."""
    return tagged_hash(TAG_SEGMENT, ciphertext_segment)


class ErasureCoder:
    """zfec k-of-n over the segments of one file (systematic: blocks 0..k-1
    are the zero-padded segment cut in k)."""

    def __init__(self, params: Params):
        self.params = params
        self._encoder = zfec.Encoder(params.k, params.n)
        self._decoder = zfec.Decoder(params.k, params.n)

    def encode(self, segnum: int, ciphertext: bytes, shnums: Sequence[int] | None = None) -> list[bytes]:
        """The blocks of segment ``segnum`` for ``shnums`` (all n, in order, by default)."""
        p = self.params
        blen = p.block_length(segnum)
        if len(ciphertext) != p.segment_size(segnum):
            raise ValueError("segment %d is %d bytes, not %d" % (segnum, len(ciphertext), p.segment_size(segnum)))
        padded = bytes(ciphertext) + bytes(blen * p.k - len(ciphertext))
        primary = tuple(padded[i * blen:(i + 1) * blen] for i in range(p.k))
        if shnums is None:
            return list(self._encoder.encode(primary))
        return list(self._encoder.encode(primary, tuple(shnums)))

    def decode(self, segnum: int, blocks: Mapping[int, bytes]) -> bytes:
        """The ciphertext of segment ``segnum`` (padding stripped) from exactly k distinct blocks."""
        p = self.params
        if len(blocks) != p.k:
            raise ValueError("decoding needs exactly k=%d blocks, not %d" % (p.k, len(blocks)))
        nums = tuple(sorted(blocks))
        if all(i < p.k for i in nums):
            primary = [blocks[i] for i in nums]
        else:
            primary = self._decoder.decode(tuple(bytes(blocks[i]) for i in nums), nums)
        return b"".join(primary)[:p.segment_size(segnum)]


class Encoder:
    """Encode one file with ``key`` and ``params``, one segment at a time.

    With ``digests=True`` it also keeps the SHA-256 of every whole share
    (header, blocks, trailer) — the ``h=`` a node wants on the first block of
    a PUT — available from :meth:`share_digests` after :meth:`finish`.
    """

    def __init__(self, key: bytes, params: Params, *, digests: bool = False):
        self.params = params
        self.key = bytes(key)
        self._ctr = CTR(key)
        self._coder = ErasureCoder(params)
        self._segnum = 0
        self._block_hashes: list[list[bytes]] = [[] for _ in range(params.n)]
        self._segment_hashes: list[bytes] = []
        self._digests = ([hashlib.sha256(self.header(i)) for i in range(params.n)]
                         if digests else None)
        self._result = None

    @property
    def storage_index(self) -> bytes:
        """The file's storage index."""
        return storage_index(self.key)

    def header(self, shnum: int) -> bytes:
        """The 64-byte header of share ``shnum`` (known before any data)."""
        return header_bytes(self.params, shnum)

    def encode_segment(self, plaintext: bytes) -> list[bytes]:
        """Encrypt, erasure-code and hash the next segment; return its n blocks.

        Every segment but the last must be exactly ``params.segsize`` bytes.
        """
        if self._result is not None or self._segnum >= self.params.num_segments:
            raise ValueError("all %d segments were already encoded" % self.params.num_segments)
        segnum = self._segnum
        ciphertext = self._ctr.crypt(self.params.segment_offset(segnum), plaintext)
        blocks = self._coder.encode(segnum, ciphertext)  # checks the length
        self._segment_hashes.append(segment_hash(ciphertext))
        for i, block in enumerate(blocks):
            self._block_hashes[i].append(block_hash(block))
            if self._digests is not None:
                self._digests[i].update(block)
        self._segnum += 1
        return blocks

    def finish(self) -> tuple[bytes, bytes, list[bytes]]:
        """``(ueb_bytes, ueb_hash, [trailer of share i for i in range(n)])``."""
        if self._result is not None:
            return self._result
        if self._segnum != self.params.num_segments:
            raise ValueError("only %d of %d segments were encoded" % (self._segnum, self.params.num_segments))
        block_trees = [HashTree(h) for h in self._block_hashes]
        share_tree = HashTree(t.root for t in block_trees)
        crypttext_tree = HashTree(self._segment_hashes)
        ueb = encode_ueb(self.params, share_tree.root, crypttext_tree.root)
        trailers = [trailer_bytes(self.params, ueb, block_trees[i].nodes, crypttext_tree.nodes,
                                  share_tree.chain(i)) for i in range(self.params.n)]
        if self._digests is not None:
            for d, t in zip(self._digests, trailers):
                d.update(t)
        self._block_hashes = []
        self._result = (ueb, ueb_hash(ueb), trailers)
        return self._result

    def read_cap(self) -> ReadCap:
        """The read capability of the encoded file (after :meth:`finish`)."""
        _, h, _ = self.finish()
        return ReadCap(self.key, h, self.params.k, self.params.n, self.params.size)

    def share_digests(self) -> list[bytes]:
        """SHA-256 of each whole share (needs ``digests=True`` and :meth:`finish`)."""
        if self._digests is None or self._result is None:
            raise ValueError("share digests need digests=True and finish()")
        return [d.digest() for d in self._digests]


def read_exactly(fileobj, length: int) -> bytes:
    """Read ``length`` bytes (fewer only at end of file) from a binary file object."""
    parts, got = [], 0
    while got < length:
        data = fileobj.read(length - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Counting:
    def __init__(self, sink):
        self.sink, self.count = sink, 0

    def write(self, data: bytes) -> None:
        self.sink.write(data)
        self.count += len(data)


def encode_file(fileobj, key: bytes, params: Params, sinks: Iterable) -> ReadCap:
    """Encode everything ``fileobj`` holds (exactly ``params.size`` bytes) into
    the n file-like ``sinks`` (share i into sink i: header, blocks, trailer)
    and return the read capability."""
    outs = [_Counting(s) for s in sinks]
    if len(outs) != params.n:
        raise ValueError("encode_file needs n=%d sinks, not %d" % (params.n, len(outs)))
    enc = Encoder(key, params)
    for i, out in enumerate(outs):
        out.write(enc.header(i))
    for segnum in range(params.num_segments):
        want = params.segment_size(segnum)
        data = read_exactly(fileobj, want)
        if len(data) != want:
            raise StorageError("the file is shorter than the %d bytes it had when it was measured; "
                               "was it changed while being stored?" % params.size)
        for out, block in zip(outs, enc.encode_segment(data)):
            out.write(block)
    if fileobj.read(1):
        raise StorageError("the file is longer than the %d bytes it had when it was measured; "
                           "was it changed while being stored?" % params.size)
    _, _, trailers = enc.finish()
    for out, trailer in zip(outs, trailers):
        out.write(trailer)
    expected = share_length(params)
    for i, out in enumerate(outs):
        if out.count != expected:  # a bug, never the user's doing
            raise AssertionError("share %d is %d bytes, not %d" % (i, out.count, expected))
    return enc.read_cap()
