# CBOR (RFC 8949) codec in the Python subset shared by MicroPython and CPython.
# Runs unchanged on the boards (64 KiB heap) and on the host; never copied.
#
#   dumps(obj) -> bytes          encode_into(out, obj): append to a bytearray
#   loads(buf) -> obj            exactly one item, no trailing bytes
#   decode_from(buf, pos) -> (obj, newpos)
# buf: bytes, bytearray or memoryview.  Encodes None, bool, int (-2**64 ..
# 2**64-1), float, bytes/bytearray/memoryview, str, list/tuple (array) and
# dict (map); decodes to None, bool, int, float, bytes, str, list and dict.
#
# Encoding is deterministic: shortest heads, definite lengths, floats in the
# shortest of f16/f32/f64 that holds the value exactly (any NaN as f97e00),
# map keys sorted by encoding, shorter first, then bytewise (RFC 8949 4.2.3
# length-first order, as RFC 7049 canonical).  That is byte for byte
# cbor2.dumps(obj, canonical=True), and equals RFC 8949 4.2.1 core
# deterministic whenever a map's keys all encode to the same length, as in
# every openheap payload (uint keys < 24).  Half floats are done by hand (no
# struct 'e').  On single-precision ports every float fits f32, and decoded
# f64 values are rounded to the port's float.
#
# Errors: dumps raises TypeError for an unsupported type, ValueError for an
# int out of range or nesting deeper than _MAXDEPTH.  The decoder raises only
# ValueError: truncated or trailing data, reserved additional info (28-30),
# a length beyond the end of the buffer (so a hostile datagram cannot make
# us allocate more than about its own size), nesting deeper than _MAXDEPTH,
# bad UTF-8, duplicate or unhashable map keys, stray breaks, simple values
# other than false/true/null, and every tag: no openheap schema uses tags,
# and skipping one (say a bignum) would silently change the value's type.
# Indefinite-length strings, arrays and maps and f16/f32/f64 are accepted.
import struct
from math import frexp, ldexp, copysign

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_MAXDEPTH = const(16)  # containers nested deeper than this are refused
_BREAK = const(0xFF)


# -- encoder

def _head(out, mt, n):
    if n < 24:
        out.append(mt << 5 | n)
        return
    ai = 24
    k = 1
    while n >> (8 * k):
        ai += 1
        k *= 2
    if ai > 27:
        raise ValueError("int > 64 bits")
    out.append(mt << 5 | ai)
    out.extend(n.to_bytes(k, "big"))


# True when m * 2**e (from frexp) fits a float with `bits` significand bits,
# largest exponent emax and smallest (subnormal) exponent emin.
def _fits(m, e, emax, emin, bits):
    return emin <= e <= emax and m * (1 << min(bits, e - emin + 1)) % 1 == 0


def _float(out, f):
    if f != f:
        out.extend(b"\xf9\x7e\x00")
        return
    if f - f != 0:  # infinity
        h = 0x7C00
    elif f == 0:
        h = 0
    else:
        m, e = frexp(abs(f))
        if _fits(m, e, 16, -23, 11):
            if e > -14:
                h = (e + 14) << 10 | (int(m * 2048) - 1024)
            else:
                h = int(ldexp(m, e + 24))
        elif _fits(m, e, 128, -148, 24):
            out.append(0xFA)
            out.extend(struct.pack(">f", f))
            return
        else:
            out.append(0xFB)
            out.extend(struct.pack(">d", f))
            return
    if copysign(1, f) < 0:
        h |= 0x8000
    out.append(0xF9)
    out.extend(h.to_bytes(2, "big"))


def encode_into(out, o, depth=0):
    if depth > _MAXDEPTH:
        raise ValueError("too deep")
    if o is None:
        out.append(0xF6)
    elif o is True:
        out.append(0xF5)
    elif o is False:
        out.append(0xF4)
    elif isinstance(o, int):
        if o < 0:
            _head(out, 1, -1 - o)
        else:
            _head(out, 0, o)
    elif isinstance(o, float):
        _float(out, o)
    elif isinstance(o, (bytes, bytearray, memoryview)):
        _head(out, 2, len(o))
        out.extend(o)
    elif isinstance(o, str):
        o = o.encode()
        _head(out, 3, len(o))
        out.extend(o)
    elif isinstance(o, (list, tuple)):
        _head(out, 4, len(o))
        for x in o:
            encode_into(out, x, depth + 1)
    elif isinstance(o, dict):
        items = []
        for k in o:
            kb = bytearray()
            encode_into(kb, k, depth + 1)
            items.append((len(kb), kb, o[k]))
        items.sort()  # (length, bytes) are unique, values never compared
        _head(out, 5, len(items))
        for _, kb, v in items:
            out.extend(kb)
            encode_into(out, v, depth + 1)
    else:
        raise TypeError("unsupported type")


