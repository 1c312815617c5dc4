"""Hand-built bad datagrams at a virtual board (raw UDP, no CoAP library).

Every case checks the exact reaction the wire contract
(protocols/RESOURCES.md, "Message layer" and "Error codes") and RFC 7252 /
RFC 7959 ask for, then that a good ``GET /i`` still answers.
"""

from __future__ import annotations

import base64
import hashlib
import random

import cbor2
import pytest

from rawcoap import (ACK, CON, DELETE, GET, NON, OPT_BLOCK1, OPT_CONTENT_FORMAT, OPT_SIZE1, PUT, RST, Raw,
                     block, code, code_str, decode, encode, path_opts, sha)

ST_HEAP_FREE, ST_SHARES, ST_ERRORS = 4, 8, 14
LS_COUNT, LS_SHARES, LS_MAX_SHARE = 2, 3, 4

QUIET = 0.5  # seconds of silence that count as "no answer"


def si_of(name: str) -> str:
    """A storage index private to one test, in its path form (base64url)."""
    return base64.urlsafe_b64encode(hashlib.sha256(name.encode()).digest()[:16]).rstrip(b"=").decode()


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def listing(raw: Raw) -> dict:
    """GET /s, block-wise, decoded."""
    out = bytearray()
    num = 0
    while True:
        m = raw.request(GET, "s", options=[(23, block(num, False, 6))])
        assert m.code == code(2, 5), str(m)
        out += m.payload
        b2 = m.opt_uint(23)
        if b2 is None or not b2 & 8:
            return cbor2.loads(bytes(out))
        num = (b2 >> 4) + 1


def assert_code(m, expected: str) -> None:
    assert code_str(m.code) == expected, "expected %s, got %s" % (expected, m)


def assert_silent(raw: Raw, data: bytes) -> None:
    raw.send(data)
    got = raw.recv(QUIET)
    assert got is None, "expected no answer to %s, got %s" % (data.hex(), got.hex())


def assert_rst(raw: Raw, data: bytes) -> None:
    """``data`` (a CON) is rejected with exactly the 4-byte RST of its MID."""
    mid = data[2] << 8 | data[3]
    raw.send(data)
    got = raw.recv(2.0)
    assert got is not None, "no RST for %s" % data.hex()
    assert got == bytes([0x70, 0x00, mid >> 8, mid & 0xFF]), "expected RST mid=%d, got %s" % (mid, got.hex())


def errors(raw: Raw) -> int:
    return raw.status()[ST_ERRORS]


# -- message layer


@pytest.mark.parametrize("n", [1, 2, 3])
def test_truncated_header_is_dropped(raw, n):
    before = errors(raw)
    full = encode(CON, GET, raw.mid(), b"", path_opts("i"))
    assert_silent(raw, full[:n])
    assert_silent(raw, b"\x40\x01\x12"[:n])
    after = raw.still_answers()
    assert after[ST_ERRORS] == before + 2, "dropped datagrams count in ST_ERRORS"


@pytest.mark.parametrize("version", [0, 2, 3])
def test_wrong_version_is_dropped(raw, version):
    before = errors(raw)
    good = bytearray(encode(CON, GET, raw.mid(), raw.token(), path_opts("i")))
    good[0] = (good[0] & 0x3F) | version << 6
    assert_silent(raw, bytes(good))
    # and an empty "ping" of a wrong version too
    assert_silent(raw, bytes([version << 6 | CON << 4, 0, 0x55, 0x66]))
    assert raw.still_answers()[ST_ERRORS] == before + 2


@pytest.mark.parametrize("tkl", range(9, 16))
def test_token_length_9_to_15_con_gets_rst(raw, tkl):
    before = errors(raw)
    mid = raw.mid()
    data = bytes([0x40 | CON << 4 | tkl, GET, mid >> 8, mid & 0xFF]) + bytes(range(tkl)) + b"\xb1i"
    assert_rst(raw, data)
    assert raw.still_answers()[ST_ERRORS] == before + 1


@pytest.mark.parametrize("t", [NON, ACK, RST])
def test_token_length_9_non_ack_rst_are_dropped(raw, t):
    mid = raw.mid()
    data = bytes([0x40 | t << 4 | 9, GET if t == NON else 0x45, mid >> 8, mid & 0xFF]) + bytes(9)
    assert_silent(raw, data)
    raw.still_answers()


