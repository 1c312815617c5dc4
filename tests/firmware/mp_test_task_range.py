# Compute next to the data: AES-128-CTR from ECB (ohnode.ctr) against the
# golden vectors of mpctr.py (checked against the host's `cryptography` by
# test_ctr_vectors.py), and TK_RANGE: the board reads a range of its share,
# decrypts it and passes the plaintext as the first argument.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_task_range
import mpfake as F
import mptask as T
import mpctr
from mptest import eq
from ohnode import ctr
from ohproto import const as P
from ohproto import compute as C

nd, CODE = T.node()
SI = bytes.fromhex("0123456789abcdef0123456789abcdef")  # F.SI


def test_ctr_vectors():
    for name, key, c, plain, cipher in mpctr.VECTORS:
        buf = bytearray(bytes.fromhex(cipher))
        ctr.xor(bytes.fromhex(key), bytes.fromhex(c), buf)
        eq(buf.hex(), plain, name)


def test_range_decrypted_on_the_board():
    # The share holds the three ciphertexts one after another behind a
    # 7-byte head; each task gets one of them back in plaintext.
    share = b"header!" + b"".join(bytes.fromhex(v[4]) for v in mpctr.VECTORS)
    eq(F.upload(nd, F.spath(), share)[0].code, P.CREATED, "share stored")
    off = 7
    for i, (name, key, c, plain, cipher) in enumerate(mpctr.VECTORS):
        n = len(cipher) // 2
        rng = [SI, 0, off, n, bytes.fromhex(key), bytes.fromhex(c)]
        m = T.run(nd, CODE, "echo", ("x",), tid=200 + i, range=rng)
        eq(m.get(C.TR_VALUE, m), [bytes.fromhex(plain), "x"], name + ": plaintext first, then TK_ARGS")
        off += n
    rng = [SI, 0, off - 4, 8, bytes(16), bytes(16)]
    r = T.post(nd, T.task(CODE, "echo", tid=210, range=rng))
    eq((r.code, r.pl), (P.BAD_REQUEST, b"range beyond the share"), "past the end")
    r = T.post(nd, T.task(CODE, "echo", tid=211, range=[SI, 1, 0, 1, bytes(16), bytes(16)]))
    eq((r.code, r.pl), (P.NOT_FOUND, b"no such share"), "share absent")


F.run(globals())
