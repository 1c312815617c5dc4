"""Repair: missing shares rebuilt from any k good ones, identical to the originals."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from openheap.storage import encoder as encoder_mod
from openheap.storage.crypto import random_key
from openheap.storage.decoder import Decoder
from openheap.storage.encoder import encode_file
from openheap.storage.errors import CorruptShare, IntegrityError, NotEnoughShares
from openheap.storage.layout import HEADER_SIZE, Params, segment_range, trailer_range
from openheap.storage.repair import Repairer

SEG = 600


def encode(data, k, n):
    p = Params(k, n, len(data), SEG)
    sinks = [io.BytesIO() for _ in range(n)]
    cap = encode_file(io.BytesIO(data), random_key(), p, sinks)
    return cap, [s.getvalue() for s in sinks], p


def decoder_for(cap, shares, p, which):
    dec = Decoder(cap)
    offset, length = trailer_range(p)
    for i in which:
        dec.add_share(i, shares[i][:HEADER_SIZE], shares[i][offset:offset + length])
    return dec


def repair(dec, shares, p, missing, sources, digests=False):
    rep = Repairer(dec, missing, digests=digests)
    rebuilt = {m: bytearray(rep.header(m)) for m in missing}
    for segnum in range(p.num_segments):
        offset, length = segment_range(p, segnum)
        blocks = {s: shares[s][offset:offset + length] for s in sources}
        for m, block in rep.repair_segment(segnum, blocks).items():
            rebuilt[m] += block
    for m, trailer in rep.finish().items():
        rebuilt[m] += trailer
    return rep, {m: bytes(b) for m, b in rebuilt.items()}


@pytest.mark.parametrize("k,n,size,missing,sources", [
    (3, 10, 5 * SEG + 7, [0, 4, 9], [3, 6, 8]),
    (3, 10, 1, [1, 2, 3, 4, 5, 6, 7], [0, 8, 9]),
    (2, 4, 0, [0], [2, 3]),
    (4, 5, 2 * SEG + 1, [2], [0, 1, 3, 4]),
    (5, 7, SEG, [0, 1], [2, 3, 4, 5, 6]),
])
def test_rebuilt_shares_are_identical(k, n, size, missing, sources):
    data = os.urandom(size)
    cap, shares, p = encode(data, k, n)
    dec = decoder_for(cap.verify_cap(), shares, p, sources)
    rep, rebuilt = repair(dec, shares, p, missing, sources, digests=True)
    for m in missing:
        assert rebuilt[m] == shares[m], m
        assert rep.share_digests()[m] == hashlib.sha256(shares[m]).digest()


def test_repair_from_a_read_cap_too():
    data = os.urandom(3 * SEG)
    cap, shares, p = encode(data, 3, 10)
    dec = decoder_for(cap, shares, p, [5, 7, 9])
    _, rebuilt = repair(dec, shares, p, [0, 1], [5, 7, 9])
    assert rebuilt == {0: shares[0], 1: shares[1]}


def test_corrupt_source_block_is_named():
    data = os.urandom(3 * SEG)
    cap, shares, p = encode(data, 3, 10)
    damaged = list(shares)
    b = bytearray(shares[6])
    b[segment_range(p, 1)[0]] ^= 1
    damaged[6] = bytes(b)
    dec = decoder_for(cap.verify_cap(), damaged, p, [3, 6, 8, 9])
    rep = Repairer(dec, [0])
    offset, length = segment_range(p, 0)
    rep.repair_segment(0, {s: damaged[s][offset:offset + length] for s in (3, 6, 8)})
    offset, length = segment_range(p, 1)
    with pytest.raises(CorruptShare) as info:
        rep.repair_segment(1, {s: damaged[s][offset:offset + length] for s in (3, 6, 8)})
    assert info.value.shnums == [6]
    # the caller swaps in another share and goes on
    rep.repair_segment(1, {s: damaged[s][offset:offset + length] for s in (3, 8, 9)})
    offset, length = segment_range(p, 2)
    with pytest.raises(NotEnoughShares):
        rep.repair_segment(2, {s: damaged[s][offset:offset + length] for s in (3, 8)})


def test_inconsistent_shares_are_not_repaired(monkeypatch):
    real = encoder_mod.ErasureCoder.encode

    def bad_parity(self, segnum, ciphertext, shnums=None):
        blocks = real(self, segnum, ciphertext, shnums)
        if shnums is None:
            blocks[9] = bytes(len(blocks[9]))
        return blocks

    monkeypatch.setattr(encoder_mod.ErasureCoder, "encode", bad_parity)
    data = os.urandom(2 * SEG)
    cap, shares, p = encode(data, 3, 10)
    monkeypatch.undo()
    dec = decoder_for(cap.verify_cap(), shares, p, [0, 1, 2, 9])
    with pytest.raises(IntegrityError, match="nothing was repaired"):
        repair(dec, shares, p, [5], [0, 1, 2])


def test_repairer_needs_a_verified_share_and_order():
    data = os.urandom(2 * SEG)
    cap, shares, p = encode(data, 3, 10)
    with pytest.raises(ValueError):
        Repairer(Decoder(cap.verify_cap()), [0])
    dec = decoder_for(cap.verify_cap(), shares, p, [1, 2, 3])
    with pytest.raises(ValueError):
        Repairer(dec, [10])
    rep = Repairer(dec, [0])
    with pytest.raises(ValueError):
        rep.repair_segment(1, {})
    with pytest.raises(ValueError):
        rep.finish()