@pytest.mark.parametrize("optbyte", [0xF0, 0xF1, 0xFE, 0x1F, 0xBF], ids=["d15l0", "d15l1", "d15l14", "d1l15", "d11l15"])
def test_reserved_nibble_15_con_gets_rst(raw, optbyte):
    """Option delta or length nibble 15 that is not the 0xFF payload marker."""
    before = errors(raw)
    mid = raw.mid()
    tok = raw.token()
    # GET /i, then the bad option header, then padding and a payload
    data = encode(CON, GET, mid, tok, path_opts("i"))[:-2] + b"\xb1i" + bytes([optbyte]) + b"\x00\x00\x00\xffxy"
    assert_rst(raw, data)
    assert raw.still_answers()[ST_ERRORS] == before + 1


@pytest.mark.parametrize("tail", [b"\xb5ab", b"\xbd", b"\xbe\x01", b"\xd0", b"\xe1\x00", b"\x0d", b"\xb1"],
                         ids=["len5-have2", "len13-no-ext", "len14-short-ext", "delta13-no-ext",
                              "delta14-short-ext", "len13-ext-missing", "len1-no-value"])
def test_option_running_past_datagram_con_gets_rst(raw, tail):
    before = errors(raw)
    data = encode(CON, GET, raw.mid(), raw.token(), path_opts("i")) + tail
    assert_rst(raw, data)
    assert raw.still_answers()[ST_ERRORS] == before + 1


def test_payload_marker_without_payload_con_gets_rst(raw):
    data = encode(CON, GET, raw.mid(), raw.token(), path_opts("i")) + b"\xff"
    assert_rst(raw, data)
    raw.still_answers()


def test_malformed_non_is_dropped(raw):
    data = encode(NON, GET, raw.mid(), raw.token(), path_opts("i")) + b"\xb5ab"
    assert_silent(raw, data)
    raw.still_answers()


@pytest.mark.parametrize("cls", [1, 6, 7])
def test_reserved_code_class_con_gets_rst(raw, cls):
    data = encode(CON, code(cls, 1), raw.mid(), raw.token(), path_opts("i"))
    assert_rst(raw, data)
    raw.still_answers()


def test_ping_gets_rst(raw):
    """CoAP ping (RFC 7252 4.3): an Empty CON is answered with a RST. (Whether
    that RST counts in ST_ERRORS is not asserted: a ping is not an error.)"""
    mid = raw.mid()
    assert_rst(raw, bytes([0x40, 0, mid >> 8, mid & 0xFF]))
    raw.still_answers()


@pytest.mark.parametrize("extra", [b"\x01", b"\xff\x01"], ids=["token", "payload"])
def test_empty_message_with_content_con_gets_rst(raw, extra):
    """An Empty (code 0.00) CON carrying a token or payload is a format error (RFC 7252 4.1)."""
    mid = raw.mid()
    if extra == b"\x01":
        data = bytes([0x41, 0, mid >> 8, mid & 0xFF]) + extra
    else:
        data = bytes([0x40, 0, mid >> 8, mid & 0xFF]) + extra
    assert_rst(raw, data)
    raw.still_answers()


def test_empty_non_is_dropped(raw):
    mid = raw.mid()
    assert_silent(raw, bytes([0x50, 0, mid >> 8, mid & 0xFF]))
    raw.still_answers()


@pytest.mark.parametrize("opt", [9, 13, 2049, 65001], ids=lambda o: "option%d" % o)
def test_unknown_critical_option_con_gets_4_02(raw, opt):
    before = errors(raw)
    mid = raw.mid()
    tok = raw.token()
    data = encode(CON, GET, mid, tok, path_opts("i") + [(opt, b"\x01")])
    rsp = raw.exchange(data)
    assert rsp is not None, "no answer to a CON GET with critical option %d" % opt
    m = decode(rsp)
    assert (m.t, code_str(m.code), m.mid, m.token) == (ACK, "4.02", mid, tok), str(m)
    assert m.payload and m.payload.decode("utf-8"), "4.02 needs a diagnostic payload"
    assert m.opt(OPT_CONTENT_FORMAT) is None, "diagnostic payloads have no Content-Format"
    assert raw.still_answers()[ST_ERRORS] == before + 1


def test_unknown_critical_option_non_is_rejected(raw):
    """RFC 7252 5.4.1: a NON with an unrecognised critical option MUST be
    rejected (4.3); RESOURCES.md: with a RST."""
    before = errors(raw)
    mid = raw.mid()
    assert_rst(raw, encode(NON, GET, mid, raw.token(), path_opts("i") + [(9, b"\x01")]))
    assert raw.still_answers()[ST_ERRORS] == before + 1


