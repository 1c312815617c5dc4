"""Capabilities: round trips, derivation, and a clear sentence for every damage."""

from __future__ import annotations

import os
import random

import pytest

from openheap.errors import UsageError
from openheap.storage.caps import (LITERAL_MAX, LiteralCap, ReadCap, VerifyCap, b32, cap_check,
                                   parse_cap)
from openheap.storage.crypto import storage_index
from openheap.storage.errors import BadCapability

KEY = bytes(range(16))
UEB_HASH = bytes(range(100, 132))
READ = ReadCap(KEY, UEB_HASH, 3, 10, 1234567)


def forge(body):
    """A string with a valid checksum for any body: damage that only a forger makes."""
    return "%s:%s" % (body, cap_check(body))


def bad(text, accept=(ReadCap, VerifyCap, LiteralCap)):
    with pytest.raises(BadCapability) as info:
        parse_cap(text, accept)
    msg = str(info.value)
    assert "\n" not in msg and ". " not in msg and msg[0].islower(), msg  # one sentence
    assert info.value.exit_code == 2 and isinstance(info.value, UsageError)
    return msg


def test_read_cap_round_trip_and_format():
    s = READ.to_string()
    assert s == str(READ)
    fields = s.split(":")
    assert fields[:2] == ["oh", "r1"] and fields[4:7] == ["3", "10", "1234567"]
    assert fields[2] == b32(KEY) and fields[2] == fields[2].lower() and "=" not in s
    assert fields[7] == cap_check(s.rsplit(":", 1)[0]) and len(fields[7]) == 6
    assert parse_cap(s) == READ
    assert "key" not in repr(READ) and b32(KEY) not in repr(READ)


def test_verify_cap_derived_from_read_cap():
    v = READ.verify_cap()
    assert v == VerifyCap(storage_index(KEY), UEB_HASH, 3, 10, 1234567)
    assert v.storage_index == READ.storage_index
    s = v.to_string()
    assert s.startswith("oh:v1:") and b32(KEY) not in s
    assert parse_cap(s) == v and v.verify_cap() is v


@pytest.mark.parametrize("size", [0, 1, 20, LITERAL_MAX])
def test_literal_cap_round_trip(size):
    cap = LiteralCap(os.urandom(size))
    s = cap.to_string()
    assert s.startswith("oh:l1:") and len(s.split(":")) == 4
    assert parse_cap(s) == cap and cap.size == size


def test_whitespace_and_case_tolerated():
    s = READ.to_string()
    assert parse_cap("  \n" + s + " \t\n") == READ
    assert parse_cap(s.upper()) == READ


def test_accept_limits_the_kinds():
    v = READ.verify_cap().to_string()
    msg = bad(v, (ReadCap, LiteralCap))
    assert "verify capability" in msg and "not read" in msg
    assert "literal" in bad(LiteralCap(b"x").to_string(), (ReadCap, VerifyCap))


def test_damage_messages():
    s = READ.to_string()
    assert bad("") == "the capability is empty"
    assert bad("   ") == "the capability is empty"
    assert bad("URI:CHK:abc:def:3:10:100") == "this is not an openheap capability: it should start with 'oh:'"
    assert bad(s[3:]).startswith("this is not an openheap capability")
    assert "unknown kind 'x9'" in bad("oh:x9:" + s[6:])
    assert "was it copied completely?" in bad("oh:")
    assert bad(":".join(s.split(":")[:6])) == \
        "this capability has 6 fields, a read capability has 8 (was it copied completely?)"
    assert bad(s + ":zz") == "this capability has 9 fields, a read capability has 8"
    assert "a literal capability has 4" in bad("oh:l1:abc")
    assert bad(s[:-2]) == "this capability is damaged: its checksum should be 6 hex digits (was it copied completely?)"
    assert bad(s[:-1] + ("0" if s[-1] != "0" else "1")) == \
        "this capability is damaged: its checksum does not match (was it copied completely?)"
    assert bad(s.replace(":3:10:", ":3:11:")).endswith("checksum does not match (was it copied completely?)")
    assert bad(s.replace("oh:", "oh: ", 1))  # a space inside


def test_every_typo_is_caught():
    rng = random.Random(7)
    for s in (READ.to_string(), READ.verify_cap().to_string(), LiteralCap(b"hello world").to_string()):
        for i in range(len(s)):
            for c in rng.sample("abcdefghijklmnopqrstuvwxyz0123456789:", 3):
                if c != s[i].lower():
                    bad(s[:i] + c + s[i + 1:])
            bad(s[:i] + s[i + 1:])  # a character lost
            bad(s[:i])  # truncated
            if i + 1 < len(s) and s[i] != s[i + 1]:
                bad(s[:i] + s[i + 1] + s[i] + s[i + 2:])  # two swapped


def test_forged_bodies_are_still_checked():
    k, u = b32(KEY), b32(UEB_HASH)
    assert "impossible parameters k=5, n=3" in bad(forge("oh:r1:%s:%s:5:3:100" % (k, u)))
    assert "impossible parameters k=0" in bad(forge("oh:r1:%s:%s:0:3:100" % (k, u)))
    assert "n=300" in bad(forge("oh:r1:%s:%s:3:300:100" % (k, u)))
    assert "not a decimal number" in bad(forge("oh:r1:%s:%s:03:10:100" % (k, u)))
    assert "not a decimal number" in bad(forge("oh:r1:%s:%s:3:10:-1" % (k, u)))
    assert "its key should be 16 bytes" in bad(forge("oh:r1:%s:%s:3:10:100" % (b32(KEY[:10]), u)))
    assert "UEB hash" in bad(forge("oh:r1:%s:%s:3:10:100" % (k, b32(UEB_HASH[:31]))))
    assert "not valid base32" in bad(forge("oh:r1:%s:%s:3:10:100" % (k[:-1] + "1", u)))
    assert "storage index" in bad(forge("oh:v1:%s:%s:3:10:100" % (k + "aa", u)))
    assert "at most 55 bytes" in bad(forge("oh:l1:%s" % b32(bytes(56))))
    assert "impossible file size" in bad(forge("oh:r1:%s:%s:3:10:%d" % (k, u, 1 << 64)))
    # base32 with non-zero trailing bits decodes but is not canonical
    assert "canonical" in bad(forge("oh:r1:%s:%s:3:10:100" % (k[:-1] + "b", u)))


def test_constructors_validate():
    with pytest.raises(BadCapability):
        ReadCap(b"short", UEB_HASH, 3, 10, 1)
    with pytest.raises(BadCapability):
        ReadCap(KEY, UEB_HASH, 4, 3, 1)
    with pytest.raises(BadCapability):
        LiteralCap(bytes(LITERAL_MAX + 1))
    with pytest.raises(BadCapability):
        parse_cap(b"oh:l1::abcdef")
