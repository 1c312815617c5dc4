# ohnode.coap (RFC 7252 section 3 message format, RFC 7959 Block values) on
# MicroPython with the board heap: parse/build round trips, the extended
# option delta/length encodings, message format errors, and golden datagrams
# written by hand from the RFC. Part 2 (format errors, Block values) is
# mp_test_coap_errors.py; split so that each script compiles in 64 KiB.
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_coap_codec
import mptest
from mptest import check, eq
from ohnode import coap

h = mptest.unhex
from mpcoap import CON, NON, ACK, RST, bad, opts_of, rt  # noqa: F401


def test_golden_rfc7252_get_temperature():
    # RFC 7252 figure 16 style: CON GET /temperature, MID 0x7d34, no token.
    d = h("40017d34bb74656d7065726174757265")
    m = coap.parse(d, coap.Msg())
    eq((m.t, m.code, m.mid, m.tok), (CON, 1, 0x7D34, b""), "header")
    eq(opts_of(m), [(11, b"temperature")], "opts")
    eq(bytes(m.pl), b"", "payload")
    eq(m.opt_all(11), ["temperature"], "opt_all")
    buf = bytearray(64)
    n = coap.build(buf, CON, 1, 0x7D34, b"", [(11, b"temperature")], None)
    eq(bytes(buf[:n]), d, "build")


def test_golden_rfc7252_piggybacked_content():
    # ACK 2.05, MID 0x7d34, token 0x71, payload "22.3 C".
    d = h("61457d3471ff32322e332043")
    m = coap.parse(d, coap.Msg())
    eq((m.t, m.code, m.mid, m.tok), (ACK, 0x45, 0x7D34, b"\x71"), "header")
    eq(m.opts, [], "opts")
    eq(bytes(m.pl), b"22.3 C", "payload")
    buf = bytearray(64)
    n = coap.build(buf, ACK, 0x45, 0x7D34, b"\x71", [], b"22.3 C")
    eq(bytes(buf[:n]), d, "build")


def test_golden_ping_and_rst():
    m = coap.parse(h("40001234"), coap.Msg())
    eq((m.t, m.code, m.mid, m.tok, m.opts), (CON, 0, 0x1234, b"", []), "ping")
    eq(coap.header(h("70001234")), (RST, 0, 0x1234), "rst header")
    buf = bytearray(8)
    eq(coap.build(buf, RST, 0, 0x1234, b"", [], None), 4, "rst length")
    eq(bytes(buf[:4]), h("70001234"), "rst bytes")


def test_golden_block2_and_no_response():
    # GET /a with Block2 (NUM 1, M 0, SZX 2) then No-Response (258) = 2:
    # Uri-Path delta 11 "b1 61"; Block2 delta 12 "c1 12"; No-Response delta
    # 235 -> nibble 13, ext 235-13 = 0xde: "d1 de 02".
    d = h("4201000aabcdb161c112d1de02")
    m = coap.parse(d, coap.Msg())
    eq(m.tok, h("abcd"), "token")
    eq(opts_of(m), [(11, b"a"), (23, b"\x12"), (258, b"\x02")], "opts")
    eq(coap.block_of(m.opt(23)), (1, 0, 2), "block2")
    eq(m.opt_uint(258), 2, "no-response")
    m2, d2 = rt(CON, 1, 10, h("abcd"), [(11, b"a"), (23, b"\x12"), (258, b"\x02")], None)
    eq(d2, d, "build")


def test_golden_option_2049():
    # Option 2049 as the first option: delta 2049 >= 269 -> nibble 14,
    # ext 2049-269 = 0x06f4; empty value.
    d = h("40010001e006f4")
    m = coap.parse(d, coap.Msg())
    eq(opts_of(m), [(2049, b"")], "opts")
    eq(rt(CON, 1, 1, b"", [(2049, b"")], None)[1], d, "build")


def test_delta_boundaries():
    # delta 12: nibble; 13: 13 + 1 byte (0); 268: 13 + 0xff; 269: 14 + 0000;
    # 270: 14 + 0001; 65804 (269 + 0xffff) the largest delta.
    for delta, enc in ((12, "c0"), (13, "d000"), (14, "d001"), (268, "d0ff"),
                       (269, "e00000"), (270, "e00001"), (1000, "e002db")):
        d = h("40010001" + enc)
        m = coap.parse(d, coap.Msg())
        eq(opts_of(m), [(delta, b"")], "delta %d" % delta)
        eq(rt(CON, 1, 1, b"", [(delta, b"")], None)[1], d, "build delta %d" % delta)
    # Deltas add up: 1, 1+13 = 14, 14+269 = 283.
    m = coap.parse(h("4001000110d000e00000"), coap.Msg())
    eq([n for n, _ in m.opts], [1, 14, 283], "running sum")


