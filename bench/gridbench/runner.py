"""Running the measurements: timed put/get pairs on one grid
(``run_system``), on both grids taking turns (``run_interleaved``), and one
big file through openheap (``run_big``)."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

from .common import HAPPY, MIB, OPENHEAP, TAHOE, K, N, log
from .netns import pids_in_netns, read_status, reset_hwm
from .systems import Cli, Openheap, Tahoe
from .wire import Wire, lo_dev, measure_idle, snmp


# --------------------------------------------------------------------------
# files


def random_file(path: Path, size: int, progress=False) -> str:
    h = hashlib.sha256()
    t = time.monotonic()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, MIB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
            if progress and time.monotonic() - t > 10:
                t = time.monotonic()
                log("  writing the random file: %d of %d MB" % ((size - left) // 10**6, size // 10**6))
    return h.hexdigest()


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# measuring one system


def op(wire: Wire, mem_pid: int, fn, *args) -> dict:
    """Run one put/get with the counters and the memory peak around it."""
    hwm_reset = reset_hwm(mem_pid)
    a = wire.read()
    r = fn(*args)
    b = wire.read()
    r["wire"] = wire.delta(a, b)
    st = read_status(mem_pid)
    r["vmhwm_kb"] = st.get("VmHWM")
    r["hwm_reset"] = hwm_reset
    return r


def run_system(sysobj, a, wire: Wire, tmp: Path, our_ns: int) -> dict:
    R = {"ops": [], "failures": []}
    try:
        return _run_system(sysobj, a, wire, tmp, our_ns, R)
    finally:
        R["netstat"] = {k: v - R["netstat0"].get(k, 0) for k, v in snmp().items()
                        if v - R["netstat0"].get(k, 0)} if "netstat0" in R else {}


def _run_system(sysobj, a, wire, tmp, our_ns, R) -> dict:
    _start_system(sysobj, a, wire, our_ns, R)
    work = tmp / "files"
    work.mkdir(exist_ok=True)
    for size, run, iface in plan(a):
        _pair(sysobj, wire, R, size, run, iface, work)
    _end_system(a, wire, our_ns, R, sysobj)
    return R


def plan(a):
    """The (size, run, interface) of every put/get pair, in order."""
    return [(size, run, iface) for size in a.sizes for run in range(a.runs) for iface in a.ifaces]


def _start_system(sysobj, a, wire, our_ns, R) -> None:
    """Start a grid, let it settle, measure its idle traffic and the CLI's start."""
    t0 = time.monotonic()
    log("[%s] starting the grid" % sysobj.name)
    sysobj.start()
    R["start_s"] = time.monotonic() - t0
    R["version"] = sysobj.version()
    R["note"] = getattr(sysobj, "note", "")
    wire.set_api_port(sysobj.api_port if sysobj.name == "openheap" else sysobj.web_port)
    R["api_port"] = wire.api_port
    time.sleep(a.settle)
    R["rest"] = read_status(sysobj.pid)
    log("[%s] grid up in %.1f s; measuring %g s of idle traffic" % (sysobj.name, R["start_s"], a.idle))
    R["idle"] = measure_idle(wire, a.idle, our_ns)
    log("[%s] idle: %.0f B/s, %.1f packets/s, %.0f%% of a core" % (
        sysobj.name, R["idle"]["bytes_per_s"], R["idle"]["pkts_per_s"], 100 * R["idle"]["cpu_share"]))
    R["netstat0"] = snmp()
    exe = OPENHEAP if sysobj.name == "openheap" else TAHOE
    R["cli_start"] = [Cli([exe, "--version"], timeout=60).run()["seconds"] for _ in range(3)]


