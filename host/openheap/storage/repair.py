"""Rebuilding lost or corrupt shares from any k good ones.

A :class:`Repairer` needs only a verify-cap (through its :class:`Decoder`):
per segment it decodes the verified ciphertext from k good blocks, encodes
all n blocks again with zfec and hands back those of the missing shares.
At the end it rebuilds every share's block hash tree and the share hash
tree, and refuses (:class:`IntegrityError`) unless that tree's root is the
file's share root and each rebuilt share's block-tree root verifies through
its new chain: a rebuilt share is identical to the one the uploader made.

Blocks are returned before the trailers are known, so a caller that streams
a rebuilt share to a node keeps it (e.g. in a temporary file) until
:meth:`Repairer.finish` has succeeded, or runs the repair twice, once for the
trailers and share digests (``digests=True``) and once to send.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

from openheap.storage.decoder import Decoder
from openheap.storage.encoder import ErasureCoder, block_hash
from openheap.storage.errors import IntegrityError
from openheap.storage.hashing import HashTree, verify_leaf
from openheap.storage.layout import header_bytes, trailer_bytes

__all__ = ["Repairer"]


class Repairer:
    """Regenerate shares ``missing`` of the file ``decoder`` verifies.

    ``decoder`` must have accepted at least one share (so that the UEB and
    the crypttext tree are known); segments are fed in order.
    """

    def __init__(self, decoder: Decoder, missing: Iterable[int], *, digests: bool = False):
        if decoder.params is None:
            raise ValueError("the decoder has no verified share yet")
        self.decoder = decoder
        self.params = p = decoder.params
        self.missing = sorted(set(missing))
        if any(not 0 <= m < p.n for m in self.missing):
            raise ValueError("share numbers must be in 0..%d" % (p.n - 1))
        self._coder = ErasureCoder(p)
        self._hashes: list[list[bytes]] = [[] for _ in range(p.n)]
        self._segnum = 0
        self._digests = ({m: hashlib.sha256(self.header(m)) for m in self.missing}
                         if digests else None)
        self._trailers: dict[int, bytes] | None = None

    def header(self, shnum: int) -> bytes:
        """The header of a rebuilt share."""
        return header_bytes(self.params, shnum)

    def repair_segment(self, segnum: int, blocks: Mapping[int, bytes]) -> dict[int, bytes]:
        """``{shnum: block}`` of the missing shares for segment ``segnum``,
        from at least k good blocks of other shares (errors as
        :meth:`Decoder.decode_ciphertext`)."""
        if segnum != self._segnum:
            raise ValueError("segment %d was expected next, not %d" % (self._segnum, segnum))
        ciphertext = self.decoder.decode_ciphertext(segnum, blocks)
        every = self._coder.encode(segnum, ciphertext)
        for i, block in enumerate(every):
            self._hashes[i].append(block_hash(block))
        if self._digests is not None:
            for m in self.missing:
                self._digests[m].update(every[m])
        self._segnum += 1
        return {m: every[m] for m in self.missing}

    def finish(self) -> dict[int, bytes]:
        """``{shnum: trailer}`` of the missing shares, once everything verified."""
        if self._trailers is not None:
            return self._trailers
        p, dec = self.params, self.decoder
        if self._segnum != p.num_segments:
            raise ValueError("only %d of %d segments were repaired" % (self._segnum, p.num_segments))
        trees = [HashTree(h) for h in self._hashes]
        share_tree = HashTree(t.root for t in trees)
        for shnum, known in dec.block_trees.items():
            if trees[shnum].root != known.root:
                raise IntegrityError("re-encoding does not reproduce share %d: the file's shares "
                                     "were made inconsistently; nothing was repaired" % shnum)
        if share_tree.root != dec.ueb.share_root:
            raise IntegrityError("the rebuilt shares do not match the file's share hash tree; "
                                 "nothing was repaired")
        trailers = {}
        for m in self.missing:
            chain = share_tree.chain(m)
            if not verify_leaf(dec.ueb.share_root, m, trees[m].root, chain, p.n):
                raise IntegrityError("rebuilt share %d does not verify; nothing was repaired" % m)
            trailers[m] = trailer_bytes(p, dec.ueb_bytes, trees[m].nodes, dec.crypttext_tree.nodes, chain)
        if self._digests is not None:
            for m in self.missing:
                self._digests[m].update(trailers[m])
        self._hashes = []
        self._trailers = trailers
        return trailers

    def share_digests(self) -> dict[int, bytes]:
        """SHA-256 of each whole rebuilt share (needs ``digests=True`` and :meth:`finish`)."""
        if self._digests is None or self._trailers is None:
            raise ValueError("share digests need digests=True and finish()")
        return {m: d.digest() for m, d in self._digests.items()}
