# ohnode.coap on MicroPython with the board heap, part 2: message format
# errors (RFC 7252 3, 4.2) are rejected with FormatError, Block option values
# (RFC 7959 2.2), and build() limits. Part 1 is mp_test_coap_codec.py (split
# so that each script compiles in 64 KiB).
# Run: .venv/bin/python -m pytest tests/firmware -k mp_test_coap_errors
import mptest
from mptest import check, eq
from ohnode import coap

h = mptest.unhex
from mpcoap import CON, NON, ACK, RST, bad, opts_of, rt  # noqa: F401


def test_formaterror_is_valueerror():
    check(issubclass(coap.FormatError, ValueError), "FormatError must be a ValueError")


def test_tkl_9_to_15_rejected():
    for tkl in range(9, 16):
        d = bytes([0x40 | tkl, 1, 0, 1]) + bytes(tkl)
        bad(d, "tkl %d" % tkl)
        bad(d + b"\xff\x01", "tkl %d with payload" % tkl)
        eq(coap.header(d), (CON, 1, 1), "header still readable, tkl %d" % tkl)


def test_version_not_1():
    for v in (0, 2, 3):
        d = bytes([v << 6, 1, 0, 1])
        check(coap.header(d) is None, "version %d header" % v)
        bad(d, "version %d" % v)
    eq(coap.header(h("50020304")), (NON, 2, 0x0304), "version 1 header")


def test_truncated_header_and_token():
    for d in (b"", b"\x40", b"\x40\x01", b"\x40\x01\x00"):
        check(coap.header(d) is None, "short header %r" % d)
        bad(d, "short")
    bad(h("42010001aa"), "token cut")
    bad(h("48010001") + bytes(7), "8-byte token cut")


def test_nibble_15_rejected():
    bad(h("40010001f0"), "delta nibble 15")
    bad(h("40010001f1aa"), "delta nibble 15 with length")
    bad(h("400100010f"), "length nibble 15")
    bad(h("40010001b0f0ff61"), "delta 15 after an option, before payload")
    bad(h("40010001bfff61"), "length 15 then marker")


def test_option_running_past_end():
    bad(h("40010001b56162"), "length 5, 2 bytes")
    bad(h("40010001bd"), "length ext missing")
    bad(h("40010001be00"), "length ext16 cut")
    bad(h("40010001d0"), "delta ext missing")
    bad(h("40010001e000"), "delta ext16 cut")
    bad(h("40010001bd0361"), "length 16 with 1 byte")
    bad(h("40010001b1"), "value missing")


def test_marker_without_payload():
    bad(h("40010001ff"), "marker, no payload")
    bad(h("40010001b161ff"), "option, marker, no payload")
    m = coap.parse(h("40010001b161ff00"), coap.Msg())
    eq(bytes(m.pl), b"\x00", "one-byte payload")


def test_empty_message_rules():
    bad(h("41000001aa"), "empty with token")
    bad(h("40000001b0"), "empty with option")
    bad(h("40000001ff00"), "empty with payload")
    for t in (CON, NON, ACK, RST):
        m = coap.parse(bytes([0x40 | t << 4, 0, 0xAB, 0xCD]), coap.Msg())
        eq((m.t, m.code, m.mid), (t, 0, 0xABCD), "empty type %d" % t)


def test_reserved_classes_rejected():
    for code in (0x20, 0x21, 0xC0, 0xE0, 0xFF):
        bad(bytes([0x40, code, 0, 1]), "code %02x" % code)
    for code in (0x01, 0x04, 0x45, 0x5F, 0x84, 0xA3):
        coap.parse(bytes([0x40, code, 0, 1]), coap.Msg())


def test_block_values():
    for num, more, szx, b in ((0, 0, 0, b""), (0, 1, 6, b"\x0e"), (1, 0, 2, b"\x12"),
                              (15, 1, 6, b"\xfe"), (16, 0, 0, b"\x01\x00"),
                              (4095, 1, 4, b"\xff\xfc"), (4096, 0, 6, b"\x01\x00\x06"),
                              ((1 << 20) - 1, 1, 6, b"\xff\xff\xfe")):
        eq(coap.block_val(num, more, szx), b, "block_val(%d,%d,%d)" % (num, more, szx))
        eq(coap.block_of(b), (num, more, szx), "block_of(%s)" % b.hex())
    eq(coap.block_of(b"\x00\x0e"), (0, 1, 6), "leading zero byte")
    eq(coap.block_of(memoryview(b"\x1e")), (1, 1, 6), "memoryview")
    for v in (b"\x07", b"\x0f", b"\x17", b"\x01\x0f", b"\x00\x00\x00\x00", b"\x01\x00\x00\x06"):
        try:
            coap.block_of(v)
        except coap.FormatError:
            continue
        check(False, "block_of accepted %s" % v.hex())


def test_build_overflow():
    for size in (3, 5, 20):
        try:
            coap.build(bytearray(size), CON, 1, 1, b"abcd", [(11, b"x" * 30)], None)
        except (ValueError, IndexError):
            continue
        check(False, "build into %d bytes did not fail" % size)


def test_build_does_not_write_past_length():
    buf = bytearray(b"\xee" * 40)
    n = coap.build(buf, CON, 1, 1, b"", [(11, b"ab")], b"xy")
    eq(n, 10, "length")
    eq(bytes(buf[n:]), b"\xee" * 30, "rest untouched")


mptest.run(globals())
