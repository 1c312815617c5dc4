"""Memory stays bounded by a few segments whatever the file size."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc

from openheap.storage.crypto import random_key
from openheap.storage.decoder import decode_file
from openheap.storage.encoder import encode_file
from openheap.storage.layout import Params, share_length

MB = 10 ** 6


class Stream:
    """``size`` pseudo-random bytes made on the fly, never held whole; keeps their SHA-256."""

    def __init__(self, size):
        self.left = size
        self.hash = hashlib.sha256()

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        data = os.urandom(n)
        self.hash.update(data)
        return data


class NullSink:
    def __init__(self):
        self.count = 0

    def write(self, data):
        self.count += len(data)


class HashSink(NullSink):
    def __init__(self):
        super().__init__()
        self.hash = hashlib.sha256()

    def write(self, data):
        super().write(data)
        self.hash.update(data)


def peak_during(fn):
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        result = fn()
        elapsed = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, elapsed


def test_encoding_50_mb_stays_within_a_few_mb():
    size = 50 * MB
    params = Params(3, 10, size)
    sinks = [NullSink() for _ in range(10)]
    cap, peak, elapsed = peak_during(lambda: encode_file(Stream(size), random_key(), params, sinks))
    assert all(s.count == share_length(params) for s in sinks)
    assert cap.size == size
    print("encode 50 MB 3-of-10: peak %.2f MB traced, %.1f s" % (peak / MB, elapsed))
    assert peak < 4 * MB, peak


def test_decoding_streams_too(tmp_path):
    size = 8 * MB
    params = Params(3, 10, size)
    source = Stream(size)
    files = [open(tmp_path / ("share%d" % i), "w+b") for i in (4, 7, 9)]
    sinks = [NullSink() for _ in range(10)]
    sinks[4], sinks[7], sinks[9] = files
    try:
        cap = encode_file(source, random_key(), params, sinks)
        out = HashSink()
        corrupt, peak, _ = peak_during(lambda: decode_file(cap, dict(zip((4, 7, 9), files)), out))
    finally:
        for f in files:
            f.close()
    assert corrupt == [] and out.count == size
    assert out.hash.digest() == source.hash.digest()
    assert peak < 4 * MB, peak