def test_repeated_block_option_con_gets_4_02(raw):
    mid, tok = raw.mid(), raw.token()
    rsp = raw.exchange(encode(CON, GET, mid, tok, path_opts("s") + [(23, block(0, False, 6)), (23, block(1, False, 6))]))
    m = decode(rsp)
    assert (m.t, code_str(m.code), m.mid, m.token) == (ACK, "4.02", mid, tok), str(m)
    raw.still_answers()


@pytest.mark.parametrize("opt", [23, 27])
def test_block_szx_7_gets_4_00(raw, opt):
    """SZX 7 is reserved (RFC 7959 2.2): 4.00."""
    si = si_of("szx7")
    if opt == 23:
        m = raw.request(GET, ".well-known/core", options=[(23, block(0, False, 7))])
    else:
        m = raw.request(PUT, "s/%s/0?h=%s" % (si, sha(bytes(16))), bytes(16), [(27, block(0, True, 7))])
    assert_code(m, "4.00")
    assert m.payload
    assert_code(raw.request(GET, "s/%s/0" % si), "4.04")
    raw.still_answers()


@pytest.mark.parametrize("size", [1280, 1300, 1500])
def test_datagram_over_receive_buffer_gets_4_13(raw, size):
    """RESOURCES.md: a datagram of 1280 bytes or more gets 4.13 with Block1
    giving the node's block size."""
    mid, tok = raw.mid(), raw.token()
    head = encode(CON, PUT, mid, tok, path_opts("s/%s/0?h=%s" % (si_of("big"), "0" * 64)), b"x")
    data = head + bytes(size - len(head))
    rsp = raw.exchange(data)
    assert rsp is not None
    m = decode(rsp)
    assert (m.t, code_str(m.code), m.mid, m.token) == (ACK, "4.13", mid, tok), str(m)
    b1 = m.opt_uint(OPT_BLOCK1)
    assert b1 is not None and b1 & 7 <= 6, "4.13 carries Block1 with the node's block size"
    raw.still_answers()


@pytest.mark.parametrize("opt", [2, 10, 2048, 65000], ids=lambda o: "option%d" % o)
def test_unknown_elective_option_is_ignored(raw, opt):
    m = raw.request(GET, "i", options=[(opt, b"\x01\x02")])
    assert_code(m, "2.05")
    assert cbor2.loads(m.payload)[0]


@pytest.mark.parametrize("opts", [
    [(11, b"s"), (11, b"\xff\xfe\x80")],
    [(11, b"\xff")],
    [(11, b".well-known"), (11, b"core"), (15, b"rt=\xff")],
    [(11, b"s"), (11, b"A" * 22), (11, b"0"), (15, b"h=\xc3")],
], ids=["share-path", "first-segment", "wkc-query", "put-query"])
def test_invalid_utf8_option_con_gets_an_answer(raw, opts):
    """A CON must be acknowledged or rejected (RFC 7252 4.2), whatever its
    Uri-Path / Uri-Query hold: here bytes that are not UTF-8. Expected: an
    ACK with a 4.xx (4.00 or 4.04) or a RST; never silence."""
    mid = raw.mid()
    tok = raw.token()
    method = PUT if opts[-1][1].startswith(b"h=") else GET
    data = encode(CON, method, mid, tok, opts, b"x" if method == PUT else b"")
    rsp = raw.exchange(data, timeout=1.0, tries=2)
    assert rsp is not None, "the node ignored a CON with a non-UTF-8 Uri-Path/Uri-Query"
    m = decode(rsp)
    assert m.mid == mid and (m.t == RST or (m.t == ACK and m.cls == 4)), str(m)
    raw.still_answers()


# -- block-wise PUT errors


