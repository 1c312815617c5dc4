"""A tiny, independent CoAP (RFC 7252) encoder/decoder over a raw UDP socket.

Written from the RFC for the fault tests, deliberately not sharing code with
the firmware (``firmware/ohnode/coap.py``) or aiocoap: the tests hand-build
datagrams, good and bad, and look at the exact bytes that come back.
"""

from __future__ import annotations

import hashlib
import random
import select
import socket
import time
from dataclasses import dataclass, field

CON, NON, ACK, RST = 0, 1, 2, 3
TYPE_NAMES = {CON: "CON", NON: "NON", ACK: "ACK", RST: "RST"}

GET, POST, PUT, DELETE = 1, 2, 3, 4

OPT_OBSERVE = 6
OPT_URI_PATH = 11
OPT_CONTENT_FORMAT = 12
OPT_URI_QUERY = 15
OPT_BLOCK2 = 23
OPT_BLOCK1 = 27
OPT_SIZE2 = 28
OPT_SIZE1 = 60


def code(cls: int, detail: int) -> int:
    """``code(4, 4)`` is 4.04 as a byte."""
    return cls << 5 | detail


def code_str(c: int) -> str:
    return "%d.%02d" % (c >> 5, c & 31)


def uint(v: int) -> bytes:
    """Shortest big-endian encoding of an option uint (0 is empty)."""
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def block(num: int, more: bool, szx: int) -> bytes:
    """Block1/Block2 option value (RFC 7959 2.2)."""
    return uint(num << 4 | (8 if more else 0) | szx)


def _nibble(v: int) -> tuple[int, bytes]:
    if v < 13:
        return v, b""
    if v < 269:
        return 13, bytes([v - 13])
    return 14, (v - 269).to_bytes(2, "big")


def encode(t: int, c: int, mid: int, token: bytes = b"", options=(), payload: bytes = b"") -> bytes:
    """A well-formed CoAP message. ``options``: [(number, bytes|str|int)], any order."""
    out = bytearray([0x40 | t << 4 | len(token), c, mid >> 8 & 0xFF, mid & 0xFF])
    out += token
    last = 0
    for num, val in sorted(options, key=lambda o: o[0]):
        if isinstance(val, int):
            val = uint(val)
        elif isinstance(val, str):
            val = val.encode()
        dn, dx = _nibble(num - last)
        ln, lx = _nibble(len(val))
        out.append(dn << 4 | ln)
        out += dx + lx + val
        last = num
    if payload:
        out.append(0xFF)
        out += payload
    return bytes(out)


def path_opts(path: str) -> list[tuple[int, bytes]]:
    """Uri-Path (and Uri-Query after '?') options of a path like ``s/<si>/0?h=..``."""
    path, _, query = path.partition("?")
    opts = [(OPT_URI_PATH, seg.encode()) for seg in path.strip("/").split("/") if seg]
    if query:
        opts += [(OPT_URI_QUERY, q.encode()) for q in query.split("&")]
    return opts


class FormatError(ValueError):
    pass


@dataclass
class Msg:
    t: int
    code: int
    mid: int
    token: bytes
    options: list = field(default_factory=list)  # [(number, bytes)]
    payload: bytes = b""
    raw: bytes = b""

    def opt(self, num: int):
        for n, v in self.options:
            if n == num:
                return v
        return None

    def opt_uint(self, num: int):
        v = self.opt(num)
        return None if v is None else int.from_bytes(v, "big")

    def opts(self, num: int) -> list[bytes]:
        return [v for n, v in self.options if n == num]

    @property
    def cls(self) -> int:
        return self.code >> 5

    def __str__(self) -> str:
        return "%s %s mid=%d tok=%s opts=%s pl=%r" % (
            TYPE_NAMES[self.t], code_str(self.code), self.mid, self.token.hex(),
            self.options, self.payload[:40])


