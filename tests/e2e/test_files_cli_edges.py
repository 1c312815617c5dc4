"""Edge cases of the file commands, end to end with the real CLI and real
virtual boards (no mocks):

* ``openheap put -`` reads the file from standard input, and ``openheap get
  CAP`` without ``-o`` writes exactly the file's bytes to standard output
  (messages go to stderr);
* files of exactly one segment and of one segment plus one byte (``-k 3``;
  the segment size comes from :class:`openheap.storage.layout.Params`);
* a coordinator with no boards at all: ``openheap put`` fails with one
  sentence, and ``POST /v1/files`` answers 503 with that sentence as JSON.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from ohtest import openheap_command, reap, wait_for
from openheap.storage.layout import MAX_SEGSIZE, Params

NO_NODES = "no nodes are registered"


def _cap(put) -> str:
    out = put.stdout.decode() if isinstance(put.stdout, bytes) else put.stdout
    cap = out.strip().splitlines()[-1]
    assert cap.startswith("oh:"), out
    return cap


def _run_bytes(*args, stdin: bytes | None = None, timeout=120) -> subprocess.CompletedProcess:
    """The real CLI with binary standard input and output."""
    return subprocess.run(openheap_command() + [str(a) for a in args], input=stdin if stdin is not None else b"",
                          capture_output=True, timeout=timeout)


@pytest.fixture
def no_leaks(tmp_path):
    """Listed before ``grid``: torn down after its ``openheap down``, it fails
    the test if any process of the grid's home still runs (and kills it)."""
    yield
    leaked = reap(tmp_path / "home")
    assert not leaked, "processes still running after 'openheap down': %s" % leaked


def test_put_stdin_get_stdout(no_leaks, grid, tmp_path):
    data = os.urandom(300_001)  # three segments, the last one short
    put = _run_bytes("put", "-", stdin=data)
    assert put.returncode == 0, put.stderr.decode()
    cap = _cap(put)
    assert put.stdout.decode().strip().splitlines() == [cap]  # only the capability on stdout
    stderr = put.stderr.decode()
    assert "stored %d bytes" % len(data) in stderr and "Traceback" not in stderr

    got = _run_bytes("get", cap)
    assert got.returncode == 0, got.stderr.decode()
    assert len(got.stdout) == len(data)
    assert got.stdout == data  # stdout holds the file and nothing else
    assert b"Traceback" not in got.stderr


def test_one_segment_and_one_more_byte(no_leaks, run_cli, grid, tmp_path):
    one = Params(3, 5, MAX_SEGSIZE).segsize  # the biggest file of one segment at k=3
    assert one % 3 == 0 and one >= MAX_SEGSIZE
    assert Params(3, 5, one).num_segments == 1
    assert Params(3, 5, one).segsize == one
    assert Params(3, 5, one + 1).num_segments == 2
    assert Params(3, 5, one + 1).segsize == one
    assert Params(3, 5, one + 1).tail_segment_size == 1
    for size in (one, one + 1):
        src = tmp_path / ("f%d" % size)
        src.write_bytes(os.urandom(size))
        put = run_cli("put", "-k", "3", src, timeout=120)
        cap = _cap(put)
        assert "stored %d bytes as 3-of-" % size in put.stderr, put.stderr
        info = json.loads(run_cli("ls", "--json", cap).stdout)
        assert (info["size"], info["k"]) == (size, 3)
        out = tmp_path / ("back%d" % size)
        run_cli("get", cap, "-o", out, timeout=120)
        assert out.read_bytes() == src.read_bytes(), size


@pytest.fixture
def boardless(tmp_path, monkeypatch, run_cli):
    """``openheap serve`` with no boards at all (``up`` wants at least one),
    in a private home; stopped with ``openheap down`` afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("OPENHEAP_HOME", str(home))
    log = tmp_path / "serve.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(openheap_command() + ["serve", "--home", str(home), "--coap-port", "0"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf)
    try:
        api = home / "coordinator" / "api.json"
        wait_for(lambda: proc.poll() is not None or (api.is_file() and "coap_port" in api.read_text()), timeout=20)
        assert proc.poll() is None, log.read_text()
        info = json.loads(api.read_text())
        assert info["pid"] == proc.pid
        yield home, info
    finally:
        run_cli("down", check=False, timeout=60)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        finally:
            leaked = reap(home)
            assert not leaked, "processes still running after 'openheap down': %s" % leaked


def test_no_boards(run_cli, boardless, tmp_path):
    home, info = boardless
    assert json.loads(run_cli("nodes", "--json").stdout) == []
    src = tmp_path / "x"
    src.write_bytes(os.urandom(5000))

    proc = run_cli("put", src, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("openheap: error: ") and NO_NODES in lines[0]
    assert proc.stdout == ""
    sentence = lines[0][len("openheap: error: "):]
    piped = _run_bytes("put", "-", stdin=src.read_bytes(), timeout=60)
    assert piped.returncode == proc.returncode and piped.stdout == b""
    assert piped.stderr.decode().strip() == lines[0]

    # the same through the HTTP API
    token = (Path(home) / "coordinator" / "token").read_text().strip()
    body = src.read_bytes()
    c = http.client.HTTPConnection("127.0.0.1", int(info["api_port"]), timeout=30)
    try:
        c.request("POST", "/v1/files?k=2&n=4&happy=3&name=x", body=body,
                  headers={"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream",
                           "Accept": "application/json", "Content-Length": str(len(body))})
        rsp = c.getresponse()
        status, ctype, raw = rsp.status, rsp.getheader("Content-Type", ""), rsp.read()
    finally:
        c.close()
    assert status == 503, raw
    assert ctype.startswith("application/json"), ctype
    err = json.loads(raw)
    assert NO_NODES in err["error"] and err["error"] == sentence
    assert err["kind"] == "NotHappy"
    assert err["exit_code"] == proc.returncode
    # nothing reached the catalog
    assert json.loads(run_cli("ls", "--json").stdout) == []
