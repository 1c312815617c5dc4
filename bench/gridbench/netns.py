"""Processes in the benchmark's network namespace: finding and killing them,
their memory (VmRSS / VmHWM) and CPU time, and the CPU used by everyone else."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def netns_ino(pid="self") -> int | None:
    try:
        return os.stat("/proc/%s/ns/net" % pid).st_ino
    except OSError:
        return None


def pids_in_netns(ino: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and netns_ino(d) == ino:
            out.append(int(d))
    return out


def kill_netns(ino: int, exclude=(), grace: float = 3.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process in network namespace ``ino``
    except ``exclude``. Refuses to touch the namespace we were started in."""
    if ino is None:
        return []
    victims = [p for p in pids_in_netns(ino) if p not in exclude]
    for p in victims:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(netns_ino(p) == ino for p in victims):
        time.sleep(0.1)
    for p in victims:
        if netns_ino(p) == ino:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
    return victims


def read_status(pid: int) -> dict:
    """VmRSS / VmHWM of ``pid`` in kB ({} if it is gone)."""
    out = {}
    try:
        for line in Path("/proc/%d/status" % pid).read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    except (OSError, ValueError):
        pass
    return out


def reset_hwm(pid: int) -> bool:
    """Reset the peak resident set (VmHWM) of ``pid`` to its current RSS."""
    try:
        Path("/proc/%d/clear_refs" % pid).write_text("5")
        return True
    except OSError:
        return False


def cpu_ticks(pid) -> int:
    try:
        st = Path("/proc/%s/stat" % pid).read_text()
        f = st[st.rindex(")") + 2:].split()
        return int(f[11]) + int(f[12])
    except (OSError, ValueError, IndexError):
        return 0


def cpu_snapshot() -> dict:
    snap = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = Path("/proc/%s/stat" % d).read_text()
            except OSError:
                continue
            name = st[st.index("(") + 1:st.rindex(")")]
            f = st[st.rindex(")") + 2:].split()
            # identity = (pid, start time): kernel threads rename themselves
            snap[int(d)] = (name, int(f[11]) + int(f[12]), netns_ino(d), int(f[19]))
    return snap


def other_cpu(before: dict, after: dict, our_ns: int, ours=()) -> tuple[float, list]:
    """CPU-seconds used between two snapshots by processes outside our namespace."""
    hz = os.sysconf("SC_CLK_TCK")
    per = []
    for pid, (name, t1, ns, start) in after.items():
        if ns == our_ns or pid in ours:
            continue
        b = before.get(pid)
        t0 = b[1] if b is not None and b[3] == start else 0
        if t1 - t0 > 0:
            per.append(((t1 - t0) / hz, name, pid))
    per.sort(reverse=True)
    return sum(x[0] for x in per), per[:3]


def busy_others(seconds: float, our_ns, ours=()) -> float:
    a = cpu_snapshot()
    time.sleep(seconds)
    return other_cpu(a, cpu_snapshot(), our_ns, ours)[0] / seconds
