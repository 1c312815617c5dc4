# CoAP message codec (RFC 7252 section 3): parse a datagram into a reusable
# Msg, and build a message into a caller-owned buffer.
from micropython import const

_VERSION = const(1)
_MARKER = const(0xFF)
_MAX_OPTS = const(32)  # more options than this: reject (bounded memory)


class FormatError(ValueError):
    pass


class Msg:
    # One parsed message. The server keeps one and refills it per datagram.
    def __init__(self):
        self.t = 0
        self.code = 0
        self.mid = 0
        self.tok = b""
        self.opts = []  # [(number, memoryview)] in wire order
        self.pl = b""
        self.peer = None

    def opt(self, num):
        # First value of option num, or None.
        for n, v in self.opts:
            if n == num:
                return v
        return None

    def opt_uint(self, num, default=None):
        v = self.opt(num)
        if v is None:
            return default
        return uint_of(v)

    def opt_all(self, num):
        return [bytes(v).decode() for n, v in self.opts if n == num]


def uint_of(v):
    x = 0
    for b in v:
        x = (x << 8) | b
    return x


def uint_bytes(x):
    # Minimal big-endian encoding; 0 is the empty string (RFC 7252 3.2).
    n = 0
    y = x
    while y:
        n += 1
        y >>= 8
    return x.to_bytes(n, "big")


def _ext(buf, p, n, v):
    if v < 13:
        return v, p
    if v == 13:
        if p >= n:
            raise FormatError("option ext")
        return buf[p] + 13, p + 1
    if v == 14:
        if p + 1 >= n:
            raise FormatError("option ext")
        return ((buf[p] << 8) | buf[p + 1]) + 269, p + 2
    raise FormatError("option nibble 15")


def header(buf):
    # (type, code, mid) when the 4-byte header is sound, else None.
    if len(buf) < 4 or buf[0] >> 6 != _VERSION:
        return None
    return (buf[0] >> 4) & 3, buf[1], (buf[2] << 8) | buf[3]


def parse(buf, m):
    # Fill m from buf (bytes). Raises FormatError on a message format error.
    n = len(buf)
    h = header(buf)
    if h is None:
        raise FormatError("header")
    m.t, m.code, m.mid = h
    tkl = buf[0] & 15
    if tkl > 8:
        raise FormatError("token length")
    c = m.code >> 5
    if c == 1 or c == 6 or c == 7:
        raise FormatError("reserved class")
    p = 4 + tkl
    if p > n:
        raise FormatError("token")
    if m.code == 0 and (tkl or n > 4):
        raise FormatError("empty message")
    mv = memoryview(buf)
    m.tok = bytes(mv[4:p])
    opts = m.opts
    del opts[:]
    num = 0
    m.pl = b""
    while p < n:
        b = buf[p]
        p += 1
        if b == _MARKER:
            if p == n:
                raise FormatError("marker without payload")
            m.pl = mv[p:]
            break
        d, p = _ext(buf, p, n, b >> 4)
        ln, p = _ext(buf, p, n, b & 15)
        num += d
        if p + ln > n:
            raise FormatError("option length")
        if len(opts) == _MAX_OPTS:
            raise FormatError("too many options")
        opts.append((num, mv[p : p + ln]))
        p += ln
    return m


def sort_opts(opts):
    # Stable in-place sort by option number (MicroPython's list.sort is not
    # stable, and repeated options must keep their order).
    for i in range(1, len(opts)):
        x = opts[i]
        j = i - 1
        while j >= 0 and opts[j][0] > x[0]:
            opts[j + 1] = opts[j]
            j -= 1
        opts[j + 1] = x
    return opts


def _nib(v):
    if v < 13:
        return v, 0
    if v < 269:
        return 13, 1
    return 14, 2


def _put_ext(buf, p, v, k):
    if k == 1:
        buf[p] = v - 13
    elif k == 2:
        v -= 269
        buf[p] = v >> 8
        buf[p + 1] = v & 0xFF
    return p + k


def build(buf, t, code, mid, tok, opts, pl):
    # Write a message into bytearray buf; opts is [(number, bytes)] sorted by
    # number; pl is bytes-like or None. Returns the length. Raises ValueError
    # when it does not fit (slice assignment would silently grow buf).
    tkl = len(tok)
    room = len(buf) - 4 - tkl - (len(pl) + 1 if pl else 0)
    last = 0
    for num, v in opts:
        room -= 1 + _nib(num - last)[1] + _nib(len(v))[1] + len(v)
        last = num
    if room < 0 or tkl > 8:
        raise ValueError("message too large")
    buf[0] = (_VERSION << 6) | (t << 4) | tkl
    buf[1] = code
    buf[2] = mid >> 8
    buf[3] = mid & 0xFF
    p = 4
    buf[p : p + tkl] = tok
    p += tkl
    last = 0
    for num, v in opts:
        d = num - last
        last = num
        ln = len(v)
        dn, dk = _nib(d)
        lnn, lk = _nib(ln)
        buf[p] = (dn << 4) | lnn
        p = _put_ext(buf, p + 1, d, dk)
        p = _put_ext(buf, p, ln, lk)
        buf[p : p + ln] = v
        p += ln
    if pl:
        ln = len(pl)
        buf[p] = _MARKER
        buf[p + 1 : p + 1 + ln] = pl
        p += 1 + ln
    return p


def block_val(num, more, szx):
    # Block1/Block2 option value (RFC 7959 2.2).
    return uint_bytes((num << 4) | (8 if more else 0) | szx)


def block_of(v):
    # (num, more, szx) from an option value; szx 7 is reserved.
    x = uint_of(v)
    if len(v) > 3 or (x & 7) == 7:
        raise FormatError("block option")
    return x >> 4, (x >> 3) & 1, x & 7
