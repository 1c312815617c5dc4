# Helpers shared by the MicroPython codec tests (mp_test_coap_codec.py and
# mp_test_coap_errors.py, two scripts so that each compiles in 64 KiB).
from mptest import check
from ohnode import coap

CON, NON, ACK, RST = 0, 1, 2, 3


def rt(t, code, mid, tok, opts, pl):
    # build -> parse; returns the Msg and the datagram.
    buf = bytearray(1600)
    n = coap.build(buf, t, code, mid, tok, opts, pl)
    d = bytes(buf[:n])
    m = coap.parse(d, coap.Msg())
    return m, d


def opts_of(m):
    return [(n, bytes(v)) for n, v in m.opts]


def bad(data, what):
    try:
        coap.parse(data, coap.Msg())
    except coap.FormatError:
        return
    check(False, "accepted %s: %s" % (what, data.hex()))
