"""Ranges of a stored file for --over (openheap.compute.over), checked
against shares made by the real encoder: every range's bytes sit at its
share offset in its systematic share, and AES-CTR from the range's counter
block decrypts them, as a board does with TK_RANGE."""

import io
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from openheap.compute import over as O
from openheap.errors import UsageError
from openheap.storage.encoder import encode_file
from openheap.storage.layout import Params


def _store(data, k=3, n=5, segsize=None):
    key = os.urandom(16)
    params = Params(k, n, len(data)) if segsize is None else Params(k, n, len(data), segsize)
    sinks = [io.BytesIO() for _ in range(n)]
    cap = encode_file(io.BytesIO(data), key, params, sinks)
    return cap, params, [s.getvalue() for s in sinks]


def _board_decrypt(share: bytes, ref: O.RangeRef) -> bytes:
    si, shnum, off, length, key, ctr = ref.wire()
    ct = share[off:off + length]
    return Cipher(algorithms.AES(key), modes.CTR(ctr)).decryptor().update(ct)


@pytest.mark.parametrize("size,k,segsize,chunk", [
    (300_000, 3, None, 4096),       # 3 segments of 131073 bytes, blocks of 43691: unaligned heads
    (1_000, 3, None, 64),
    (70_000, 2, 4096, 1024),        # aligned blocks: no heads
    (5, 1, None, 16),
])
def test_ranges_cover_the_file_and_decrypt_in_place(size, k, segsize, chunk):
    data = os.urandom(size)
    cap, params, shares = _store(data, k=k, segsize=segsize)
    ranges = O.plan(k, cap.n, size, chunk, params.segsize)
    pos = 0
    src = O.Source(cap, {})
    for i, r in enumerate(ranges):
        assert r.index == i and r.offset == pos and 0 < r.length <= chunk and r.shnum < k
        pos += r.length
        ref = src.ref(r)
        if r.aligned:
            assert ref.where == (cap.storage_index, r.shnum)
            assert _board_decrypt(shares[r.shnum], ref) == data[r.offset:r.offset + r.length]
        else:
            assert ref.where is None and r.length < 16  # a head: shipped
    assert pos == size
    assert sum(1 for r in ranges if not r.aligned) <= k * params.num_segments


def test_ship_sends_every_range():
    cap, params, _ = _store(os.urandom(10_000))
    src = O.Source(cap, {})
    assert all(src.ref(r, ship=True).where is None for r in O.plan(3, 5, 10_000, 1024))


def test_chunk_must_be_a_multiple_of_16():
    with pytest.raises(UsageError):
        O.plan(3, 5, 1000, 1000)
