# ohproto.cbor against protocols/vectors.json, on MicroPython.
# Run: MICROPYPATH=protocols:tests/firmware \
#        micropython -X heapsize=64k tests/firmware/mp_test_cbor_vectors.py
# (tests/firmware/test_micropython_suite.py does this under pytest.)
# One test per vector: decode the "cbor" hex, compare with "value"; encode
# "value", compare with "cbor" (or "canonical" for decode-only vectors).
# vectors.json has one vector per line; it is read a line at a time because
# the whole file parsed at once does not fit the 64 KiB heap next to the code.
import gc
import sys
import json
import mptest
from ohproto import cbor


def _open_vectors():
    for d in sys.path:
        try:
            return open((d or ".") + "/vectors.json")
        except OSError:
            pass
    raise OSError("vectors.json not on sys.path (MICROPYPATH needs protocols)")


def _check_vector(v):
    want = mptest.untag(v["value"])
    data = mptest.unhex(v["cbor"])
    mptest.eq(cbor.loads(data), want, "loads")
    mptest.eq(cbor.loads(bytearray(data)), want, "loads(bytearray)")
    mptest.eq(cbor.loads(memoryview(data)), want, "loads(memoryview)")
    got = cbor.decode_from(b"\x00" + data + b"\x00", 1)
    mptest.eq(got, (want, len(data) + 1), "decode_from")
    mptest.eq(cbor.dumps(want).hex(), v.get("canonical") or v["cbor"], "dumps")


def test_vectors():
    n = 0
    f = _open_vectors()
    for line in f:
        line = line.strip().rstrip(",")
        if line in ("[", "]", ""):
            continue
        v = json.loads(line)
        mptest.case("vector %r" % v["name"], _check_vector, v)
        n += 1
        v = line = None
        gc.collect()
    f.close()
    mptest.check(n > 50, "only %d vectors" % n)


def test_bad_input():
    for h in ("", "18", "1c", "1d", "1e", "3f", "5b0000000100000000", "9b0000000100000000",
              "bb0000000100000000", "8101" + "00", "ff", "c201", "f7", "f818", "61ff",
              "5f6161ff", "5f41", "a10101" + "01", "a2010101" + "02", "a1" + "8001",
              "81" * 18 + "00", "9f" * 18 + "ff" * 18, "fa0000", "fb00"):
        try:
            cbor.loads(mptest.unhex(h))
        except ValueError:
            continue
        mptest.check(False, "accepted " + h)


def test_encode_errors():
    for bad, exc in ((2 ** 64, ValueError), (-2 ** 64 - 1, ValueError), (object(), TypeError)):
        try:
            cbor.dumps(bad)
        except exc:
            continue
        mptest.check(False, "dumps accepted %r" % (bad,))


def test_tuple_as_array():
    mptest.eq(cbor.dumps((1, (2,))), b"\x82\x01\x81\x02", "tuple")


mptest.run(globals())
