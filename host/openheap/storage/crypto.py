"""Keys, storage indexes and AES-128-CTR over any byte range of a file.

A file is encrypted as one AES-128-CTR stream whose 16-byte big-endian
counter block for the 16 bytes at file offset ``o`` (``o % 16 == 0``) is
``o // 16`` (the nonce is zero: every key encrypts exactly one file). Any
range can therefore be encrypted or decrypted on its own, at any offset.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from openheap.errors import ConfigError, UsageError
from openheap.storage.hashing import (TAG_CONVERGENCE, TAG_STORAGE_INDEX, netstring,
                                      tagged_hash)

__all__ = [
    "KEY_LEN", "SI_LEN", "SECRET_LEN",
    "random_key", "convergent_key", "storage_index", "sha256_stream",
    "CTR", "encrypt", "decrypt", "load_or_create_secret",
]

KEY_LEN = 16
SI_LEN = 16
SECRET_LEN = 32
_BLOCK = 16


def random_key() -> bytes:
    """A fresh random 16-byte AES key (``--random-key``)."""
    return os.urandom(KEY_LEN)


def convergent_key(secret: bytes, plaintext_sha256: bytes, k: int, n: int, segsize: int) -> bytes:
    """The convergent key of a file: equal for equal content, secret and parameters.

    ``tagged_hash(b"openheap:convergence:v1", netstring(secret) +
    netstring(params) + plaintext_sha256)[:16]`` with ``params`` =
    ``struct.pack(">HHI", k, n, segsize)``.
    """
    if len(plaintext_sha256) != 32:
        raise UsageError("the plaintext hash must be a 32-byte SHA-256 digest")
    if not secret:
        raise UsageError("the convergence secret must not be empty")
    params = struct.pack(">HHI", k, n, segsize)
    return tagged_hash(TAG_CONVERGENCE, netstring(secret) + netstring(params) + plaintext_sha256)[:KEY_LEN]


def storage_index(key: bytes) -> bytes:
    """The 16-byte storage index of a file: where its shares live, derived from the key."""
    _check_key(key)
    return tagged_hash(TAG_STORAGE_INDEX, key)[:SI_LEN]


def sha256_stream(fileobj, chunk: int = 1 << 16) -> tuple[bytes, int]:
    """``(sha256 digest, size)`` of everything left in a binary file object."""
    h = hashlib.sha256()
    size = 0
    while True:
        data = fileobj.read(chunk)
        if not data:
            return h.digest(), size
        h.update(data)
        size += len(data)


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
        raise UsageError("an openheap key is %d bytes" % KEY_LEN)


class CTR:
    """AES-128-CTR for one file's key; :meth:`crypt` works at any offset."""

    def __init__(self, key: bytes):
        _check_key(key)
        self._algorithm = algorithms.AES(bytes(key))

    def crypt(self, offset: int, data: bytes) -> bytes:
        """Encrypt or decrypt ``data`` that sits at byte ``offset`` of the file."""
        if offset < 0:
            raise UsageError("a file offset cannot be negative")
        if not data:
            return b""
        counter, skip = divmod(offset, _BLOCK)
        ctx = Cipher(self._algorithm, modes.CTR(counter.to_bytes(_BLOCK, "big"))).encryptor()
        if skip:
            ctx.update(bytes(skip))
        return ctx.update(data) + ctx.finalize()

    encrypt = crypt
    decrypt = crypt


def encrypt(key: bytes, offset: int, data: bytes) -> bytes:
    """Ciphertext of plaintext ``data`` at file ``offset``."""
    return CTR(key).crypt(offset, data)


def decrypt(key: bytes, offset: int, data: bytes) -> bytes:
    """Plaintext of ciphertext ``data`` at file ``offset``."""
    return CTR(key).crypt(offset, data)


def load_or_create_secret(path) -> bytes:
    """The grid's convergence secret: 32 bytes read from ``path``, created
    (random, mode 0600, atomically) when the file does not exist yet."""
    path = Path(path)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(SECRET_LEN))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # never replaces a secret created meanwhile
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not path.exists():
                os.rename(tmp, path)
                return _read_secret(path)
    finally:
        if tmp.exists():
            os.unlink(tmp)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(SECRET_LEN + 1)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ConfigError("cannot read the grid secret %s: %s" % (path, e.strerror or e)) from None
    if len(data) != SECRET_LEN:
        raise ConfigError("the grid secret %s is damaged: it should hold exactly %d bytes"
                          % (path, SECRET_LEN))
    return data
