"""20% packet loss both ways on the default path: share data over CoAP over
TCP, registration, share sets and deletes over UDP. (The UDP-only path
under datagram loss is tests/e2e/test_grid_faults.py's lossy-relay test.)

The grid runs in a network namespace of its own whose loopback drops 20% of
the packets between the coordinator and the boards (nftables ``numgen
random`` on the input hook); root, ``unshare`` and ``nft`` are needed, else
the test skips. Measured: a 400 kB put took 7.5-15 s and its get 6.5-10.6
s there (TCP's retransmission timer starts at 200 ms and backs off)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ohtest import reap

HERE = Path(__file__).resolve().parent

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nft"),
    reason="needs root, unshare and nft for a network namespace with packet loss")


@needs_netns
def test_put_and_get_over_tcp_with_20_percent_loss(tmp_path):
    home = tmp_path / "home"
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(250 * 1000))
    try:
        proc = subprocess.run(["unshare", "--net", sys.executable, str(HERE / "lossy_netns.py"), str(home), "20",
                               str(src)], capture_output=True, text=True, timeout=600)
    finally:
        leaked = reap(home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["put"]["rc"] == 0, out
    assert out["get"]["rc"] == 0, out
    assert out["identical"], out
    assert "Traceback" not in out["put"]["stderr"] + out["get"]["stderr"]
    # the loss was real, and TCP (the share data) felt it
    assert out["dropped"] > 50, out
    assert out["tcp_retransmitted"] > 0, out
    assert not leaked, "processes still running: %s" % leaked