def _pair(sysobj, wire, R, size, run, iface, work) -> None:
    """One put of a fresh random file and one get of it, checked by SHA-256."""
    src = work / ("%s-%d-%s-%d.bin" % (sysobj.name, size, iface, run))
    dst = work / (src.name + ".out")
    digest = random_file(src, size)
    put = op(wire, sysobj.pid, getattr(sysobj, iface + "_put"), src)
    put.update(kind="put", iface=iface, size=size, run=run)
    R["ops"].append(put)
    if put["rc"] or not put.get("cap"):
        R["failures"].append("put %s %d B run %d: rc %s %s" % (iface, size, run, put["rc"], put.get("stderr", "").strip()[-300:]))
        log("[%s] FAILED put %s %d: %s" % (sysobj.name, iface, size, R["failures"][-1]))
        src.unlink()
        return
    get = op(wire, sysobj.pid, getattr(sysobj, iface + "_get"), put["cap"], dst, size)
    get.update(kind="get", iface=iface, size=size, run=run)
    ok = get["rc"] == 0 and dst.exists() and (get.get("sha256") or file_hash(dst)) == digest
    get["verified"] = ok
    if not ok:
        get["rc"] = get["rc"] or "mismatch"
        R["failures"].append("get %s %d B run %d: rc %s %s" % (iface, size, run, get["rc"], get.get("stderr", "").strip()[-300:]))
        log("[%s] FAILED get %s %d: %s" % (sysobj.name, iface, size, R["failures"][-1]))
    R["ops"].append(get)
    for o in (put, get):
        o.pop("stdout", None)
    log("[%s] %-3s %5.1f MiB run %d: put %.2f MB/s (%.2f B/B), get %.2f MB/s (%.2f B/B)%s" % (
        sysobj.name, iface, size / MIB, run + 1, size / put["seconds"] / 1e6, put["wire"]["grid_bytes"] / size,
        size / get["seconds"] / 1e6, get["wire"]["grid_bytes"] / size, "" if ok else " FAILED"))
    src.unlink(missing_ok=True)
    dst.unlink(missing_ok=True)


def _end_system(a, wire, our_ns, R, sysobj) -> None:
    R["end_rest"] = read_status(sysobj.pid)
    R["idle_after"] = measure_idle(wire, min(a.idle, 5.0), our_ns)


# --------------------------------------------------------------------------
# both systems at once, taking turns

RESUME_SETTLE = 0.5  # seconds a resumed grid gets (its overdue timers fire) before its next operation


class Turns:
    """Both grids up, one running: the other one's processes are stopped
    (SIGSTOP) until its turn (SIGCONT). Tahoe's processes are the process
    groups of its nodes (each started in a session of its own); openheap's
    are the rest of the namespace but this process."""

    def __init__(self, our_ns: int, tahoe: "Tahoe"):
        self.our_ns, self.tahoe = our_ns, tahoe
        self._snmp0: dict = {}

    def pids(self, which: str) -> list[int]:
        groups = {p.pid for p in self.tahoe.procs}
        out = []
        for p in pids_in_netns(self.our_ns):
            if p == os.getpid():
                continue
            try:
                g = os.getpgid(p)
            except OSError:
                continue
            if (g in groups) == (which == "tahoe"):
                out.append(p)
        return out

    @staticmethod
    def _signal(pids, sig) -> None:
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass

    def pause(self, which: str, R: dict) -> None:
        """Stop ``which``'s processes; what TCP did meanwhile adds to R["netstat"]."""
        now = snmp()
        for k, v in now.items():
            d = v - self._snmp0.get(k, v)
            if d:
                R["netstat"][k] = R["netstat"].get(k, 0) + d
        self._signal(self.pids(which), signal.SIGSTOP)

    def resume(self, which: str) -> None:
        self._signal(self.pids(which), signal.SIGCONT)
        time.sleep(RESUME_SETTLE)
        self._snmp0 = snmp()

    def resume_all(self) -> None:
        self._signal([p for p in pids_in_netns(self.our_ns) if p != os.getpid()], signal.SIGCONT)


def run_interleaved(a, wire: Wire, tmp: Path, our_ns: int, max_size: int, files: float) -> dict:
    """Both grids up at once, taking turns pair by pair (a put and its get),
    the other one stopped meanwhile, openheap first in even-numbered pairs and
    Tahoe first in odd ones: the machine's speed, which drifts over minutes on
    a shared host, then weighs on both alike."""
    systems = {"openheap": Openheap(tmp, max_size, files), "tahoe": Tahoe(tmp)}
    R = {n: {"ops": [], "failures": [], "netstat": {}} for n in systems}
    turns = Turns(our_ns, systems["tahoe"])
    work = tmp / "files"
    work.mkdir(exist_ok=True)
    started = []
    try:
        for name, sysobj in systems.items():  # each starts, settles and idles alone
            started.append(name)
            _start_system(sysobj, a, wire, our_ns, R[name])
            turns._snmp0 = R[name]["netstat0"]  # (TCP counts from here, as in a sequential run)
            turns.pause(name, R[name])
        for i, (size, run, iface) in enumerate(plan(a)):
            for name in (("openheap", "tahoe") if i % 2 == 0 else ("tahoe", "openheap")):
                turns.resume(name)
                wire.set_api_port(R[name]["api_port"])
                _pair(systems[name], wire, R[name], size, run, iface, work)
                turns.pause(name, R[name])
        for name, sysobj in systems.items():
            turns.resume(name)
            wire.set_api_port(R[name]["api_port"])
            _end_system(a, wire, our_ns, R[name], sysobj)
            turns.pause(name, R[name])
    finally:
        turns.resume_all()
        for name in started:
            log("[%s] stopping the grid" % name)
            systems[name].stop()
    return R


