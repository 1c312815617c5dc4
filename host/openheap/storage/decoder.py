"""Verifying shares and decoding a file from any k of them.

:class:`Decoder` works from a read-cap (it yields plaintext) or a
verify-cap (it yields ciphertext, enough to check and repair). It does no
I/O: the caller fetches a share's header and trailer, hands them to
:meth:`Decoder.add_share`, then fetches blocks (the byte ranges of
:func:`openheap.storage.layout.segment_range`) and hands k of them per
segment to :meth:`Decoder.decode_segment`. A corrupt share is reported by
number (:class:`CorruptShare`) so the caller can use another one.

Trust flows from the capability: its UEB hash authenticates the UEB; the
UEB's share root authenticates each share's block hash tree (through the
share's hash chain); the block trees authenticate every block; the UEB's
crypttext root authenticates every decoded segment.
"""

from __future__ import annotations

from typing import Mapping

from openheap.storage.caps import LiteralCap, ReadCap, VerifyCap
from openheap.storage.crypto import CTR
from openheap.storage.encoder import ErasureCoder, block_hash, read_exactly, segment_hash
from openheap.storage.errors import CorruptShare, IntegrityError, NotEnoughShares
from openheap.storage.hashing import VerifiedTree, verify_leaf
from openheap.storage.layout import (HEADER_SIZE, UEB, Params, parse_header, parse_trailer,
                                     parse_ueb, segment_range, trailer_range, ueb_hash)

__all__ = ["Decoder", "decode_file", "verify_share"]


class Decoder:
    """Verify shares and decode segments of the file a capability names."""

    def __init__(self, cap: ReadCap | VerifyCap):
        if not isinstance(cap, (ReadCap, VerifyCap)):
            raise TypeError("a Decoder needs a ReadCap or a VerifyCap")
        self.cap = cap
        self.params: Params | None = None
        self.ueb: UEB | None = None
        self.ueb_bytes: bytes | None = None
        self.crypttext_tree: VerifiedTree | None = None
        self.block_trees: dict[int, VerifiedTree] = {}
        self.chains: dict[int, list] = {}
        self._ctr = CTR(cap.key) if isinstance(cap, ReadCap) else None
        self._coder: ErasureCoder | None = None

    @property
    def readable(self) -> bool:
        """True when decoding yields plaintext (a read-cap), False for ciphertext."""
        return self._ctr is not None

    @property
    def shares(self) -> list[int]:
        """Share numbers whose header and trailer were verified."""
        return sorted(self.block_trees)

    def add_share(self, shnum: int, header: bytes, trailer: bytes) -> None:
        """Verify share ``shnum``'s header and trailer; raises :class:`CorruptShare`."""
        cap = self.cap
        try:
            h = parse_header(header)
        except CorruptShare as e:
            raise e.for_share(shnum) from None
        p = h.params
        if h.shnum != shnum:
            raise CorruptShare("its header says it is share %d" % h.shnum, shnum)
        if (p.k, p.n, p.size) != (cap.k, cap.n, cap.size):
            raise CorruptShare("its header says k=%d, n=%d, size=%d but the capability says "
                               "k=%d, n=%d, size=%d" % (p.k, p.n, p.size, cap.k, cap.n, cap.size), shnum)
        try:
            t = parse_trailer(trailer, p)
        except CorruptShare as e:
            raise e.for_share(shnum) from None
        if ueb_hash(t.ueb_bytes) != cap.ueb_hash:
            raise CorruptShare("its UEB does not match the capability", shnum)
        if self.ueb is None:
            try:
                ueb = parse_ueb(t.ueb_bytes)
            except CorruptShare as e:  # only a forged capability gets here
                raise IntegrityError("the file's UEB is invalid: %s" % e.reason) from None
            if ueb.params != p:
                raise CorruptShare("its header disagrees with the file's UEB", shnum)
            try:
                ctree = VerifiedTree(t.crypttext_tree, ueb.crypttext_root, p.num_segments)
            except ValueError as e:
                raise CorruptShare("its crypttext hash tree is wrong (%s)" % e, shnum) from None
            self.params, self.ueb, self.ueb_bytes, self.crypttext_tree = p, ueb, t.ueb_bytes, ctree
            self._coder = ErasureCoder(p)
        elif p != self.params:
            raise CorruptShare("its header disagrees with the file's UEB", shnum)
        elif t.crypttext_tree != self.crypttext_tree.nodes:
            raise CorruptShare("its crypttext hash tree does not match the file's", shnum)
        try:
            btree = VerifiedTree(t.block_tree, t.block_tree[0], p.num_segments)
        except ValueError as e:
            raise CorruptShare("its block hash tree is wrong (%s)" % e, shnum) from None
        if not verify_leaf(self.ueb.share_root, shnum, btree.root, t.chain, p.n):
            raise CorruptShare("its block hash tree does not match the file's share hash tree", shnum)
        self.block_trees[shnum] = btree
        self.chains[shnum] = list(t.chain)

    def block_ok(self, shnum: int, segnum: int, block: bytes) -> bool:
        """True when ``block`` is block ``segnum`` of share ``shnum`` (an added share)."""
        tree = self.block_trees[shnum]
        return len(block) == self.params.block_length(segnum) and tree.check_leaf(segnum, block_hash(block))

    def verify_blocks(self, segnum: int, blocks: Mapping[int, bytes]) -> list[int]:
        """Share numbers whose block in ``blocks`` is corrupt (empty when all are good)."""
        unknown = [s for s in blocks if s not in self.block_trees]
        if unknown:
            raise ValueError("blocks from shares %s whose trailers were not added" % unknown)
        return sorted(s for s, b in blocks.items() if not self.block_ok(s, segnum, b))

    def decode_ciphertext(self, segnum: int, blocks: Mapping[int, bytes]) -> bytes:
        """The verified ciphertext of segment ``segnum`` from at least k blocks.

        Every block given is checked: :class:`CorruptShare` names all the
        bad ones; :class:`NotEnoughShares` when fewer than k were given.
        """
        if self.params is None:
            raise NotEnoughShares(0, self.cap.k)
        bad = self.verify_blocks(segnum, blocks)
        if bad:
            raise CorruptShare("block %d does not match its hash" % segnum, shnums=bad)
        k = self.params.k
        if len(blocks) < k:
            raise NotEnoughShares(len(blocks), k)
        use = {s: blocks[s] for s in sorted(blocks)[:k]}
        ciphertext = self._coder.decode(segnum, use)
        if not self.crypttext_tree.check_leaf(segnum, segment_hash(ciphertext)):
            raise IntegrityError("segment %d decoded from shares %s does not match the file's "
                                 "ciphertext hash: the shares were made inconsistently"
                                 % (segnum, ", ".join(map(str, use))))
        return ciphertext

    def decode_segment(self, segnum: int, blocks: Mapping[int, bytes]) -> bytes:
        """Segment ``segnum`` of the file: plaintext from a read-cap, ciphertext
        from a verify-cap (see :meth:`decode_ciphertext` for errors)."""
        ciphertext = self.decode_ciphertext(segnum, blocks)
        if self._ctr is None:
            return ciphertext
        return self._ctr.crypt(self.params.segment_offset(segnum), ciphertext)


