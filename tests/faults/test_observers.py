"""Observe (RFC 7641) under faults: observers that go away, RST, deregistration.

Each test starts its own board (the ``fleet`` fixture of tests/conftest.py):
the first one may leave a board that no longer serves.
"""

from __future__ import annotations

import base64
import hashlib
import time

from rawcoap import ACK, CON, GET, NON, OPT_OBSERVE, PUT, Raw, code, decode, encode, path_opts, sha

ST_HEAP_FREE = 4


def si_of(name: str) -> str:
    """A storage index private to one test, in its path form (base64url)."""
    return base64.urlsafe_b64encode(hashlib.sha256(("observers-" + name).encode()).digest()[:16]).rstrip(b"=").decode()


def put_tiny(raw: Raw, si: str, i: int):
    data = b"tiny share %d" % i
    return raw.request(PUT, "s/%s/%d?h=%s" % (si, i % 4, sha(data)), data)


def notifications(raw: Raw, quiet: float = 0.3) -> list:
    return [m for m in map(decode, raw.drain(quiet)) if m.opt(OPT_OBSERVE) is not None and m.t in (CON, NON)]


def test_vanished_observers_do_not_starve_the_node(fleet):
    """Four observers of /i disappear without deregistering (a dashboard that
    quit); then a host stores 100 tiny shares, one request at a time. Every
    store must succeed and the node must keep serving: an observer that does
    not acknowledge its confirmable notifications is dropped (RFC 7641 4.5),
    and at most one notification per observer is in flight (RFC 7641 4.5.1,
    RFC 7252 4.7 NSTART=1)."""
    b = fleet.up(1)[0]
    for i in range(4):
        with Raw(b.host, b.port) as gone:
            m = gone.request(GET, "i", options=[(OPT_OBSERVE, 0)])
            assert m.code == code(2, 5) and m.opt(OPT_OBSERVE) is not None, str(m)
    si = si_of("vanished")
    results = []
    with Raw(b.host, b.port) as raw:
        heap = raw.status()[ST_HEAP_FREE]
        for i in range(100):
            try:
                m = put_tiny(raw, si, i)
            except AssertionError:
                results.append((i, "no answer"))
                break
            if m.code not in (code(2, 1), code(2, 4)):
                results.append((i, "%d.%02d %s" % (m.cls, m.code & 31, m.payload.decode(errors="replace"))))
        try:
            st = raw.status(tries=2)
        except AssertionError:
            st = None
    assert not results and st is not None, (
        "stores failed with 4 vanished observers (heap free %d before): %s; node still answers GET /i: %s"
        % (heap, results[:5], st is not None))
    info = fleet.info(b.name)
    assert info.pid == b.pid and info.restarts == 0


def test_rst_to_a_notification_ends_the_observation(fleet):
    b = fleet.up(1)[0]
    si = si_of("rst")
    with Raw(b.host, b.port) as obs, Raw(b.host, b.port) as raw:
        tok = obs.token()
        rsp = decode(obs.exchange(encode(CON, GET, obs.mid(), tok, path_opts("i") + [(OPT_OBSERVE, 0)])))
        assert rsp.code == code(2, 5) and rsp.opt(OPT_OBSERVE) is not None
        put_tiny(raw, si, 0)
        notes = notifications(obs, 1.0)
        assert notes and notes[0].token == tok, "a share change notifies the observer"
        note = notes[-1]
        obs.send(bytes([0x70, 0, note.mid >> 8, note.mid & 0xFF]))  # RST: "not interested" (RFC 7641 3.6)
        time.sleep(0.2)
        put_tiny(raw, si, 1)
        assert notifications(obs, 1.0) == [], "notifications after the RST"
        raw.still_answers()


def test_get_with_observe_1_deregisters(fleet):
    b = fleet.up(1)[0]
    si = si_of("dereg")
    with Raw(b.host, b.port) as obs, Raw(b.host, b.port) as raw:
        tok = obs.token()
        rsp = decode(obs.exchange(encode(CON, GET, obs.mid(), tok, path_opts("i") + [(OPT_OBSERVE, 0)])))
        assert rsp.opt(OPT_OBSERVE) is not None
        put_tiny(raw, si, 0)
        assert notifications(obs, 1.0), "registered: a share change notifies"
        rsp = decode(obs.exchange(encode(CON, GET, obs.mid(), tok, path_opts("i") + [(OPT_OBSERVE, 1)])))
        assert rsp.t == ACK and rsp.code == code(2, 5) and rsp.opt(OPT_OBSERVE) is None, str(rsp)
        put_tiny(raw, si, 1)
        assert notifications(obs, 1.0) == [], "notifications after deregistering"
        raw.still_answers()
