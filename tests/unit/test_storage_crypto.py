"""Keys, storage index, AES-128-CTR at any offset, the grid secret."""

from __future__ import annotations

import os
import random
import stat

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from openheap.errors import ConfigError, UsageError
from openheap.storage import crypto
from openheap.storage.crypto import (CTR, convergent_key, decrypt, encrypt, load_or_create_secret,
                                     random_key, storage_index)
from openheap.storage.hashing import tagged_hash

KEY = bytes(range(16))


def keystream(key, nblocks):
    """AES-ECB of the counter blocks 0, 1, 2, ...: CTR with a zero nonce, built by hand."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return ecb.update(b"".join(i.to_bytes(16, "big") for i in range(nblocks)))


def test_ctr_is_counter_mode_with_block_offset_counter():
    data = os.urandom(100)
    ks = keystream(KEY, 7)
    assert encrypt(KEY, 0, data) == bytes(a ^ b for a, b in zip(data, ks))
    assert decrypt(KEY, 0, encrypt(KEY, 0, data)) == data


def test_arbitrary_ranges_equal_slices_of_the_whole():
    rng = random.Random(1)
    plain = os.urandom(5000)
    whole = encrypt(KEY, 0, plain)
    ctr = CTR(KEY)
    cases = [(0, 0), (0, 1), (1, 15), (15, 2), (16, 16), (17, 100), (4999, 1), (4096, 904)]
    cases += [(o, rng.randrange(0, 5000 - o)) for o in (rng.randrange(5000) for _ in range(50))]
    for offset, length in cases:
        piece = whole[offset:offset + length]
        assert decrypt(KEY, offset, piece) == plain[offset:offset + length], (offset, length)
        assert ctr.crypt(offset, plain[offset:offset + length]) == piece


def test_huge_offsets_work():
    off = (1 << 40) + 7
    data = b"x" * 40
    assert decrypt(KEY, off, encrypt(KEY, off, data)) == data
    assert encrypt(KEY, off, data)[9:] == encrypt(KEY, off + 9, data[9:])


def test_bad_keys_and_offsets():
    with pytest.raises(UsageError):
        CTR(b"short")
    with pytest.raises(UsageError):
        encrypt(KEY, -1, b"x")


def test_convergent_keys():
    secret = bytes(32)
    h = tagged_hash(b"openheap:test:v1", b"content")
    k1 = convergent_key(secret, h, 3, 10, 131073)
    assert len(k1) == 16
    assert convergent_key(secret, h, 3, 10, 131073) == k1
    others = {
        convergent_key(b"\x01" * 32, h, 3, 10, 131073),
        convergent_key(secret, tagged_hash(b"openheap:test:v1", b"other"), 3, 10, 131073),
        convergent_key(secret, h, 2, 10, 131072),
        convergent_key(secret, h, 3, 9, 131073),
        convergent_key(secret, h, 3, 10, 3000),
    }
    assert k1 not in others and len(others) == 5
    with pytest.raises(UsageError):
        convergent_key(secret, b"not a hash", 3, 10, 3)


def test_random_keys_differ_and_storage_index():
    keys = {random_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) == 16 for k in keys)
    si = storage_index(KEY)
    assert len(si) == 16 and si == tagged_hash(b"openheap:storage-index:v1", KEY)[:16]
    assert storage_index(random_key()) != si


def test_sha256_stream():
    import hashlib
    import io
    data = os.urandom(200000)
    assert crypto.sha256_stream(io.BytesIO(data)) == (hashlib.sha256(data).digest(), len(data))


def test_secret_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "private" / "secret"
    s1 = load_or_create_secret(path)
    assert len(s1) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret(path) == s1
    assert os.listdir(path.parent) == ["secret"]  # no temporary file left
    other = tmp_path / "other"
    assert load_or_create_secret(other) != s1


def test_damaged_secret_is_a_config_error(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"too short")
    with pytest.raises(ConfigError, match="damaged"):
        load_or_create_secret(path)


def test_unreadable_secret_is_a_config_error(tmp_path):
    (tmp_path / "secret").mkdir()
    with pytest.raises(ConfigError, match="cannot read the grid secret"):
        load_or_create_secret(tmp_path / "secret")