def decode(data: bytes) -> Msg:
    """Parse a datagram; FormatError for anything RFC 7252 3 calls malformed."""
    if len(data) < 4:
        raise FormatError("short")
    if data[0] >> 6 != 1:
        raise FormatError("version")
    tkl = data[0] & 15
    if tkl > 8:
        raise FormatError("token length")
    m = Msg(t=data[0] >> 4 & 3, code=data[1], mid=data[2] << 8 | data[3], token=bytes(data[4:4 + tkl]), raw=bytes(data))
    if 4 + tkl > len(data):
        raise FormatError("token")
    if m.code == 0 and len(data) > 4:
        raise FormatError("empty message with content")
    p, num, n = 4 + tkl, 0, len(data)
    while p < n:
        b = data[p]
        p += 1
        if b == 0xFF:
            if p == n:
                raise FormatError("marker without payload")
            m.payload = bytes(data[p:])
            break
        vals = []
        for nib in (b >> 4, b & 15):
            if nib == 13:
                if p + 1 > n:
                    raise FormatError("ext")
                vals.append(data[p] + 13)
                p += 1
            elif nib == 14:
                if p + 2 > n:
                    raise FormatError("ext")
                vals.append((data[p] << 8 | data[p + 1]) + 269)
                p += 2
            elif nib == 15:
                raise FormatError("nibble 15")
            else:
                vals.append(nib)
        num += vals[0]
        if p + vals[1] > n:
            raise FormatError("option length")
        m.options.append((num, bytes(data[p:p + vals[1]])))
        p += vals[1]
    return m


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Raw:
    """One UDP socket talking to one node; message IDs from a counter."""

    def __init__(self, host: str, port: int, first_mid: int | None = None):
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("127.0.0.1", 0))
        # A random start by default: the kernel may give the next socket
        # the port of one just closed, and the node then rightly answers a
        # message ID it saw from that endpoint with its cached answer
        # (RFC 7252 4.5), e.g. the last test's "4.13 datagram too large".
        self._mid = random.randrange(0x10000) if first_mid is None else first_mid
        self._tok = random.randrange(1 << 24)
        # called with every datagram that is not the answer being waited for
        # (notifications, separate responses, late answers); default: dropped
        self.on_other = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def mid(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def token(self) -> bytes:
        self._tok += 1
        return self._tok.to_bytes(4, "big")

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.addr)

    def recv(self, timeout: float) -> bytes | None:
        """One datagram from the node within ``timeout`` s, else None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return None
            data, peer = self.sock.recvfrom(65536)
            if peer == self.addr:
                return data

    def drain(self, quiet: float = 0.05) -> list[bytes]:
        """Everything that arrives until ``quiet`` s of silence (also passed to ``on_other``)."""
        out = []
        while True:
            d = self.recv(quiet)
            if d is None:
                return out
            if self.on_other is not None:
                self.on_other(d)
            out.append(d)

    def exchange(self, data: bytes, timeout: float = 2.0, tries: int = 3) -> bytes | None:
        """Send ``data`` (retransmitted, same bytes) until a datagram with its MID
        comes back; returns that datagram's bytes or None."""
        mid = data[2] << 8 | data[3]
        for _ in range(tries):
            self.send(data)
            deadline = time.monotonic() + timeout
            while True:
                d = self.recv(max(0.0, deadline - time.monotonic()))
                if d is None:
                    break
                if len(d) >= 4 and (d[2] << 8 | d[3]) == mid and d[0] >> 4 & 3 in (ACK, RST):
                    return d
                if self.on_other is not None:
                    self.on_other(d)
        return None

    def request(self, c: int, path: str, payload: bytes = b"", options=(),
                timeout: float = 2.0, tries: int = 3) -> Msg:
        """A CON request; returns the decoded piggybacked response (AssertionError on silence)."""
        tok = self.token()
        data = encode(CON, c, self.mid(), tok, path_opts(path) + list(options), payload)
        rsp = self.exchange(data, timeout, tries)
        assert rsp is not None, "no answer to %s %s" % (code_str(c), path)
        m = decode(rsp)
        assert m.t == ACK and m.token == tok, "not a piggybacked response: %s" % m
        return m

    def status(self, tries: int = 4) -> dict:
        """GET /i -> the status map; fails unless a 2.05 arrives (retransmitted up to ``tries`` times)."""
        import cbor2

        m = self.request(GET, "i", tries=tries)
        assert m.code == code(2, 5), "bad answer to GET /i: %s" % m
        return cbor2.loads(m.payload)

    still_answers = status

    def put_share(self, si: str, shnum: int, data: bytes, *, digest: str | None = None,
                  size1: int | None = None, szx: int = 6) -> Msg:
        """Block-wise PUT, stopping at the first non-2.31 answer; returns the last response."""
        bs = 1 << (szx + 4)
        path = "s/%s/%d?h=%s" % (si, shnum, digest or sha(data))
        off = 0
        while True:
            chunk = data[off:off + bs]
            more = off + len(chunk) < len(data)
            opts = [(OPT_BLOCK1, block(off // bs, more, szx))]
            if off == 0:
                opts.append((OPT_CONTENT_FORMAT, 42))
                if size1 is not None:
                    opts.append((OPT_SIZE1, size1))
            p = path if off == 0 else path.partition("?")[0]
            m = self.request(PUT, p, chunk, opts)
            off += len(chunk)
            if not more or m.code != code(2, 31):
                return m

    def get_share(self, si: str, shnum: int, szx: int = 6) -> tuple[int, bytes]:
        """Block-wise GET: (code of the first failing or last response, bytes)."""
        out = bytearray()
        num = 0
        while True:
            m = self.request(GET, "s/%s/%d" % (si, shnum), options=[(OPT_BLOCK2, block(num, False, szx))])
            if m.code != code(2, 5):
                return m.code, bytes(out)
            out += m.payload
            b2 = m.opt_uint(OPT_BLOCK2)
            if b2 is None or not b2 & 8:
                return m.code, bytes(out)
            szx = b2 & 7
            num = (b2 >> 4) + 1