def _read_range(fileobj, offset: int, length: int) -> bytes:
    fileobj.seek(offset)
    return read_exactly(fileobj, length)


def _add_from_file(decoder: Decoder, shnum: int, fileobj) -> None:
    header = _read_range(fileobj, 0, HEADER_SIZE)
    try:
        params = parse_header(header).params
    except CorruptShare as e:
        raise e.for_share(shnum) from None
    offset, length = trailer_range(params)
    decoder.add_share(shnum, header, _read_range(fileobj, offset, length))


def decode_file(cap, shares: Mapping[int, object], out) -> list[int]:
    """Write the file ``cap`` names to ``out`` from seekable share files
    ``{shnum: fileobj}``, reading k shares per segment and switching to
    another share when one is corrupt. Returns the corrupt share numbers.

    The reference for the coordinator's networked get; raises
    :class:`NotEnoughShares` when fewer than k good shares remain.
    """
    if isinstance(cap, LiteralCap):
        out.write(cap.data)
        return []
    dec = Decoder(cap)
    corrupt: set[int] = set()
    for shnum in sorted(shares):
        try:
            _add_from_file(dec, shnum, shares[shnum])
        except CorruptShare:
            corrupt.add(shnum)
    good = dec.shares
    if len(good) < cap.k:
        raise NotEnoughShares(len(good), cap.k)
    for segnum in range(dec.params.num_segments):
        offset, length = segment_range(dec.params, segnum)
        while True:
            use = good[:cap.k]
            blocks = {s: _read_range(shares[s], offset, length) for s in use}
            try:
                out.write(dec.decode_segment(segnum, blocks))
                break
            except CorruptShare as e:
                corrupt.update(e.shnums)
                good = [s for s in good if s not in e.shnums]
                if len(good) < cap.k:
                    raise NotEnoughShares(len(good), cap.k) from None
    return sorted(corrupt)


def verify_share(decoder: Decoder, shnum: int, fileobj) -> None:
    """Check one whole share (header, trailer and every block) against the
    capability; raises :class:`CorruptShare` naming the first problem."""
    _add_from_file(decoder, shnum, fileobj)
    params = decoder.params
    for segnum in range(params.num_segments):
        offset, length = segment_range(params, segnum)
        if not decoder.block_ok(shnum, segnum, _read_range(fileobj, offset, length)):
            raise CorruptShare("block %d does not match its hash" % segnum, shnum)
    fileobj.seek(0, 2)
    offset, length = trailer_range(params)
    if fileobj.tell() != offset + length:
        raise CorruptShare("it is %d bytes long, not %d" % (fileobj.tell(), offset + length), shnum)
