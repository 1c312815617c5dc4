"""Shared pytest fixtures.

* ``oh_home``  a temporary openheap home (``OPENHEAP_HOME`` points at it).
* ``fleet``    a :class:`openheap.sim.fleet.Fleet` in that home; every board
  it started is stopped afterwards, and any process still running from the
  home is killed, whatever the test did.
* ``boards``   ``fleet.up(n)`` with n from ``@pytest.mark.nodes(n)`` (default 3).
* ``stub_firmware``  a tiny stand-in node (``OPENHEAP_FIRMWARE_DIR``) for
  tests of the virtual-board machinery that should not depend on the real
  firmware. Datagrams: ``reset`` exits with status 3 (watchdog), ``crash``
  exits with status 1, anything else is echoed back as ``echo:<data>``. It
  counts its boots in ``/boots`` on its flash image.
* ``run_cli``  runs the real ``openheap`` command in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ohtest import _processes_under, openheap_command, reap, wait_for  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[1]

STUB_MAIN = r'''
# Stand-in openheap node for tests of the virtual-board machinery.
import sys, json, socket, vfs

cfg = json.load(open(sys.argv[1]))


class Dev:
    def __init__(self, path, bs):
        self.f = open(path, "r+b")
        self.bs = bs
        self.n = self.f.seek(0, 2) // bs

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        self.f.seek(n * self.bs + (off or 0))
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 3:
            self.f.flush()
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        return 0


vfs.mount(vfs.VfsLfs2(Dev(cfg["image"], cfg["block_size"])), "/flash")
try:
    with open("/flash/boots") as f:
        boots = int(f.read())
except OSError:
    boots = 0
with open("/flash/boots", "w") as f:
    f.write(str(boots + 1))
vfs.umount("/flash")

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(socket.getaddrinfo(cfg["host"], cfg["port"])[0][-1])
print("openheap node %s listening on %s:%d" % (cfg["name"], cfg["host"], cfg["port"]))
while True:
    data, addr = s.recvfrom(1500)
    if data == b"reset":
        sys.exit(3)
    if data == b"crash":
        sys.exit(1)
    s.sendto(b"echo:" + data, addr)
'''


def pytest_configure(config):
    config.addinivalue_line("markers", "nodes(n): number of virtual boards the `boards` fixture starts")








@pytest.fixture
def oh_home(tmp_path, monkeypatch):
    """A fresh openheap home; processes started from it are killed at the end."""
    home = tmp_path / "home"
    monkeypatch.setenv("OPENHEAP_HOME", str(home))
    yield home
    reap(home)


@pytest.fixture(scope="session")
def _stub_dirs(tmp_path_factory):
    src = tmp_path_factory.mktemp("stubfw")
    (src / "main.py").write_text(STUB_MAIN)
    return src, tmp_path_factory.mktemp("stubbuild")


@pytest.fixture
def stub_firmware(_stub_dirs, monkeypatch):
    """Point the bundle at the stand-in node (see module docstring)."""
    src, build = _stub_dirs
    monkeypatch.setenv("OPENHEAP_FIRMWARE_DIR", str(src))
    monkeypatch.setenv("OPENHEAP_BUILD_DIR", str(build))
    return src


@pytest.fixture
def fleet(oh_home):
    """A Fleet in ``oh_home``; all its boards are stopped after the test."""
    from openheap.sim.fleet import Fleet

    f = Fleet(oh_home)
    try:
        yield f
    finally:
        try:
            f.down(timeout=5)
        finally:
            leaked = reap(oh_home)
            assert not leaked, "processes still running after fleet.down(): %s" % leaked


@pytest.fixture
def boards(fleet, request):
    """Start the number of boards given by ``@pytest.mark.nodes(n)`` (default 3)."""
    marker = request.node.get_closest_marker("nodes")
    n = marker.args[0] if marker else 3
    return fleet.up(n)


@pytest.fixture
def run_cli():
    """``run_cli(*args, check=True)`` -> CompletedProcess of the real CLI (text mode)."""

    def run(*args, check=True, timeout=60):
        proc = subprocess.run(
            openheap_command() + [str(a) for a in args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                "openheap %s exited %d\nstdout: %s\nstderr: %s"
                % (" ".join(map(str, args)), proc.returncode, proc.stdout, proc.stderr)
            )
        return proc

    return run


@pytest.fixture(scope="module")
def module_fleet(tmp_path_factory, request):
    """A :class:`Fleet` shared by a whole test module, in a module-private
    home; stopped (and any process left from that home killed) at its end."""
    import shutil

    from openheap.sim.fleet import Fleet

    home = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1] + "-home")
    fleet = Fleet(home)
    try:
        yield fleet
    finally:
        try:
            fleet.down(timeout=5)
        finally:
            leaked = reap(home)
            shutil.rmtree(home, ignore_errors=True)
            assert not leaked, "processes still running after fleet.down(): %s" % leaked


@pytest.fixture(scope="module")
def board(module_fleet):
    """One running virtual board shared by a whole test module."""
    return module_fleet.up(1)[0]


@pytest.fixture
def grid(run_cli, tmp_path, monkeypatch):
    """``openheap up --nodes 5`` in a private home (OPENHEAP_HOME), and
    ``openheap down`` afterwards; yields the home."""
    home = tmp_path / "home"
    monkeypatch.setenv("OPENHEAP_HOME", str(home))
    run_cli("up", "--nodes", "5", timeout=120)
    try:
        yield home
    finally:
        run_cli("down", check=False, timeout=60)
