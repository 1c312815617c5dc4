"""Fixtures of the fault tests: one virtual board shared by a whole module.

``board``  a running virtual board (``BoardInfo``) in a module-private home,
           stopped (and any process left from that home killed) after the
           module's last test.
``raw``    a fresh :class:`rawcoap.Raw` UDP client talking to ``board``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rawcoap  # noqa: E402


def _reap(home: Path) -> list[int]:
    """SIGKILL every process whose command line mentions ``home``."""
    needle = str(home).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module")
def module_fleet(tmp_path_factory):
    from openheap.sim.fleet import Fleet

    home = tmp_path_factory.mktemp("faults-home")
    fleet = Fleet(home)
    try:
        yield fleet
    finally:
        try:
            fleet.down(timeout=5)
        finally:
            leaked = _reap(home)
            shutil.rmtree(home, ignore_errors=True)
            assert not leaked, "processes still running after fleet.down(): %s" % leaked


@pytest.fixture(scope="module")
def board(module_fleet):
    return module_fleet.up(1)[0]


@pytest.fixture
def raw(board):
    with rawcoap.Raw(board.host, board.port) as r:
        yield r
