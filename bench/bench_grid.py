#!/usr/bin/env python3
"""openheap vs Tahoe-LAFS: a 3-of-10 grid on 10 storage nodes, side by side.

    .venv/bin/python bench/bench_grid.py            # full run (~3 min), appends to bench/RESULTS.md
    .venv/bin/python bench/bench_grid.py --quick    # smoke run (~1-2 min), prints only
    .venv/bin/python bench/bench_grid.py --big      # openheap only: one 200 MB file (~3 min), memory over time

Everything runs inside a private network namespace that the script makes
itself (it re-executes itself under ``unshare --net``), with ``lo`` brought
up at MTU 1500 and its segmentation/receive offloads turned off, so that
Tahoe's listeners on all interfaces stay private and TCP pays LAN-sized
packets. Root is needed (for the namespace, ``ethtool`` and ``nft``).

Both grids are up at once and take turns, a put and its get at a time, the
other grid's processes stopped (SIGSTOP) meanwhile, so that a drift in the
machine's speed weighs on both alike (``--sequential``: one system after the
other, never both running):

* openheap: ``openheap up --nodes 10 --board virtual --fs-size ...`` in a
  temporary home (``--home``), files stored with ``openheap put FILE -k 3 -n
  10 --happy 7`` (capability = last line of stdout) and read with
  ``openheap get CAP -o FILE``, then the same through the coordinator's HTTP
  API (``POST /v1/files``, ``GET /v1/files/<cap>``, bearer token from
  ``<home>/coordinator/token``); ``openheap down`` at the end. The virtual
  board's ``max_share`` (1 MiB) is too small for a 3-of-10 share of 8 MiB,
  so the boards are started from a copy of ``boards/`` (``OPENHEAP_BOARDS``)
  whose ``virtual.json`` has a larger ``max_share``; nothing else changes.
* Tahoe-LAFS (PyPI ``tahoe-lafs``, in its own venv ``bench/.tahoe-venv``
  made on first use, outside the namespace): one introducer, 10 storage
  nodes, one client node, all on 127.0.0.1, shares.needed=3, happy=7,
  total=10; ``tahoe put FILE`` / ``tahoe get CAP FILE`` and the web API
  (``PUT /uri``, ``GET /uri/<cap>``).

Figures: MB/s (10**6 B/s) of put and get of fresh random files (default 1
MiB and 8 MiB), median of 3 runs, CLI and HTTP API; bytes on the wire per
plaintext byte at the IP level (IP + TCP/UDP headers) between the
coordinator / client node and the storage nodes (all loopback traffic minus
the traffic to and from the local HTTP API port, counted by nftables), with
the grid's idle traffic measured and subtracted (gross figures reported
too); peak memory (VmHWM, reset before each operation through
``/proc/<pid>/clear_refs``) of the openheap coordinator and the Tahoe client
node; peak RSS of each CLI process; TCP retransmissions and UDP errors.

Cleanup: every process started is stopped in ``finally`` blocks, also on
Ctrl-C and SIGTERM; at the end the outer process kills whatever is still
running inside the namespace (and only there), and the namespace goes away.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import append_results
# the work is done in bench/gridbench/ (one job a module; see its __init__.py)
from gridbench.common import BENCH, NS_ENV, OPENHEAP, TAHOE, TAHOE_VENV, log, sh
from gridbench.netns import busy_others, cpu_snapshot, kill_netns, netns_ino, other_cpu
from gridbench.report import RESULTS_HEADER, environment, report
from gridbench.runner import run_big, run_interleaved, run_system
from gridbench.systems import Openheap, Tahoe
from gridbench.wire import Wire, calibrate, setup_lo


# --------------------------------------------------------------------------
# setup outside the namespace


def ensure_tools():
    missing = [t for t in ("ethtool", "nft") if shutil.which(t) is None]
    if missing:
        pkgs = {"ethtool": "ethtool", "nft": "nftables"}
        log("installing %s with apt-get" % ", ".join(pkgs[m] for m in missing))
        r = subprocess.run(["apt-get", "install", "-y", *(pkgs[m] for m in missing)], capture_output=True, text=True)
        if r.returncode:
            subprocess.run(["apt-get", "update"], capture_output=True)
            r = subprocess.run(["apt-get", "install", "-y", *(pkgs[m] for m in missing)], capture_output=True, text=True)
        still = [t for t in missing if shutil.which(t) is None]
        if still:
            raise SystemExit("bench_grid: %s missing and apt-get could not install it: %s" % (", ".join(still), r.stderr[-300:]))
    for t in ("unshare", "ip"):
        if shutil.which(t) is None:
            raise SystemExit("bench_grid: %s is needed (util-linux / iproute2)" % t)


def ensure_tahoe(version: str):
    if TAHOE.exists():
        try:
            have = sh([str(TAHOE), "--version"]).strip()
        except Exception:
            have = ""
        if have.endswith("/" + version) or not version:
            return
        log("bench/.tahoe-venv has %s, want %s: reinstalling" % (have, version))
    log("creating %s with tahoe-lafs%s (first use only; a few minutes)" % (TAHOE_VENV, "==" + version if version else ""))
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--clear", str(TAHOE_VENV)], check=True)
    subprocess.run([str(TAHOE_VENV / "bin" / "pip"), "install", "-q", "tahoe-lafs" + ("==" + version if version else "")], check=True)
    if not TAHOE.exists():
        raise SystemExit("bench_grid: pip did not install the tahoe command")


# --------------------------------------------------------------------------
# main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See bench/README.md.")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 MiB, 1 run, short idle window; writes nothing")
    p.add_argument("--sizes", help="comma-separated file sizes in bytes or with MiB/KiB (default 1MiB,8MiB; quick 1MiB)")
    p.add_argument("--runs", type=int, help="runs per figure (default 3; quick 1)")
    p.add_argument("--no-api", action="store_true", help="CLI only")
    p.add_argument("--no-cli", action="store_true", help="HTTP API only")
    p.add_argument("--only", choices=("openheap", "tahoe"), help="measure one system only")
    p.add_argument("--sequential", action="store_true",
                   help="one system after the other (default: both grids up, taking turns pair by pair, the other one stopped)")
    p.add_argument("--idle", type=float, help="idle-traffic window in seconds (default 10; quick 3)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds to let a fresh grid settle before measuring (default 3)")
    p.add_argument("--tahoe-version", default="1.20.0", help="tahoe-lafs version for bench/.tahoe-venv (default 1.20.0)")
    p.add_argument("--big", action="store_true", help="openheap only: put and get one big file (--big-mb), memory over time")
    p.add_argument("--big-mb", type=int, help="size of the big file in MB (default 200; quick 20)")
    p.add_argument("--big-timeout", type=float, default=7200, help="seconds allowed for each big transfer (default 7200)")
    p.add_argument("--progress", type=float, default=15.0, help="seconds between progress lines in --big (default 15)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds for other processes to use < 15%% of a core (default 0)")
    p.add_argument("--results", help="append the section to this file (default bench/RESULTS.md; a --quick run appends only when given)")
    p.add_argument("--no-results", action="store_true", help="append nothing")
    p.add_argument("--json", help="also write the raw figures here")
    a = p.parse_args(argv)
    q = a.quick
    a.sizes = [parse_size(s) for s in (a.sizes or ("1MiB" if q else "1MiB,8MiB")).split(",")]
    a.runs = a.runs or (1 if q else 3)
    a.idle = a.idle if a.idle is not None else (3.0 if q else 10.0)
    a.big_mb = a.big_mb or (20 if q else 200)
    a.ifaces = [i for i, off in (("cli", a.no_cli), ("api", a.no_api)) if not off]
    if not a.ifaces:
        p.error("--no-cli and --no-api together leave nothing to measure")
    if a.no_results:
        a.results = None
    elif a.results is None and not q:
        a.results = str(BENCH / "RESULTS.md")
    return a


def parse_size(s: str) -> int:
    s = s.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|kB|MB|GB)?", s)
    if not m:
        raise SystemExit("bad size %r" % s)
    mult = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "kB": 10**3, "MB": 10**6, "GB": 10**9}[m.group(2)]
    return int(float(m.group(1)) * mult)


def outer(argv) -> int:
    """Outside the namespace: install what is missing, re-run inside a new
    network namespace, and afterwards kill anything left in it."""
    a = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench_grid: run as root (it makes a network namespace and sets up lo with ethtool and nft)")
    ensure_tools()
    if not a.big and a.only != "openheap":
        ensure_tahoe(a.tahoe_version)
    if not OPENHEAP.exists():
        raise SystemExit("bench_grid: %s not found; run 'bash tools/setup.sh' first" % OPENHEAP)
    fd, nsfile = tempfile.mkstemp(prefix="openheap-bench-ns-")
    os.close(fd)
    env = dict(os.environ, **{NS_ENV: nsfile})
    p = subprocess.Popen(["unshare", "--net", "--", sys.executable, str(Path(__file__).resolve()), *argv], env=env)

    def forward(signum, frame):
        try:
            p.send_signal(signum)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    rc = None
    try:
        rc = p.wait()
    finally:
        try:
            ino = int(Path(nsfile).read_text().strip() or 0) or None
        except (OSError, ValueError):
            ino = None
        if ino is not None and ino != netns_ino():
            left = kill_netns(ino)
            if left:
                log("stopped %d process(es) left in the benchmark's namespace: %s" % (len(left), left))
        Path(nsfile).unlink(missing_ok=True)
    return rc if rc is not None else 1


_stopping = False


def _on_signal(signum, frame):
    global _stopping
    if _stopping:
        return  # already cleaning up: a second Ctrl-C must not cut the cleanup short
    _stopping = True
    raise KeyboardInterrupt("signal %d" % signum)


def inner(argv) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    our_ns = netns_ino()
    Path(os.environ[NS_ENV]).write_text(str(our_ns))
    t0 = time.monotonic()
    env = environment(a)
    R = {"load_start": Path("/proc/loadavg").read_text().split()[:3]}
    R["lo"] = setup_lo()
    wire = Wire()
    R["calib"] = calibrate(wire)
    log("namespace ready: lo MTU %d, offloads off; lo counts %g link-header bytes per packet" % (R["lo"]["mtu"], R["calib"]["link_hdr"]))
    busy = busy_others(1.0, our_ns, {os.getppid()})
    deadline = time.monotonic() + a.wait_quiet
    while busy > 0.15 and time.monotonic() < deadline:
        log("waiting for other processes to calm down (they use %.0f%% of a core)" % (100 * busy))
        busy = busy_others(5.0, our_ns, {os.getppid()})
    if busy > 0.15:
        log("warning: other processes use %.0f%% of a core; the figures will be low and noisy" % (100 * busy))
    R["busy_at_start"] = busy
    cpu0 = cpu_snapshot()
    tmp = Path(tempfile.mkdtemp(prefix="openheap-bench-grid-"))
    ok = False
    try:
        if a.big:
            R["big"] = run_big(a, wire, tmp, our_ns)
        else:
            max_size = max(a.sizes)
            files = len(a.ifaces) * a.runs * sum(a.sizes) / max_size + 1  # in units of the largest file
            if not a.sequential and not a.only:
                R.update(run_interleaved(a, wire, tmp, our_ns, max_size, files))
            for which in (("openheap", "tahoe") if a.sequential or a.only else ()):
                if a.only and a.only != which:
                    continue
                sysobj = Openheap(tmp, max_size, files) if which == "openheap" else Tahoe(tmp)
                try:
                    R[which] = run_system(sysobj, a, wire, tmp, our_ns)
                finally:
                    log("[%s] stopping the grid" % which)
                    sysobj.stop()
                    kill_netns(our_ns, exclude={os.getpid()})
        ok = True
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        left = kill_netns(our_ns, exclude={os.getpid()})
        if left:
            log("stopped %d leftover process(es)" % len(left))
        shutil.rmtree(tmp, ignore_errors=True)
    R["elapsed_s"] = time.monotonic() - t0
    R["load_end"] = Path("/proc/loadavg").read_text().split()[:3]
    R["other_cpu_s"], R["other_cpu_top"] = other_cpu(cpu0, cpu_snapshot(), our_ns, {os.getppid()})
    text = report(a, R, env)
    print(text)
    log("elapsed %.0f s" % R["elapsed_s"])
    if a.results and ok:
        log("appended to", append_results(a.results, text, RESULTS_HEADER))
    if a.json:
        Path(a.json).write_text(json.dumps({"env": env, "args": vars(a), "results": R}, indent=1, default=str))
    fails = sum(len(R[k]["failures"]) for k in ("openheap", "tahoe", "big") if k in R)
    return 1 if fails else 0


if __name__ == "__main__":
    if os.environ.get(NS_ENV):
        sys.exit(inner(sys.argv[1:]))
    sys.exit(outer(sys.argv[1:]))
