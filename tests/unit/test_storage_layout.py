"""Parameters, the UEB and the share header/trailer format."""

from __future__ import annotations

import struct

import cbor2
import pytest

from openheap.errors import UsageError
from openheap.storage.errors import CorruptShare
from openheap.storage.hashing import HashTree, tagged_hash
from openheap.storage.layout import (HEADER_SIZE, MAX_SEGSIZE, Params, block_offset, chain_length,
                                     encode_ueb, header_bytes, parse_header, parse_trailer,
                                     parse_ueb, segment_range, share_length, trailer_bytes,
                                     trailer_length, trailer_offset, trailer_range, ueb_hash,
                                     ueb_length)

R1, R2 = bytes(range(32)), bytes(range(32, 64))


@pytest.mark.parametrize("k,n,size,segsize,expect", [
    (3, 10, 0, None, (3, 1, 1, 0, 0)),
    (3, 10, 1, None, (3, 1, 1, 1, 1)),
    (3, 10, 55, None, (57, 1, 19, 55, 19)),
    (1, 1, MAX_SEGSIZE, None, (MAX_SEGSIZE, 1, MAX_SEGSIZE, MAX_SEGSIZE, MAX_SEGSIZE)),
    (3, 10, 10 ** 6, None, (131073, 8, 43691, 82489, 27497)),
    (2, 4, 10 ** 6, None, (MAX_SEGSIZE, 8, 65536, 82496, 41248)),
    (5, 5, 1000, 300, (300, 4, 60, 100, 20)),
    (3, 10, 1000, 100, (102, 10, 34, 82, 28)),
])
def test_params_derivation(k, n, size, segsize, expect):
    p = Params(k, n, size) if segsize is None else Params(k, n, size, segsize)
    assert (p.segsize, p.num_segments, p.block_size, p.tail_segment_size, p.tail_block_size) == expect
    assert p.segsize % k == 0
    assert Params(k, n, size, p.segsize) == p  # normalising is idempotent
    assert sum(p.segment_size(i) for i in range(p.num_segments)) == size
    assert p.tail_block_size * k >= p.tail_segment_size > p.tail_block_size * k - k or size == 0


@pytest.mark.parametrize("args", [(0, 1, 5), (4, 3, 5), (3, 257, 5), (3, 10, -1), (3, 10, 5, 0),
                                  (3, 10, 1 << 64), (3.0, 10, 5)])
def test_bad_params(args):
    with pytest.raises(UsageError):
        Params(*args)


def test_ueb_is_canonical_cbor_with_integer_keys():
    p = Params(3, 10, 1000, 300)
    ueb = encode_ueb(p, R1, R2)
    assert cbor2.loads(ueb) == {0: 1, 1: 3, 2: 10, 3: 1000, 4: 300, 5: R1, 6: R2}
    assert ueb[0] == 0xA7 and len(ueb) == ueb_length(p)
    assert ueb_hash(ueb) == tagged_hash(b"openheap:ueb:v1", ueb)
    u = parse_ueb(ueb)
    assert (u.params, u.share_root, u.crypttext_root) == (p, R1, R2)


@pytest.mark.parametrize("mutate,match", [
    (lambda m: m.update({0: 2}), "version"),
    (lambda m: m.pop(6), "keys 0 to 6"),
    (lambda m: m.update({5: b"x"}), "hash root"),
    (lambda m: m.update({1: 11}), "impossible parameters"),
    (lambda m: m.update({4: 301}), "segment size"),
])
def test_bad_uebs(mutate, match):
    m = {0: 1, 1: 3, 2: 10, 3: 1000, 4: 300, 5: R1, 6: R2}
    mutate(m)
    with pytest.raises(CorruptShare, match=match):
        parse_ueb(cbor2.dumps(m, canonical=True))
    with pytest.raises(CorruptShare, match="CBOR"):
        parse_ueb(b"\xff\x00")
    with pytest.raises(CorruptShare, match="canonical"):
        parse_ueb(cbor2.dumps({0: 1, 1: 3, 2: 10, 3: 1000, 4: 300, 6: R2, 5: R1}))