def dumps(o):
    out = bytearray()
    encode_into(out, o)
    return bytes(out)


# -- decoder

# True when buf[pos] is a break; raises when the buffer ends where an item or
# a break must follow.
def _brk(buf, pos):
    if pos >= len(buf):
        raise ValueError("truncated")
    return buf[pos] == _BREAK


def decode_from(buf, pos, depth=0):
    n = len(buf)
    if depth > _MAXDEPTH:
        raise ValueError("too deep")
    if pos >= n:
        raise ValueError("truncated")
    ib = buf[pos]
    pos += 1
    mt = ib >> 5
    ai = ib & 31
    if ai < 24:
        v = ai
    elif ai < 28:
        k = 1 << (ai - 24)
        if pos + k > n:
            raise ValueError("truncated")
        v = int.from_bytes(bytes(buf[pos:pos + k]), "big")
        pos += k
    elif ai == 31 and 2 <= mt <= 5:
        v = None  # indefinite length
    else:
        raise ValueError("malformed")
    if mt == 0:
        return v, pos
    if mt == 1:
        return -1 - v, pos
    if mt <= 3:
        if v is None:  # chunks: definite strings of the same major type
            parts = []
            while not _brk(buf, pos):
                if buf[pos] >> 5 != mt or buf[pos] & 31 == 31:
                    raise ValueError("malformed")
                x, pos = decode_from(buf, pos, depth + 1)
                parts.append(x)
            return ("" if mt == 3 else b"").join(parts), pos + 1
        if v > n - pos:
            raise ValueError("truncated")
        x = bytes(buf[pos:pos + v])
        if mt == 3:
            try:
                x = str(x, "utf-8")
            except ValueError:  # UnicodeError on MicroPython
                raise ValueError("bad utf-8")
        return x, pos + v
    if mt <= 5:  # array or map; every item takes at least one byte
        out = [] if mt == 4 else {}
        if v is not None and v * (mt - 3) > n - pos:
            raise ValueError("truncated")
        i = 0
        while (not _brk(buf, pos)) if v is None else i < v:
            # One-byte items (uints below 24: every openheap map key) are
            # read here: a call per item is the decoder's main cost.
            if pos < n and buf[pos] < 24 and depth < _MAXDEPTH:
                x = buf[pos]
                pos += 1
            else:
                x, pos = decode_from(buf, pos, depth + 1)
            if mt == 4:
                out.append(x)
            else:
                k = x
                if pos < n and buf[pos] < 24 and depth < _MAXDEPTH:
                    x = buf[pos]
                    pos += 1
                else:
                    x, pos = decode_from(buf, pos, depth + 1)
                try:
                    dup = k in out
                    out[k] = x
                except TypeError:
                    dup = True
                if dup:
                    raise ValueError("bad key")
            i += 1
        return out, pos + (v is None)
    if mt == 6:
        raise ValueError("tag")
    # major type 7
    if ai == 25:
        e = v >> 10 & 31
        m = v & 1023
        if e == 31:
            f = float("nan") if m else float("inf")
        elif e:
            f = ldexp(m + 1024, e - 25)
        else:
            f = ldexp(m, -24)
        return (-f if v & 0x8000 else f), pos
    if ai == 26:
        return struct.unpack(">f", bytes(buf[pos - 4:pos]))[0], pos
    if ai == 27:
        return struct.unpack(">d", bytes(buf[pos - 8:pos]))[0], pos
    if 20 <= ai <= 22:
        return (False, True, None)[ai - 20], pos
    raise ValueError("malformed")


def loads(buf):
    o, pos = decode_from(buf, 0)
    if pos != len(buf):
        raise ValueError("trailing data")
    return o
