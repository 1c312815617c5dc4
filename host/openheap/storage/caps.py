"""Capabilities: the strings that give access to a file.

Three kinds, each ending with a 6-hex-digit checksum of everything before
its last colon, so that a mistyped or truncated string is caught::

    oh:r1:<key>:<ueb_hash>:<k>:<n>:<size>:<check>      read-cap (read, verify)
    oh:v1:<storage_index>:<ueb_hash>:<k>:<n>:<size>:<check>  verify-cap
    oh:l1:<data>:<check>                                literal (size <= 55)

Binary fields are lowercase RFC 4648 base32 without padding; numbers are
decimal without leading zeros. Parsing tolerates surrounding whitespace and
upper case; anything else wrong raises :class:`BadCapability` with one
sentence saying what.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from openheap.storage.crypto import KEY_LEN, SI_LEN, storage_index
from openheap.storage.errors import BadCapability
from openheap.storage.hashing import HASH_LEN, TAG_CAP_CHECK, tagged_hash

__all__ = ["LITERAL_MAX", "ReadCap", "VerifyCap", "LiteralCap", "parse_cap", "b32", "cap_check"]

LITERAL_MAX = 55
MAX_K_N = 256
_KINDS = {"r1": ("a read capability", 8), "v1": ("a verify capability", 8),
          "l1": ("a literal capability", 4)}
_COPY = " (was it copied completely?)"


def b32(data: bytes) -> str:
    """Lowercase base32 without padding."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str, what: str, length: int | None) -> bytes:
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise BadCapability("this capability is damaged: its %s is not valid base32" % what) from None
    if length is not None and len(data) != length:
        raise BadCapability("this capability is damaged: its %s should be %d bytes, not %d"
                            % (what, length, len(data)))
    return data


def cap_check(body: str) -> str:
    """The 6-hex-digit checksum of a capability's text before its last colon."""
    return tagged_hash(TAG_CAP_CHECK, body.encode("utf-8"))[:3].hex()


def _with_check(body: str) -> str:
    return "%s:%s" % (body, cap_check(body))


def _check_params(k: int, n: int, size: int) -> None:
    if not (1 <= k <= n <= MAX_K_N):
        raise BadCapability("this capability has impossible parameters k=%d, n=%d "
                            "(1 <= k <= n <= %d is required)" % (k, n, MAX_K_N))
    if not 0 <= size < 1 << 64:
        raise BadCapability("this capability has an impossible file size %d" % size)


@dataclass(frozen=True, repr=False)
class ReadCap:
    """Can read (decrypt) and verify a file: its key, its UEB hash, k, n and size."""

    key: bytes
    ueb_hash: bytes
    k: int
    n: int
    size: int

    kind = "r1"

    def __post_init__(self):
        if len(self.key) != KEY_LEN or len(self.ueb_hash) != HASH_LEN:
            raise BadCapability("a read capability needs a %d-byte key and a %d-byte UEB hash"
                                % (KEY_LEN, HASH_LEN))
        _check_params(self.k, self.n, self.size)

    @property
    def storage_index(self) -> bytes:
        """Where the shares live (16 bytes)."""
        return storage_index(self.key)

    def verify_cap(self) -> "VerifyCap":
        """The verify-cap of the same file: can check and repair, cannot read."""
        return VerifyCap(self.storage_index, self.ueb_hash, self.k, self.n, self.size)

    def to_string(self) -> str:
        """The capability as a string a person can copy."""
        return _with_check("oh:r1:%s:%s:%d:%d:%d" % (b32(self.key), b32(self.ueb_hash),
                                                     self.k, self.n, self.size))

    __str__ = to_string

    def __repr__(self) -> str:  # never print the key
        return "ReadCap(si=%s, k=%d, n=%d, size=%d)" % (self.storage_index.hex(), self.k, self.n, self.size)