def test_header_layout():
    p = Params(3, 10, 10 ** 6)
    h = header_bytes(p, 7)
    assert len(h) == HEADER_SIZE == 64 and h[:4] == b"OHS1" and h[48:] == bytes(16)
    fields = struct.unpack(">4sBBHHHIQIIIQI", h[:48])
    assert fields == (b"OHS1", 1, 0, 7, 3, 10, 131073, 10 ** 6, 8, 43691, 27497,
                      trailer_offset(p), trailer_length(p))
    hd = parse_header(h + b"more data after the header")
    assert (hd.shnum, hd.params) == (7, p)
    with pytest.raises(UsageError):
        header_bytes(p, 10)


def _set(h, fmt, offset, value):
    b = bytearray(h)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize("offset,fmt,value,match", [
    (0, "4s", b"OHS2", "magic"),
    (4, "B", 2, "version is 2"),
    (5, "B", 1, "padding"),
    (60, "B", 1, "padding"),
    (6, ">H", 10, "share 10 of only 10"),
    (8, ">H", 11, "k=11, n=10"),
    (8, ">H", 0, "k=0"),
    (12, ">I", 131072, "segment size 131072"),
    (12, ">I", 0, "segment size 0"),
    (24, ">I", 9, "num_segments is inconsistent"),
    (28, ">I", 1, "block_size"),
    (32, ">I", 1, "tail_block_size"),
    (36, ">Q", 1, "trailer_offset"),
    (44, ">I", 1, "trailer_length"),
])
def test_damaged_headers(offset, fmt, value, match):
    h = header_bytes(Params(3, 10, 10 ** 6), 2)
    with pytest.raises(CorruptShare, match=match):
        parse_header(_set(h, fmt, offset, value))


def test_short_header():
    with pytest.raises(CorruptShare, match="shorter than a share header"):
        parse_header(b"OHS1")


def test_sizes_follow_from_params_alone():
    p = Params(3, 10, 10 ** 6)
    assert chain_length(p) == 4 and chain_length(Params(1, 1, 5)) == 0
    assert chain_length(Params(2, 4, 5)) == 2
    # 2 + ueb + two trees of 2*8-1 nodes + chain count + 4 chain entries
    assert trailer_length(p) == 2 + ueb_length(p) + 2 * 15 * 32 + 1 + 4 * 34
    assert trailer_offset(p) == 64 + 7 * 43691 + 27497
    assert share_length(p) == trailer_offset(p) + trailer_length(p)
    assert trailer_range(p) == (trailer_offset(p), trailer_length(p))
    assert [segment_range(p, i) for i in (0, 1, 7)] == [(64, 43691), (64 + 43691, 43691),
                                                        (64 + 7 * 43691, 27497)]
    assert block_offset(p, 7) == 64 + 7 * 43691
    with pytest.raises(IndexError):
        segment_range(p, 8)


def _trailer(p):
    tree = HashTree([bytes([i]) * 32 for i in range(p.num_segments)])
    share_tree = HashTree([bytes([i]) * 32 for i in range(p.n)])
    return trailer_bytes(p, encode_ueb(p, R1, R2), tree.nodes, tree.nodes, share_tree.chain(3)), tree, share_tree


def test_trailer_round_trip():
    p = Params(3, 10, 1000, 300)
    data, tree, share_tree = _trailer(p)
    assert len(data) == trailer_length(p)
    t = parse_trailer(data, p)
    assert t.ueb_bytes == encode_ueb(p, R1, R2)
    assert t.block_tree == tree.nodes == t.crypttext_tree
    assert t.chain == share_tree.chain(3)


def test_damaged_trailers():
    p = Params(3, 10, 1000, 300)
    data, _, _ = _trailer(p)
    with pytest.raises(CorruptShare, match="trailer is"):
        parse_trailer(data[:-1], p)
    with pytest.raises(CorruptShare, match="declares a UEB"):
        parse_trailer(b"\x00\x05" + data[2:], p)
    pos = len(data) - 1 - 4 * 34
    with pytest.raises(CorruptShare, match="chain has 3 entries"):
        parse_trailer(data[:pos] + b"\x03" + data[pos + 1:], p)
    with pytest.raises(ValueError):
        trailer_bytes(p, b"x", [], [], [])