def test_block1_gap_gets_4_08(raw):
    si = si_of("gap")
    data = blob(5000, 1)
    path = "s/%s/0" % si
    count = listing(raw)[LS_COUNT]
    m = raw.request(PUT, path + "?h=" + sha(data), data[:1024], [(OPT_BLOCK1, block(0, True, 6)), (OPT_CONTENT_FORMAT, 42)])
    assert_code(m, "2.31")
    m = raw.request(PUT, path, data[2048:3072], [(OPT_BLOCK1, block(2, True, 6))])
    assert_code(m, "4.08")
    assert m.payload, "4.08 needs a diagnostic"
    # the transfer stays; Block1 names the first missing block (RESOURCES.md)
    assert [v for n, v in m.options if n == OPT_BLOCK1] == [bytes([(1 << 4) | 8 | 6])]
    assert_code(raw.request(GET, path), "4.04")  # nothing stored yet
    assert listing(raw)[LS_COUNT] == count
    for num in (1, 2, 3):
        m = raw.request(PUT, path, data[num * 1024:(num + 1) * 1024], [(OPT_BLOCK1, block(num, True, 6))])
        assert_code(m, "2.31")
    m = raw.request(PUT, path, data[4096:], [(OPT_BLOCK1, block(4, False, 6))])
    assert_code(m, "2.01")
    assert raw.request(GET, path).payload == data[:1024]
    raw.still_answers()


def test_block1_nonzero_without_transfer_gets_4_08(raw):
    si = si_of("no-transfer")
    m = raw.request(PUT, "s/%s/3" % si, bytes(1024), [(OPT_BLOCK1, block(5, True, 6))])
    assert_code(m, "4.08")
    assert m.payload
    assert_code(raw.request(GET, "s/%s/3" % si), "4.04")
    raw.still_answers()


@pytest.mark.parametrize("size", [100, 1024, 3000, 10240])
def test_hash_mismatch_gets_4_00_and_keeps_nothing(raw, size):
    si = si_of("badhash%d" % size)
    data = blob(size, size)
    before = listing(raw)
    m = raw.put_share(si, 1, data, digest=sha(data + b"x"))
    assert_code(m, "4.00")
    assert m.payload, "4.00 needs a diagnostic"
    assert_code(raw.request(GET, "s/%s/1" % si), "4.04")
    assert_code(raw.request(GET, "s/%s" % si), "4.04")
    after = listing(raw)
    assert after[LS_COUNT] == before[LS_COUNT]
    assert after[LS_SHARES] == before[LS_SHARES]
    # the same share with the right hash is then accepted and reads back
    assert_code(raw.put_share(si, 1, data), "2.01")
    assert raw.get_share(si, 1) == (code(2, 5), data)
    assert_code(raw.request(DELETE, "s/%s/1" % si), "2.02")
    raw.still_answers()


def test_length_mismatch_with_size1_gets_4_00(raw):
    si = si_of("size1-mismatch")
    data = blob(3000, 7)
    m = raw.put_share(si, 0, data, size1=4000)
    assert_code(m, "4.00")
    assert m.payload
    assert_code(raw.request(GET, "s/%s/0" % si), "4.04")
    raw.still_answers()


@pytest.mark.parametrize("query", ["", "h=", "h=abc", "h=" + "g" * 64, "h=" + "0" * 63, "x=" + "0" * 64])
def test_missing_or_bad_hash_query_gets_4_00(raw, query):
    si = si_of("query")
    path = "s/%s/0" % si + ("?" + query if query else "")
    m = raw.request(PUT, path, b"hello", [(OPT_CONTENT_FORMAT, 42)])
    assert_code(m, "4.00")
    assert m.payload
    assert_code(raw.request(GET, "s/%s/0" % si), "4.04")
    raw.still_answers()


@pytest.mark.parametrize("path", ["s/abc/0", "s/" + "z" * 32 + "/0", "s/" + "!" * 22 + "/0", "s/" + "A" * 21 + "B/0",
                                  "s/" + "A" * 22 + "/256", "s/" + "A" * 22 + "/-1", "s/" + "A" * 22 + "/01",
                                  "s/" + "A" * 22 + "/x"])
def test_bad_storage_index_or_share_number_gets_4_00(raw, path):
    assert_code(raw.request(GET, path), "4.00")
    assert_code(raw.request(PUT, path + "?h=" + sha(b"x"), b"x"), "4.00")
    assert_code(raw.request(DELETE, path), "4.00")
    raw.still_answers()


def test_size1_over_max_share_gets_4_13_with_size1(raw):
    max_share = listing(raw)[LS_MAX_SHARE]
    si = si_of("too-large")
    data = bytes(1024)
    opts = [(OPT_BLOCK1, block(0, True, 6)), (OPT_SIZE1, max_share + 1), (OPT_CONTENT_FORMAT, 42)]
    m = raw.request(PUT, "s/%s/0?h=%s" % (si, "0" * 64), data, opts)
    assert_code(m, "4.13")
    assert m.opt_uint(OPT_SIZE1) == max_share, "4.13 must carry Size1 = the maximum share size"
    assert m.payload
    # the transfer was dropped: block 1 has no transfer to join
    assert_code(raw.request(PUT, "s/%s/0" % si, data, [(OPT_BLOCK1, block(1, True, 6))]), "4.08")
    assert_code(raw.request(GET, "s/%s/0" % si), "4.04")
    raw.still_answers()


