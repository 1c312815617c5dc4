"""Helpers shared by test modules (import as ``from ohtest import ...``;
``conftest`` is not importable by name when several folders have one)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _processes_under(home: Path) -> list[int]:
    """Pids whose command line mentions ``home`` (supervisors and boards of a test home)."""
    pids = []
    needle = str(home).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def reap(home: Path) -> list[int]:
    """SIGKILL every process left running from ``home``; return their pids."""
    pids = _processes_under(home)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


def wait_for(predicate, timeout=10.0, interval=0.05):
    """Poll ``predicate`` until it returns a true value; return it (or fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %g s" % timeout)
        time.sleep(interval)
