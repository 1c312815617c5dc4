"""Is a process still running? One answer for the coordinator and the fleet."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid, *markers: str, foreign: bool = True) -> bool:
    """True if ``pid`` runs, is not a zombie, and its command line holds every
    one of ``markers`` (which guards against a recycled pid).

    ``foreign`` is the answer for a process of another user (``kill(pid, 0)``
    says EPERM): it runs, but it is not one of ours.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return foreign
    if not os.path.isdir("/proc/self"):
        return True  # no procfs (not Linux): trust kill(0)
    proc = Path("/proc/%d" % pid)
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rindex(")") + 2] in "ZXx":
            return False  # a zombie has finished
        if not markers:
            return True
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except (OSError, ValueError, IndexError):
        return False  # gone between kill(0) and here
    return all(m in cmdline for m in markers)
