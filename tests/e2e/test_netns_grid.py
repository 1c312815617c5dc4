"""The grid behind a loopback made to look like a network, in a network
namespace of its own (tests/e2e/netns_grid.py): root, ``unshare``, ``nft``
and ``ethtool`` are needed, else these tests skip.

* 20% packet loss both ways on the default path: share data over CoAP over
  TCP, registration, share sets and deletes over UDP. (The UDP-only path
  under datagram loss is test_grid_faults.py's lossy-relay test.) Measured:
  a 400 kB put took 7.5-15 s and its get 6.5-10.6 s there (TCP's
  retransmission timer starts at 200 ms and backs off).
* A LAN's packet size (MTU 1500, no offloads, as the benchmark has it) and
  nine 8 MiB files put back to back on 10 registered boards: every put
  succeeds.
  A firmware change that bound each upload's file methods for its whole
  block ran boards out of heap there (5.03 "out of memory" from the third
  put on, in some runs, never on the usual 64 KiB loopback): the heap of a
  registered board is that tight while it takes a share."""

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
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "nft", "ethtool")),
    reason="needs root, unshare, nft and ethtool for a network namespace")


def _in_netns(home: Path, *args) -> dict:
    try:
        proc = subprocess.run(["unshare", "--net", sys.executable, str(HERE / "netns_grid.py"), args[0], str(home),
                               *map(str, args[1:])], capture_output=True, text=True, timeout=900)
    finally:
        leaked = reap(home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not leaked, "processes still running: %s" % leaked
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_netns
def test_put_and_get_over_tcp_with_20_percent_loss(tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(250 * 1000))
    out = _in_netns(tmp_path / "home", "loss", 20, src)
    assert out["put"]["rc"] == 0, out
    assert out["get"]["rc"] == 0, out
    assert out["identical"], out
    assert "Traceback" not in out["put"]["stderr"] + out["get"]["stderr"]
    # the loss was real, and TCP (the share data) felt it
    assert out["dropped"] > 50, out
    assert out["tcp_retransmitted"] > 0, out


@needs_netns
def test_big_puts_back_to_back_at_a_lans_packet_size(tmp_path):
    out = _in_netns(tmp_path / "home", "lan", 10, 9, 8 << 20)
    assert [p["ok"] for p in out["puts"]] == [True] * 9, out["puts"]
    assert out["identical"]
