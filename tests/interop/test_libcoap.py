"""Interop with libcoap's command-line client (``coap-client-notls``, a second
CoAP implementation in C) against a virtual board."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import shutil
import subprocess
import time

import cbor2
import pytest

CLIENT = "coap-client-notls"
WAIT = 15  # -B: coap-client gives up after this many seconds

pytestmark = pytest.mark.skipif(shutil.which(CLIENT) is None, reason="%s is not installed" % CLIENT)


def coap(*args, timeout: float = WAIT + 15) -> subprocess.CompletedProcess:
    """Run coap-client (never longer than ``timeout``); stdout/stderr as bytes."""
    return subprocess.run([CLIENT, "-B", str(WAIT), *map(str, args)], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def si_of(name: str) -> str:
    """A storage index private to one test, in its path form (base64url)."""
    return base64.urlsafe_b64encode(hashlib.sha256(("libcoap-" + name).encode()).digest()[:16]).rstrip(b"=").decode()


def error_code(proc: subprocess.CompletedProcess) -> str | None:
    """The 'x.yy' code coap-client prints for an error response, if any."""
    for line in proc.stderr.decode("utf-8", "replace").splitlines():
        head = line.split(" ", 1)[0]
        if len(head) == 4 and head[1] == "." and head.replace(".", "").isdigit():
            return head
    return None


def test_discovery(board):
    p = coap(board.uri + "/.well-known/core")
    assert p.returncode == 0, p.stderr
    assert error_code(p) is None, p.stderr
    assert p.stdout.strip() == b'</s>;rt="oh.s";ct=60,</i>;rt="oh.i";ct=60;obs'


@pytest.mark.parametrize("query, expect", [
    ("rt=oh.i", b'</i>;rt="oh.i";ct=60;obs'),
    ("rt=oh.s", b'</s>;rt="oh.s";ct=60'),
])
def test_discovery_filter(board, query, expect):
    p = coap(board.uri + "/.well-known/core?" + query)
    assert p.returncode == 0 and error_code(p) is None, p.stderr
    assert p.stdout.strip() == expect


@pytest.mark.parametrize("size, bs", [
    (20_000, 64), (200_000, 64), (20_000, 1024), (200_000, 1024), (2_000, 16), (204_800, 1024),
], ids=lambda v: str(v))
def test_blockwise_put_get(board, tmp_path, size, bs):
    data = random.Random(size * 7 + bs).randbytes(size)
    src, out = tmp_path / "share.bin", tmp_path / "back.bin"
    src.write_bytes(data)
    si = si_of("bw-%d-%d" % (size, bs))
    uri = "%s/s/%s/3" % (board.uri, si)
    digest = hashlib.sha256(data).hexdigest()

    put = coap("-m", "put", "-b", bs, "-t", 42, "-f", src, uri + "?h=" + digest)
    assert put.returncode == 0 and error_code(put) is None, put.stderr
    get = coap("-m", "get", "-b", bs, "-o", out, uri)
    assert get.returncode == 0 and error_code(get) is None, get.stderr
    assert subprocess.run(["cmp", str(src), str(out)], capture_output=True).returncode == 0, \
        "share read back differs (%d of %d bytes)" % (out.stat().st_size if out.exists() else 0, size)
    # the CBOR share set agrees, read by coap-client too
    lst = coap("-o", tmp_path / "set.cbor", "%s/s/%s" % (board.uri, si))
    assert lst.returncode == 0 and error_code(lst) is None, lst.stderr
    assert cbor2.loads((tmp_path / "set.cbor").read_bytes()) == [[3, size]]
    dele = coap("-m", "delete", uri)
    assert error_code(dele) is None, dele.stderr
    assert error_code(coap(uri)) == "4.04"


def test_missing_share_is_4_04(board):
    p = coap("%s/s/%s/0" % (board.uri, si_of("missing")))
    assert p.returncode == 0
    assert error_code(p) == "4.04", p.stderr
    assert p.stdout == b""


@pytest.mark.parametrize("bs", [64, 1024])
def test_wrong_hash_is_refused(board, tmp_path, bs):
    data = random.Random(bs).randbytes(5000)
    src = tmp_path / "share.bin"
    src.write_bytes(data)
    uri = "%s/s/%s/0" % (board.uri, si_of("wrong-hash-%d" % bs))
    wrong = hashlib.sha256(data + b"!").hexdigest()
    put = coap("-m", "put", "-b", bs, "-f", src, uri + "?h=" + wrong)
    assert error_code(put) == "4.00", put.stderr
    assert b"hash" in put.stderr, "diagnostic should say why: %r" % put.stderr
    assert error_code(coap(uri)) == "4.04"
    assert error_code(coap("%s/s/%s" % (board.uri, si_of("wrong-hash-%d" % bs)))) == "4.04"


def test_put_without_hash_is_refused(board):
    uri = "%s/s/%s/0" % (board.uri, si_of("no-hash"))
    put = coap("-m", "put", "-e", "hello", uri)
    assert error_code(put) == "4.00", put.stderr
    assert error_code(coap(uri)) == "4.04"


def test_method_not_allowed(board):
    p = coap("-m", "post", "-e", "x", board.uri + "/i")
    assert error_code(p) == "4.05", p.stderr


def test_non_request(board):
    p = coap("-N", board.uri + "/i")
    assert error_code(p) is None, p.stderr
    assert cbor2.loads(p.stdout)[0] == board.name


def test_observe_status(board, tmp_path):
    """coap-client -s observes /i while two other coap-clients PUT and DELETE a
    tiny share: at least 3 notifications (the first response included)."""
    out = tmp_path / "notes.cbor"
    tiny = b"observe me"
    uri = "%s/s/%s/0" % (board.uri, si_of("observe"))
    obs = subprocess.Popen([CLIENT, "-B", str(WAIT), "-s", "4", "-o", str(out), board.uri + "/i"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        assert error_code(coap("-m", "put", "-e", tiny.decode(), uri + "?h=" + hashlib.sha256(tiny).hexdigest())) is None
        time.sleep(0.3)
        assert error_code(coap("-m", "delete", uri)) is None
        time.sleep(0.3)
        assert error_code(coap("-m", "put", "-e", tiny.decode(), uri + "?h=" + hashlib.sha256(tiny).hexdigest())) is None
        _, err = obs.communicate(timeout=WAIT + 10)
    finally:
        if obs.poll() is None:
            obs.kill()
            obs.wait()
    assert error_code(coap("-m", "delete", uri)) is None
    buf = io.BytesIO(out.read_bytes())
    notes = []
    while buf.tell() < len(buf.getvalue()):
        notes.append(cbor2.load(buf))
    assert len(notes) >= 3, "only %d notifications: %r" % (len(notes), err)
    rx = [n[9] for n in notes]
    assert rx == sorted(rx) and rx[-1] > rx[0], rx
    assert [n[8] for n in notes][-1] >= 1


# -- CoAP over TCP (RFC 8323): the same resources on the same port number


def tcp_uri(board) -> str:
    return "coap+tcp://%s:%d" % (board.host, board.port)


def tcp(board, *args) -> subprocess.CompletedProcess:
    """coap-client over TCP, after the share set request over UDP (?tcp)
    that makes the node listen on TCP until the connection ends."""
    wake = coap("%s/s/%s?tcp" % (board.uri, si_of("wake")))
    assert error_code(wake) in (None, "4.04"), wake.stderr
    return coap(*args)


@pytest.mark.parametrize("size", [1, 5_000, 200_000])
def test_tcp_put_get(board, tmp_path, size):
    # libcoap sends its CSM, then block-wise PUT and GET over one connection.
    data = random.Random(size + 11).randbytes(size)
    src, out = tmp_path / "share.bin", tmp_path / "back.bin"
    src.write_bytes(data)
    si = si_of("tcp-%d" % size)
    uri = "%s/s/%s/2" % (tcp_uri(board), si)
    put = tcp(board, "-m", "put", "-b", 1024, "-f", src, uri + "?h=" + hashlib.sha256(data).hexdigest())
    assert put.returncode == 0 and error_code(put) is None, put.stderr
    get = tcp(board, "-m", "get", "-b", 1024, "-o", out, uri)
    assert get.returncode == 0 and error_code(get) is None, get.stderr
    assert out.read_bytes() == data
    # and the share is the one UDP sees
    lst = coap("-o", tmp_path / "set.cbor", "%s/s/%s" % (board.uri, si))
    assert cbor2.loads((tmp_path / "set.cbor").read_bytes()) == [[2, size]]


def test_tcp_errors_are_answered(board, tmp_path):
    data = random.Random(5).randbytes(3000)
    src = tmp_path / "share.bin"
    src.write_bytes(data)
    uri = "%s/s/%s/0" % (tcp_uri(board), si_of("tcp-wrong-hash"))
    put = tcp(board, "-m", "put", "-b", 1024, "-f", src, uri + "?h=" + hashlib.sha256(b"other").hexdigest())
    assert error_code(put) == "4.00" and b"hash" in put.stderr, put.stderr
    assert error_code(tcp(board, uri)) == "4.04"
    assert error_code(tcp(board, "-m", "post", "-e", "x", tcp_uri(board) + "/i")) == "4.05"
    p = tcp(board, tcp_uri(board) + "/.well-known/core?rt=oh.i")
    assert p.returncode == 0 and p.stdout.strip() == b'</i>;rt="oh.i";ct=60;obs'