# --------------------------------------------------------------------------
# the big file (openheap only)


def run_big(a, wire: Wire, tmp: Path, our_ns: int) -> dict:
    size = a.big_mb * 10**6
    oh = Openheap(tmp, size, 1)
    R = {"size": size, "failures": [], "samples": {"put": [], "get": []}}
    try:
        log("[big] starting openheap with 10 boards (max_share %d, fs %d bytes each)" % (oh.max_share, oh.fs_size))
        oh.start()
        R["version"] = oh.version()
        R["note"] = oh.note
        wire.set_api_port(oh.api_port)
        time.sleep(a.settle)
        R["before"] = read_status(oh.pid)
        R["idle"] = measure_idle(wire, a.idle, our_ns)
        src, dst = tmp / "big.bin", tmp / "big.out"
        log("[big] writing %d MB of random data" % (size // 10**6))
        digest = random_file(src, size, progress=True)
        for kind in ("put", "get"):
            reset_hwm(oh.pid)
            cmd = oh.cmd("put", src, "-k", str(K), "-n", str(N), "--happy", str(HAPPY)) if kind == "put" else \
                oh.cmd("get", R["cap"], "-o", dst)
            cli = Cli(cmd, env=oh.env, timeout=a.big_timeout)
            stop = threading.Event()
            samples = R["samples"][kind]
            # lo carries the grid traffic (about n/k x size for a put, 1 x for a get)
            # plus the CLI <-> coordinator HTTP copy of the file (1 x size)
            expect = size * ((N / K if kind == "put" else 1.0) + 1.0)

            def sampler():
                t0 = time.perf_counter()
                b0 = lo_dev()[0]
                last = t0
                while not stop.wait(0.5):
                    now = time.perf_counter()
                    st = read_status(oh.pid)
                    cst = read_status(cli.p.pid) if cli.p is not None else {}
                    moved = lo_dev()[0] - b0
                    samples.append((round(now - t0, 2), st.get("VmRSS"), st.get("VmHWM"), cst.get("VmRSS"), moved))
                    if now - last >= a.progress:
                        last = now
                        frac = min(1.0, moved / expect)
                        eta = (now - t0) * (1 - frac) / frac if frac > 0.01 else float("nan")
                        log("[big] %s: %4.0f s, ~%3.0f%% (%.0f MB on lo), coordinator RSS %s kB, CLI RSS %s kB, ETA ~%.0f s" % (
                            kind, now - t0, 100 * frac, moved / 1e6, st.get("VmRSS"), cst.get("VmRSS"), eta))

            th = threading.Thread(target=sampler, daemon=True)
            a0 = wire.read()
            th.start()
            try:
                r = cli.run()
            finally:
                stop.set()
                th.join()
            r["wire"] = wire.delta(a0, wire.read())
            r["vmhwm_kb"] = read_status(oh.pid).get("VmHWM")
            if kind == "put":
                lines = r["stdout"].strip().splitlines()
                R["cap"] = lines[-1].strip() if r["rc"] == 0 and lines else None
            r.pop("stdout", None)
            R[kind] = r
            log("[big] %s: %.1f s, %.3f MB/s, rc %s" % (kind, r["seconds"], size / r["seconds"] / 1e6, r["rc"]))
            if r["rc"] or (kind == "put" and not R.get("cap")):
                R["failures"].append("%s: rc %s %s" % (kind, r["rc"], r["stderr"].strip()[-300:]))
                break
            time.sleep(2)
            R["after_" + kind] = read_status(oh.pid)
            if kind == "get":
                R["verified"] = file_hash(dst) == digest
                if not R["verified"]:
                    R["failures"].append("get: the file read back differs from the one stored")
        for p in (src, dst):
            p.unlink(missing_ok=True)
    finally:
        oh.stop()
    return R
