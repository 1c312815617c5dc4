"""The AES-CTR golden vectors of ``mpctr.py`` against the host's ``cryptography``.

The board decrypts share ranges with AES-128-CTR built from ECB
(``firmware/ohnode/ctr.py``); ``mp_test_task_range.py`` checks it against
these vectors on MicroPython, and this test checks the vectors themselves
against an independent implementation, so both sides agree with the host's
encryption (``openheap.storage``)."""

import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mpctr  # noqa: E402


@pytest.mark.parametrize("name, key, ctr, plain, cipher", mpctr.VECTORS, ids=[v[0] for v in mpctr.VECTORS])
def test_vector_matches_cryptography(name, key, ctr, plain, cipher):
    enc = Cipher(algorithms.AES(bytes.fromhex(key)), modes.CTR(bytes.fromhex(ctr))).encryptor()
    assert (enc.update(bytes.fromhex(plain)) + enc.finalize()).hex() == cipher