@dataclass(frozen=True)
class VerifyCap:
    """Can check and repair a file, not read it: storage index, UEB hash, k, n, size."""

    storage_index: bytes
    ueb_hash: bytes
    k: int
    n: int
    size: int

    kind = "v1"

    def __post_init__(self):
        if len(self.storage_index) != SI_LEN or len(self.ueb_hash) != HASH_LEN:
            raise BadCapability("a verify capability needs a %d-byte storage index and a "
                                "%d-byte UEB hash" % (SI_LEN, HASH_LEN))
        _check_params(self.k, self.n, self.size)

    def verify_cap(self) -> "VerifyCap":
        """Itself."""
        return self

    def to_string(self) -> str:
        """The capability as a string a person can copy."""
        return _with_check("oh:v1:%s:%s:%d:%d:%d" % (b32(self.storage_index), b32(self.ueb_hash),
                                                     self.k, self.n, self.size))

    __str__ = to_string


@dataclass(frozen=True, repr=False)
class LiteralCap:
    """A small file (at most 55 bytes) kept inside the capability itself."""

    data: bytes

    kind = "l1"

    def __post_init__(self):
        if len(self.data) > LITERAL_MAX:
            raise BadCapability("a literal capability holds at most %d bytes, not %d"
                                % (LITERAL_MAX, len(self.data)))

    @property
    def size(self) -> int:
        """The file size."""
        return len(self.data)

    def to_string(self) -> str:
        """The capability as a string a person can copy."""
        return _with_check("oh:l1:%s" % b32(self.data))

    __str__ = to_string

    def __repr__(self) -> str:
        return "LiteralCap(size=%d)" % len(self.data)


def _number(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise BadCapability("this capability is damaged: its %s %r is not a decimal number" % (what, text))
    return int(text)


def parse_cap(text: str, accept: tuple = (ReadCap, VerifyCap, LiteralCap)):
    """Parse a capability string into a :class:`ReadCap`, :class:`VerifyCap`
    or :class:`LiteralCap`; ``accept`` limits the kinds wanted (e.g. a read
    needs a read-cap or a literal cap). Raises :class:`BadCapability`."""
    if not isinstance(text, str):
        raise BadCapability("a capability must be a string")
    s = text.strip().lower()
    if not s:
        raise BadCapability("the capability is empty")
    if not s.startswith("oh:"):
        raise BadCapability("this is not an openheap capability: it should start with 'oh:'")
    fields = s.split(":")
    kind = fields[1]
    if kind not in _KINDS:
        raise BadCapability("this capability is of an unknown kind %r: openheap knows 'r1' (read), "
                            "'v1' (verify) and 'l1' (literal)%s"
                            % (kind, _COPY if len(fields) == 2 and len(kind) < 2 else ""))
    name, count = _KINDS[kind]
    if len(fields) != count:
        raise BadCapability("this capability has %d fields, %s has %d%s"
                            % (len(fields), name, count, _COPY if len(fields) < count else ""))
    body, check = s.rsplit(":", 1)
    if len(check) != 6 or any(c not in "0123456789abcdef" for c in check):
        raise BadCapability("this capability is damaged: its checksum should be 6 hex digits" + _COPY)
    if cap_check(body) != check:
        raise BadCapability("this capability is damaged: its checksum does not match" + _COPY)
    if kind == "l1":
        cap = LiteralCap(_unb32(fields[2], "data", None))
    else:
        k, n, size = (_number(fields[i], w) for i, w in ((4, "k"), (5, "n"), (6, "size")))
        if kind == "r1":
            cap = ReadCap(_unb32(fields[2], "key", KEY_LEN), _unb32(fields[3], "UEB hash", HASH_LEN),
                          k, n, size)
        else:
            cap = VerifyCap(_unb32(fields[2], "storage index", SI_LEN),
                            _unb32(fields[3], "UEB hash", HASH_LEN), k, n, size)
    if cap.to_string() != s:
        raise BadCapability("this capability is damaged: it is not written in canonical form")
    if not isinstance(cap, accept):
        raise BadCapability({
            VerifyCap: "this is a verify capability: it can check and repair a file but not read it",
            ReadCap: "this is a read capability, but a verify capability is expected here",
            LiteralCap: "this is a literal capability: the file is inside it and has no shares",
        }[type(cap)])
    return cap
