# CoAP message codec (RFC 7252 section 3): parse a datagram into a reusable
# Msg, and build a message into a caller-owned buffer.
from array import array
from micropython import const

_VERSION = const(1)
_MARKER = const(0xFF)
_MAX_OPTS = const(32)  # more options than this: reject (bounded memory)


class FormatError(ValueError):
    pass


class Msg:
    # One parsed message. The server keeps one and refills it per datagram:
    # the options are positions in the datagram kept in arrays made once,
    # so parsing allocates nothing per option (the GC is the main cost of a
    # datagram on a small heap).
    tcp = None  # the connection (ohnode.tcpconn) it came on; None: UDP
    rest = 0  # payload bytes still on that connection (a BERT block)
    # (class attributes: a UDP message's instance never grows by them)
    def __init__(self):
        self.t = 0
        self.code = 0
        self.mid = 0
        self.tok = b""
        self.pl = b""
        self.peer = None
        self.buf = b""  # the datagram the options are in
        self.n = 0  # options
        self._num = array("I", bytes(4 * _MAX_OPTS))  # their numbers, offsets and lengths
        self._at = array("H", bytes(2 * _MAX_OPTS))
        self._ln = array("H", bytes(2 * _MAX_OPTS))

    def clear(self):
        # Let go of the datagram (its heap is the next one's).
        self.n = 0
        self.buf = self.pl = b""

    @property
    def opts(self):
        # [(number, memoryview)] in wire order; made on each use (for the
        # rare callers that want them all).
        mv = memoryview(self.buf)
        out = []
        for i in range(self.n):
            a = self._at[i]
            out.append((self._num[i], mv[a : a + self._ln[i]]))
        return out

    def num(self, i):
        # Number of the i-th option (wire order).
        return self._num[i]

    def opt(self, num):
        # First value of option num (a memoryview), or None.
        nums = self._num
        for i in range(self.n):
            if nums[i] == num:
                a = self._at[i]
                return memoryview(self.buf)[a : a + self._ln[i]]
        return None

    def opt_uint(self, num, default=None):
        nums = self._num
        for i in range(self.n):
            if nums[i] == num:
                b = self.buf
                a = self._at[i]
                x = 0
                for j in range(a, a + self._ln[i]):
                    x = (x << 8) | b[j]
                return x
        return default

    def opt_all(self, num):
        # Every value of option num as text (UnicodeError when not UTF-8).
        out = []
        nums = self._num
        for i in range(self.n):
            if nums[i] == num:
                a = self._at[i]
                out.append(str(self.buf[a : a + self._ln[i]], "utf-8"))
        return out


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
    # The value of an option nibble v (13 or 14) whose extension is at p.
    # (One int back, not a tuple: nothing allocated per option.)
    if v == 13 and p < n:
        return buf[p] + 13
    if v == 14 and p + 1 < n:
        return ((buf[p] << 8) | buf[p + 1]) + 269
    raise FormatError("option ext" if v < 15 else "option nibble 15")


def header(buf):
    # (type, code, mid) when the 4-byte header is sound, else None.
    if len(buf) < 4 or buf[0] >> 6 != _VERSION:
        return None
    return (buf[0] >> 4) & 3, buf[1], (buf[2] << 8) | buf[3]


def parse(buf, m, p=-1, n=-1, more=0):
    # Fill m from buf (bytes). Raises FormatError on a message format error.
    # With p >= 0 (the TCP framing, ohnode.tcpconn): only the options from
    # buf[p:n] and the payload after them (more: its bytes after n, still to
    # come); the caller set the code and token. (One function, one frame:
    # a second call per datagram would be a heap frame per datagram.)
    if p < 0:
        n = len(buf)
        if n < 4 or buf[0] >> 6 != _VERSION:
            raise FormatError("header")
        b = buf[0]
        m.t = (b >> 4) & 3
        c = m.code = buf[1]
        m.mid = (buf[2] << 8) | buf[3]
        tkl = b & 15
        if tkl > 8:
            raise FormatError("token length")
        c >>= 5
        if c == 1 or c == 6 or c == 7:
            raise FormatError("reserved class")
        p = 4 + tkl
        if p > n:
            raise FormatError("token")
        if m.code == 0 and (tkl or n > 4):
            raise FormatError("empty message")
        m.tok = bytes(buf[4:p]) if tkl else b""
    m.n = 0
    m.buf = buf
    m.pl = b""
    nums = m._num
    at = m._at
    lns = m._ln
    k = 0
    num = 0
    while p < n:
        b = buf[p]
        p += 1
        if b == _MARKER:
            if p == n and not more:
                raise FormatError("marker without payload")
            m.pl = memoryview(buf)[p:n]
            break
        # the delta and length nibbles; 13 and 14 take 1 and 2 more bytes
        d = b >> 4
        if d > 12:
            v = _ext(buf, p, n, d)
            p += d - 12
            d = v
        ln = b & 15
        if ln > 12:
            v = _ext(buf, p, n, ln)
            p += ln - 12
            ln = v
        num += d
        if p + ln > n:
            raise FormatError("option length")
        if k == _MAX_OPTS:
            raise FormatError("too many options")
        nums[k] = num
        at[k] = p
        lns[k] = ln
        k += 1
        m.n = k
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


def _xl(v):
    # Bytes of extension after an option nibble for v (0, 1 or 2).
    return 0 if v < 13 else (1 if v < 269 else 2)


def _nib(buf, p, v):
    # Write the extension of v at p (its nibble is _nb(v)); the new position.
    if v < 13:
        return p
    if v < 269:
        buf[p] = v - 13
        return p + 1
    v -= 269
    buf[p] = v >> 8
    buf[p + 1] = v & 0xFF
    return p + 2


def _nb(v):
    return v if v < 13 else (13 if v < 269 else 14)


def build(buf, t, code, mid, tok, opts, pl):
    # Write a message into bytearray buf; opts is [(number, bytes)] sorted by
    # number; pl is bytes-like or None. Returns the length. Raises ValueError
    # when it does not fit (slice assignment would silently grow buf).
    tkl = len(tok)
    room = len(buf) - 4 - tkl - (len(pl) + 1 if pl else 0)
    last = 0
    for num, v in opts:
        room -= 1 + _xl(num - last) + _xl(len(v)) + len(v)
        last = num
    if room < 0 or tkl > 8:
        raise ValueError("message too large")
    buf[0] = (_VERSION << 6) | (t << 4) | tkl
    buf[1] = code
    buf[2] = mid >> 8
    buf[3] = mid & 0xFF
    p = 4
    if tkl:
        buf[p : p + tkl] = tok
    p += tkl
    last = 0
    for num, v in opts:
        d = num - last
        last = num
        ln = len(v)
        buf[p] = (_nb(d) << 4) | _nb(ln)
        p = _nib(buf, _nib(buf, p + 1, d), ln)
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


def block_of(v, bert=False):
    # (num, more, szx) from an option value; szx 7 is reserved, except over
    # TCP (bert): BERT, NUM counting 1024-byte blocks (RFC 8323 6).
    x = uint_of(v)
    if len(v) > 3 or ((x & 7) == 7 and not bert):
        raise FormatError("block option")
    return x >> 4, (x >> 3) & 1, x & 7