def test_data_over_max_share_without_size1_gets_4_13(raw):
    """No Size1: the node notices when the data runs past the maximum."""
    max_share = listing(raw)[LS_MAX_SHARE]
    si = si_of("too-large-stream")
    data = blob(max_share + 1024, 13)
    m = raw.put_share(si, 0, data)
    assert_code(m, "4.13")
    assert m.opt_uint(OPT_SIZE1) == max_share
    assert_code(raw.request(GET, "s/%s/0" % si), "4.04")
    # and the full-size share itself is fine
    assert_code(raw.put_share(si, 0, data[:max_share]), "2.01")
    assert raw.get_share(si, 0) == (code(2, 5), data[:max_share])
    assert_code(raw.request(DELETE, "s/%s" % si), "2.02")
    raw.still_answers()


# -- de-duplication (RFC 7252 4.5)


def _twice(raw: Raw, data: bytes) -> tuple[bytes, bytes]:
    first = raw.exchange(data)
    assert first is not None
    raw.drain(0.1)
    second = raw.exchange(data)
    assert second is not None
    return first, second


def test_duplicate_con_put_is_answered_from_cache(raw):
    si = si_of("dup-put")
    data = b"dedup me"
    req = encode(CON, PUT, raw.mid(), raw.token(), path_opts("s/%s/0?h=%s" % (si, sha(data))), data)
    count = raw.status()[ST_SHARES]
    first, second = _twice(raw, req)
    assert first == second, "duplicate CON got different bytes: %s vs %s" % (first.hex(), second.hex())
    assert_code(decode(first), "2.01")  # re-executing would have said 2.04
    assert raw.status()[ST_SHARES] == count + 1
    # DELETE twice: one deletion, the same 2.02 both times
    req = encode(CON, DELETE, raw.mid(), raw.token(), path_opts("s/%s/0" % si))
    first, second = _twice(raw, req)
    assert first == second
    assert_code(decode(first), "2.02")
    assert raw.status()[ST_SHARES] == count
    raw.still_answers()


def test_duplicate_con_block1_is_answered_from_cache(raw):
    si = si_of("dup-block")
    data = blob(2500, 3)
    path = "s/%s/0" % si
    b0 = encode(CON, PUT, raw.mid(), raw.token(), path_opts(path + "?h=" + sha(data)) +
                [(OPT_BLOCK1, block(0, True, 6)), (OPT_CONTENT_FORMAT, 42)], data[:1024])
    first, second = _twice(raw, b0)
    assert first == second
    assert_code(decode(first), "2.31")
    b1 = encode(CON, PUT, raw.mid(), raw.token(), path_opts(path) + [(OPT_BLOCK1, block(1, True, 6))], data[1024:2048])
    first, second = _twice(raw, b1)
    assert first == second
    assert_code(decode(first), "2.31")
    last = encode(CON, PUT, raw.mid(), raw.token(), path_opts(path) + [(OPT_BLOCK1, block(2, False, 6))], data[2048:])
    first, second = _twice(raw, last)
    assert first == second
    assert_code(decode(first), "2.01")
    assert raw.get_share(si, 0) == (code(2, 5), data)
    assert_code(raw.request(DELETE, "s/%s" % si), "2.02")
    raw.still_answers()


@pytest.mark.parametrize("path", [".well-known/core", "nothing/here"])
def test_duplicate_con_get_same_bytes(raw, path):
    req = encode(CON, GET, raw.mid(), raw.token(), path_opts(path))
    first, second = _twice(raw, req)
    assert first == second
    raw.still_answers()


def test_duplicate_con_get_is_answered_alike(raw):
    """RESOURCES.md: a duplicate CON GET (safe and idempotent) may be
    re-executed (RFC 7252 4.5 allows it); it must be answered in the same
    exchange: same MID and token, same code, a status map again."""
    req = encode(CON, GET, raw.mid(), raw.token(), path_opts("i"))
    first, second = _twice(raw, req)
    a, b = decode(first), decode(second)
    assert (a.t, a.mid, a.token, a.code) == (b.t, b.mid, b.token, b.code)
    assert (a.t, a.code) == (ACK, code(2, 5))
    sa, sb = cbor2.loads(a.payload), cbor2.loads(b.payload)
    assert sb[9] == sa[9] + 1, "the retransmission was received and counted"
    raw.still_answers()