def test_length_boundaries():
    for ln, enc in ((12, "0c"), (13, "0d00"), (14, "0d01"), (268, "0dff"),
                    (269, "0e0000"), (270, "0e0001"), (600, "0e014b")):
        v = bytes(range(256)) * 3
        v = v[:ln]
        d = h("40010001" + enc) + v
        m = coap.parse(d, coap.Msg())
        eq(len(m.opts), 1, "one option, length %d" % ln)
        eq(bytes(m.opts[0][1]), v, "value of length %d" % ln)
        eq(rt(CON, 1, 1, b"", [(0, v)], None)[1], d, "build length %d" % ln)


def test_extended_delta_and_length_together():
    # delta 300 (14: 0x001f) and length 20 (13: 0x07) in one option header.
    v = b"x" * 20
    d = h("40010001ed001f07") + v
    m = coap.parse(d, coap.Msg())
    eq(opts_of(m), [(300, v)], "opt")
    eq(rt(CON, 1, 1, b"", [(300, v)], None)[1], d, "build")


def test_round_trip_many_options():
    opts = [(1, b""), (4, b"\x01\x02"), (11, b"s"), (11, b"0123456789abcdef0123456789abcdef"),
            (11, b"255"), (12, b"\x2a"), (15, b"h=" + b"ab" * 32), (27, b"\x0e"),
            (60, b"\x04\x00"), (258, b"\x1a"), (2049, b""), (65000, b"z" * 300)]
    for pl in (None, b"\xff", b"\xff\x00payload", bytes(1024)):
        m, d = rt(NON, 3, 0xFFFF, b"12345678", opts, pl)
        eq((m.t, m.code, m.mid, m.tok), (NON, 3, 0xFFFF, b"12345678"), "header")
        eq(opts_of(m), opts, "opts")
        eq(bytes(m.pl), pl or b"", "payload")
    eq(m.opt_all(11), ["s", "0123456789abcdef0123456789abcdef", "255"], "opt_all")
    eq(m.opt_uint(60), 1024, "opt_uint")
    eq(m.opt_uint(6), None, "absent opt_uint")
    eq(m.opt_uint(6, 7), 7, "absent opt_uint default")
    check(m.opt(6) is None, "absent opt")
    eq(bytes(m.opt(11)), b"s", "opt gives the first")


def test_tokens_0_to_8():
    for n in range(9):
        tok = bytes(range(0xA0, 0xA0 + n))
        m, d = rt(CON, 1, 0x0102, tok, [(11, b"i")], None)
        eq(d[0] & 15, n, "tkl %d" % n)
        eq(m.tok, tok, "token %d" % n)
        eq(opts_of(m), [(11, b"i")], "opts after token %d" % n)
        eq(type(m.tok), bytes, "token is bytes")


def test_msg_reused():
    # The server refills one Msg per datagram: nothing may leak from the
    # previous message into the next.
    m = coap.Msg()
    coap.parse(h("42010001aabbb161c112ff7879"), m)
    eq(len(m.opts), 2, "first opts")
    coap.parse(h("50020002"), m)
    eq((m.t, m.code, m.mid, m.tok, m.opts, bytes(m.pl)), (NON, 2, 2, b"", [], b""), "reset")
    try:
        coap.parse(h("40010003ff"), m)
    except coap.FormatError:
        pass
    coap.parse(h("40010004b161"), m)
    eq(opts_of(m), [(11, b"a")], "after a rejected message")


def test_uint():
    for x, b in ((0, b""), (1, b"\x01"), (255, b"\xff"), (256, b"\x01\x00"),
                 (65535, b"\xff\xff"), (65536, b"\x01\x00\x00"), (1 << 24, b"\x01\x00\x00\x00")):
        eq(coap.uint_bytes(x), b, "uint_bytes(%d)" % x)
        eq(coap.uint_of(b), x, "uint_of(%d)" % x)
    eq(coap.uint_of(b"\x00\x00\x05"), 5, "leading zeros")
    eq(coap.uint_of(memoryview(b"\x01\x02")), 0x102, "memoryview")


def test_sort_opts_stable():
    # Repeated options (Uri-Path segments, Uri-Query) keep their order.
    o = [(15, b"q2"), (11, b"s"), (15, b"q1"), (11, b"x"), (1, b""), (11, b"y"), (60, b"")]
    r = coap.sort_opts(o)
    eq(r, [(1, b""), (11, b"s"), (11, b"x"), (11, b"y"), (15, b"q2"), (15, b"q1"), (60, b"")], "sorted")
    check(r is o, "in place")
    eq(coap.sort_opts([]), [], "empty")


mptest.run(globals())
