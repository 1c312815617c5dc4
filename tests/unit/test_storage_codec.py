"""Encoding and decoding: round trips, any k of n, corruption found and attributed."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random

import pytest

from openheap.storage import encoder as encoder_mod
from openheap.storage.caps import LiteralCap
from openheap.storage.crypto import encrypt, random_key
from openheap.storage.decoder import Decoder, decode_file, verify_share
from openheap.storage.encoder import Encoder, encode_file
from openheap.storage.errors import CorruptShare, IntegrityError, NotEnoughShares, StorageError
from openheap.storage.hashing import tree_size
from openheap.storage.layout import (HEADER_SIZE, Params, parse_header, segment_range,
                                     share_length, trailer_range, ueb_length)

SEG = 600  # a multiple of 1, 2, 3 and 5: several segments stay cheap
KN = [(1, 1), (3, 10), (2, 4), (5, 5)]


def encode(data, k, n, segsize=SEG, key=None):
    p = Params(k, n, len(data), segsize)
    sinks = [io.BytesIO() for _ in range(n)]
    cap = encode_file(io.BytesIO(data), key or random_key(), p, sinks)
    shares = [s.getvalue() for s in sinks]
    assert all(len(s) == share_length(p) for s in shares)
    return cap, shares, p


def decode(cap, shares, which=None):
    which = range(len(shares)) if which is None else which
    out = io.BytesIO()
    corrupt = decode_file(cap, {i: io.BytesIO(shares[i]) for i in which}, out)
    return out.getvalue(), corrupt


def flip(share, pos):
    b = bytearray(share)
    b[pos] ^= 0x40
    return bytes(b)


SIZES = [0, 1, 55, 56, SEG, SEG + 1, 5 * SEG + 123]


@pytest.mark.parametrize("k,n", KN)
@pytest.mark.parametrize("size", SIZES)
def test_round_trip(size, k, n):
    data = os.urandom(size)
    cap, shares, p = encode(data, k, n)
    assert (cap.k, cap.n, cap.size) == (k, n, size)
    assert decode(cap, shares) == (data, [])
    # the blocks of the first k shares are the ciphertext itself (systematic code)
    offset, length = segment_range(p, 0)
    ct0 = b"".join(shares[i][offset:offset + length] for i in range(k))[:p.segment_size(0)]
    assert ct0 == encrypt(cap.key, 0, data[:p.segment_size(0)])


@pytest.mark.parametrize("size,k,n", [(131072, 2, 4), (131073, 2, 4), (2 * 131073 + 5, 3, 10)])
def test_round_trip_default_segment_size(size, k, n):
    data = os.urandom(size)
    cap, shares, p = encode(data, k, n, segsize=128 * 1024)
    assert p.num_segments == (1 if size <= p.segsize else -(-size // p.segsize))
    assert decode(cap, shares) == (data, [])


@pytest.mark.parametrize("k,n", [(3, 10), (2, 4), (5, 5)])
def test_any_k_shares_decode_identically(k, n):
    rng = random.Random(k * 100 + n)
    data = os.urandom(4 * SEG + 77)
    cap, shares, _ = encode(data, k, n)
    subsets = [rng.sample(range(n), k) for _ in range(8)]
    if n - k >= k:
        subsets.append(list(range(n - k, n)))  # parity shares only
        subsets.append(list(range(k, 2 * k)))
    for subset in subsets:
        assert decode(cap, shares, subset) == (data, []), subset


def test_all_subsets_small():
    data = os.urandom(3 * SEG + 1)
    cap, shares, _ = encode(data, 2, 4)
    for subset in itertools.combinations(range(4), 2):
        assert decode(cap, shares, subset)[0] == data


def test_flipped_block_byte_is_attributed_to_its_share():
    rng = random.Random(5)
    data = os.urandom(4 * SEG + 77)
    cap, shares, p = encode(data, 3, 10)
    for _ in range(12):
        shnum, segnum = rng.randrange(10), rng.randrange(p.num_segments)
        offset, length = segment_range(p, segnum)
        damaged = list(shares)
        damaged[shnum] = flip(shares[shnum], offset + rng.randrange(length))
        dec = Decoder(cap)
        for i in range(10):
            dec.add_share(i, damaged[i][:HEADER_SIZE], damaged[i][slice(*_tr(p))])
        blocks = {i: damaged[i][offset:offset + length] for i in range(10)}
        assert dec.verify_blocks(segnum, blocks) == [shnum]
        with pytest.raises(CorruptShare) as info:
            dec.decode_segment(segnum, blocks)
        assert info.value.shnums == [shnum] and info.value.shnum == shnum
        assert "share %d is corrupt" % shnum in str(info.value)
        good = {i: b for i, b in blocks.items() if i != shnum}
        assert dec.decode_segment(segnum, good) == data[p.segment_offset(segnum):][:p.segment_size(segnum)]
        assert decode(cap, damaged) == (data, [shnum] if shnum < 3 else [])


def _tr(p):
    offset, length = trailer_range(p)
    return offset, offset + length


def test_several_corrupt_shares_named_together_and_skipped():
    data = os.urandom(3 * SEG)
    cap, shares, p = encode(data, 3, 10)
    damaged = list(shares)
    for s in (0, 2, 3, 7):
        damaged[s] = flip(shares[s], HEADER_SIZE + 1)
    # only k shares are read per segment: 0 and 2 fail first, then 3; 7 is never read
    assert decode(cap, damaged) == (data, [0, 2, 3])


def region_offsets(p):
    """Byte offsets of each part of a share, for damaging them."""
    t = trailer_range(p)[0]
    u = ueb_length(p)
    tree = tree_size(p.num_segments) * 32
    return {"header": 20, "ueb length": t, "ueb": t + 2 + u // 2, "block tree": t + 2 + u + 5,
            "crypttext tree": t + 2 + u + tree + 5, "chain count": t + 2 + u + 2 * tree,
            "chain": t + 2 + u + 2 * tree + 1 + 10}


@pytest.mark.parametrize("region,match", [
    ("header", "header"), ("ueb length", "declares a UEB"), ("ueb", "UEB does not match"),
    ("block tree", "block hash tree"), ("crypttext tree", "crypttext hash tree"),
    ("chain count", "chain has"), ("chain", "share hash tree"),
])
def test_damaged_header_trailer_or_ueb(region, match):
    data = os.urandom(5 * SEG + 10)
    cap, shares, p = encode(data, 3, 10)
    pos = region_offsets(p)[region]
    damaged = flip(shares[4], pos)
    dec = Decoder(cap)
    with pytest.raises(CorruptShare, match=match) as info:
        dec.add_share(4, damaged[:HEADER_SIZE], damaged[slice(*_tr(p))])
    assert info.value.shnum == 4
    with pytest.raises(CorruptShare):
        verify_share(Decoder(cap), 4, io.BytesIO(damaged))
    all_damaged = list(shares)
    all_damaged[4] = damaged
    assert decode(cap, all_damaged) == (data, [4])


def test_share_under_the_wrong_number_or_for_another_file():
    cap, shares, p = encode(os.urandom(1000), 3, 10)
    dec = Decoder(cap)
    with pytest.raises(CorruptShare, match="header says it is share 3"):
        dec.add_share(4, shares[3][:HEADER_SIZE], shares[3][slice(*_tr(p))])
    other, oshares, op = encode(os.urandom(1000), 3, 10)
    with pytest.raises(CorruptShare, match="UEB does not match the capability"):
        dec.add_share(3, oshares[3][:HEADER_SIZE], oshares[3][slice(*_tr(op))])
    third, tshares, tp = encode(os.urandom(1001), 3, 10)
    with pytest.raises(CorruptShare, match="capability says"):
        dec.add_share(3, tshares[3][:HEADER_SIZE], tshares[3][slice(*_tr(tp))])
    assert dec.shares == []


def test_not_enough_shares():
    data = os.urandom(2 * SEG)
    cap, shares, _ = encode(data, 3, 10)
    with pytest.raises(NotEnoughShares) as info:
        decode(cap, shares, [1, 7])
    assert (info.value.found, info.value.needed) == (2, 3)
    assert str(info.value) == "found 2 good shares of this file but 3 are needed to rebuild it"
    damaged = [flip(s, HEADER_SIZE) for s in shares[:8]] + shares[8:]
    with pytest.raises(NotEnoughShares) as info:
        decode(cap, damaged)
    assert info.value.found == 2


def test_verify_cap_yields_ciphertext():
    data = os.urandom(3 * SEG + 5)
    cap, shares, _ = encode(data, 3, 10)
    ct, corrupt = decode(cap.verify_cap(), shares, [9, 4, 6])
    assert ct == encrypt(cap.key, 0, data) and corrupt == []
    assert not Decoder(cap.verify_cap()).readable and Decoder(cap).readable


def test_literal_cap_decodes_without_shares():
    assert decode(LiteralCap(b"tiny"), []) == (b"tiny", [])


def test_verify_share_whole():
    data = os.urandom(3 * SEG + 5)
    cap, shares, p = encode(data, 3, 10)
    dec = Decoder(cap.verify_cap())
    for i in range(10):
        verify_share(dec, i, io.BytesIO(shares[i]))
    with pytest.raises(CorruptShare, match="block 2"):
        verify_share(dec, 1, io.BytesIO(flip(shares[1], segment_range(p, 2)[0] + 3)))
    with pytest.raises(CorruptShare, match="bytes long"):
        verify_share(dec, 1, io.BytesIO(shares[1] + b"x"))
    with pytest.raises(CorruptShare):
        verify_share(dec, 1, io.BytesIO(shares[1][:-1]))


def test_inconsistent_shares_are_caught_by_the_crypttext_tree(monkeypatch):
    real = encoder_mod.ErasureCoder.encode

    def bad_parity(self, segnum, ciphertext, shnums=None):
        blocks = real(self, segnum, ciphertext, shnums)
        blocks[9] = bytes(len(blocks[9]))  # a buggy uploader: a wrong parity block, hashed as is
        return blocks

    monkeypatch.setattr(encoder_mod.ErasureCoder, "encode", bad_parity)
    data = os.urandom(SEG)
    cap, shares, _ = encode(data, 3, 10)
    monkeypatch.undo()
    assert decode(cap, shares, [0, 1, 2])[0] == data
    with pytest.raises(IntegrityError, match="inconsistently"):
        decode(cap, shares, [0, 1, 9])


def test_encoder_streaming_api_and_digests():
    data = os.urandom(2 * SEG + 3)
    p = Params(3, 10, len(data), SEG)
    key = random_key()
    enc = Encoder(key, p, digests=True)
    shares = [bytearray(enc.header(i)) for i in range(10)]
    for segnum in range(p.num_segments):
        for i, block in enumerate(enc.encode_segment(data[segnum * SEG:(segnum + 1) * SEG])):
            shares[i] += block
    with pytest.raises(ValueError):
        enc.encode_segment(b"")
    ueb, ueb_h, trailers = enc.finish()
    for i, t in enumerate(trailers):
        shares[i] += t
    assert enc.share_digests() == [hashlib.sha256(s).digest() for s in shares]
    cap = enc.read_cap()
    assert cap.ueb_hash == ueb_h and parse_header(bytes(shares[0])).params == p
    assert decode(cap, [bytes(s) for s in shares]) == (data, [])
    # same key, same content: the same shares (what convergent encryption relies on)
    cap2, shares2, _ = encode(data, 3, 10, key=key)
    assert cap2 == cap and shares2 == [bytes(s) for s in shares]


def test_encoder_refuses_wrong_segments():
    p = Params(3, 10, 2 * SEG, SEG)
    enc = Encoder(random_key(), p)
    with pytest.raises(ValueError):
        enc.encode_segment(b"x" * (SEG - 1))
    enc.encode_segment(b"x" * SEG)
    with pytest.raises(ValueError):
        enc.finish()


def test_encode_file_notices_a_changed_file():
    p = Params(3, 10, 1000, SEG)
    with pytest.raises(StorageError, match="shorter"):
        encode_file(io.BytesIO(bytes(999)), random_key(), p, [io.BytesIO() for _ in range(10)])
    with pytest.raises(StorageError, match="longer"):
        encode_file(io.BytesIO(bytes(1001)), random_key(), p, [io.BytesIO() for _ in range(10)])