# -- a full filesystem


def test_full_filesystem_gets_5_03_and_loses_nothing(fleet):
    """A board with a small flash: fill it until 5.03, then push a share with
    no Size1 so that the node really runs out of space mid-transfer."""
    from openheap.sim.image import MIN_FS_SIZE

    fs_size = 2 * MIN_FS_SIZE  # 128 KiB: room for a handful of shares
    b = fleet.up(1, fs_size=fs_size)[0]
    si = si_of("full")
    stored = {}
    with Raw(b.host, b.port) as raw:
        st = raw.status()
        assert st[7] == fs_size
        # 1. fill (Size1 declared: the node refuses up front when it cannot fit)
        for n in range(100):
            data = blob(2500, 1000 + n)
            m = raw.put_share(si, n, data, size1=len(data))
            if m.code != code(2, 1):
                break
            stored[n] = data
        assert_code(m, "5.03")
        assert m.payload.decode("utf-8"), "5.03 needs a diagnostic"
        assert len(stored) >= 3, "a %d-byte filesystem should hold a few 2500-byte shares" % fs_size
        ls = listing(raw)
        assert ls[LS_COUNT] == len(stored)
        assert [e[0] for e in ls[LS_SHARES]] == [base64.urlsafe_b64decode(si + "==")]
        assert sorted(map(tuple, ls[LS_SHARES][0][1])) == sorted((k, 2500) for k in stored)
        # 2. make a little room, then stream a share far larger than it (no Size1)
        gone = min(stored)
        assert_code(raw.request(DELETE, "s/%s/%d" % (si, gone)), "2.02")
        del stored[gone]
        free = raw.status()[6]
        big = blob(64 * 1024, 77)
        m = raw.put_share(si, 200, big)
        assert_code(m, "5.03")
        assert m.payload.decode("utf-8"), "5.03 needs a diagnostic"
        assert raw.status()[6] >= free, "the partial upload was not freed"
        # 3. nothing partial is listed, everything stored reads back intact
        assert_code(raw.request(GET, "s/%s/200" % si), "4.04")
        ls = listing(raw)
        assert ls[LS_COUNT] == len(stored)
        assert sorted(map(tuple, ls[LS_SHARES][0][1])) == sorted((k, 2500) for k in stored)
        for n, data in stored.items():
            assert raw.get_share(si, n) == (code(2, 5), data), "share %d damaged" % n
        # 4. the space is usable again and the board never restarted
        assert_code(raw.put_share(si, gone, blob(2500, 5)), "2.01")
        raw.still_answers()
    info = fleet.info(b.name)
    assert info.pid == b.pid and info.restarts == 0


# -- many options in one datagram


@pytest.mark.parametrize("n", [300, 1200])
def test_option_flood_con_is_answered_and_node_survives(fleet, n):
    """One CON GET /i followed by ``n`` empty elective options (Max-Age
    repeated: delta 0, length 0, one byte each). A legal-looking datagram of a
    few hundred bytes; the node must answer it somehow (RST for "too many
    options", or a 4.xx/5.xx ACK) and keep serving with its heap intact."""
    b = fleet.up(1)[0]
    with Raw(b.host, b.port) as raw:
        heap = raw.status()[ST_HEAP_FREE]
        mid = raw.mid()
        data = bytes([0x40, GET, mid >> 8, mid & 0xFF]) + b"\xb1i" + b"\x30" + b"\x00" * (n - 1)
        rsp = raw.exchange(data, timeout=1.0, tries=2)
        try:
            heaps = [raw.status(tries=3)[ST_HEAP_FREE] for _ in range(3)]
        except AssertionError:
            heaps = None
        answer = decode(rsp) if rsp is not None else None
        assert heaps is not None, "after a CON with %d options (answered: %s) the node no longer answers GET /i" % (
            n, answer)
        assert answer is not None, "no answer to a CON with %d options" % n
        assert answer.mid == mid and answer.t in (RST, ACK), str(answer)
        assert min(heaps) >= heap - 1024, "heap free %d before, %s after" % (heap, heaps)
    info = fleet.info(b.name)
    assert info.pid == b.pid and info.restarts == 0
