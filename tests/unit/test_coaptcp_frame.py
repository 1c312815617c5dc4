"""The CoAP-over-TCP frame (RFC 8323 3.2) that openheap.coaptcp writes: the
length nibble and its 1-, 2- and 4-byte extensions at their boundaries,
token, options and payload marker, read back by an independent parser and
by openheap.bulk.Response.of."""

from __future__ import annotations

import pytest

from ohproto import const as P
from openheap import bulk
from openheap.coaptcp import frame


def parse(data: bytes):
    """(code, token, options+payload) of one frame, straight from RFC 8323 3.2."""
    b0 = data[0]
    ln, tkl = b0 >> 4, b0 & 15
    i = 1
    if ln == 13:
        ln, i = data[1] + 13, 2
    elif ln == 14:
        ln, i = int.from_bytes(data[1:3], "big") + 269, 3
    elif ln == 15:
        ln, i = int.from_bytes(data[1:5], "big") + 65805, 5
    code = data[i]
    token = data[i + 1:i + 1 + tkl]
    body = data[i + 1 + tkl:]
    assert len(body) == ln, "length field %d, body %d" % (ln, len(body))
    return code, token, body


@pytest.mark.parametrize("n", [0, 1, 11, 12, 13, 267, 268, 269, 270, 65803, 65804, 65805, 65806, 200_000])
def test_length_boundaries(n):
    payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
    head = frame(P.CONTENT, b"\x01\x02", [], payload)
    code, token, body = parse(head + payload)
    assert code == P.CONTENT and token == b"\x01\x02"
    assert body == ((b"\xff" + payload) if n else b"")
    # the header is as short as the length allows
    ext = 0 if n + (1 if n else 0) < 13 else 1 if n + 1 < 269 else 2 if n + 1 < 65805 else 4
    assert len(head) == 1 + ext + 1 + 2 + (1 if n else 0)


def test_options_token_and_payload_read_back():
    opts = [(P.OPT_URI_PATH, b"s"), (P.OPT_URI_PATH, b"A" * 22), (P.OPT_URI_PATH, b"3"),
            (P.OPT_URI_QUERY, b"h=" + b"a" * 64), (P.OPT_BLOCK1, bulk.block_opt(96, True, P.BERT_SZX)),
            (P.OPT_SIZE1, bulk.uint_opt(3_000_000))]
    payload = b"x" * 32768
    data = frame(P.PUT, b"\xaa\xbb\xcc\xdd", opts, payload) + payload
    code, token, body = parse(data)
    r = bulk.Response.of(code, token, body)
    assert r.code == P.PUT and r.token == b"\xaa\xbb\xcc\xdd"
    assert r.opts[P.OPT_URI_PATH] == [b"s", b"A" * 22, b"3"]
    assert r.block(P.OPT_BLOCK1) == (96, True, P.BERT_SZX)
    assert r.uint(P.OPT_SIZE1) == 3_000_000
    assert r.payload == payload


def test_a_csm_with_an_empty_option():
    data = frame(P.CSM, b"", [(P.OPT_MAX_MESSAGE_SIZE, bulk.uint_opt(1 << 20)), (P.OPT_BLOCK_WISE_TRANSFER, b"")])
    # RFC 8323 5.3: 7.01, no token, Max-Message-Size (2) then Block-Wise-Transfer (4)
    assert data == bytes((0x50, 0xE1, 0x23, 0x10, 0x00, 0x00, 0x20))
    r = bulk.Response.of(*parse(data))
    assert r.uint(P.OPT_MAX_MESSAGE_SIZE) == 1 << 20 and r.opts[P.OPT_BLOCK_WISE_TRANSFER] == [b""]
