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
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from benchlib import append_results, cpu_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
OPENHEAP = VENV_BIN / "openheap" if (VENV_BIN / "openheap").exists() else ROOT / ".venv" / "bin" / "openheap"
TAHOE_VENV = HERE / ".tahoe-venv"
TAHOE = TAHOE_VENV / "bin" / "tahoe"
NS_ENV = "OPENHEAP_BENCH_NETNS_FILE"
MIB = 1 << 20
K, N, HAPPY, NODES = 3, 10, 7, 10


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd: list[str], check=True, timeout=60, **kw) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, cmd)), r.returncode, (r.stderr or r.stdout).strip()[:500]))
    return r.stdout


# --------------------------------------------------------------------------
# processes and the namespace


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


class Cli:
    """One CLI process, timed; its peak RSS from wait4's rusage."""

    def __init__(self, cmd: list[str], env=None, timeout: float = 600):
        self.cmd, self.env, self.timeout = [str(c) for c in cmd], env, timeout
        self.p = None

    def run(self) -> dict:
        t0 = time.perf_counter()
        self.p = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=self.env, start_new_session=True)
        out, err = [], []
        tout = threading.Thread(target=lambda: out.append(self.p.stdout.read()), daemon=True)
        terr = threading.Thread(target=lambda: err.append(self.p.stderr.read()), daemon=True)
        tout.start()
        terr.start()
        deadline = time.monotonic() + self.timeout
        status = ru = None
        try:
            while True:
                pid, status, ru = os.wait4(self.p.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("%s took longer than %d s" % (" ".join(self.cmd[:3]), self.timeout))
                time.sleep(0.005)
        finally:
            if status is None:
                self.kill()
        dt = time.perf_counter() - t0
        self.p.returncode = os.waitstatus_to_exitcode(status)
        tout.join(5)
        terr.join(5)
        return {"seconds": dt, "rc": self.p.returncode, "maxrss_kb": ru.ru_maxrss,
                "stdout": (out[0] if out else b"").decode(errors="replace"),
                "stderr": (err[0] if err else b"").decode(errors="replace")}

    def kill(self):
        if self.p is not None and self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except OSError:
                pass
            self.p.wait()


# --------------------------------------------------------------------------
# counting bytes on loopback


def lo_rx_drop() -> int:
    """Packets lo dropped on receive in THIS namespace (backlog overflow:
    loopback hands every packet to the per-CPU backlog, netdev_max_backlog)."""
    for line in Path("/proc/self/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[3])
    return 0


def lo_dev() -> tuple[int, int]:
    """(tx_bytes, tx_packets) of ``lo`` in THIS network namespace.

    /proc/net/dev is per namespace; /sys/class/net/lo/statistics is not (sysfs
    stays mounted for the namespace it was mounted in, so after ``unshare
    --net`` it still shows the host's ``lo``)."""
    for line in Path("/proc/self/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            f = rest.split()
            return int(f[8]), int(f[9])
    raise RuntimeError("no lo in /proc/net/dev")


def snmp() -> dict:
    """Protocol counters of this namespace (/proc/net/snmp and /proc/net/netstat)."""
    out = {}
    for fn in ("snmp", "netstat"):
        lines = Path("/proc/self/net/" + fn).read_text().splitlines()
        for a, b in zip(lines[::2], lines[1::2]):
            proto = a.split(":")[0]
            for k, v in zip(a.split()[1:], b.split()[1:]):
                out[proto + "." + k] = int(v)
    return out


SNMP_KEYS = ("Tcp.OutSegs", "Tcp.RetransSegs", "TcpExt.TCPLossProbes", "TcpExt.TCPTimeouts", "TcpExt.TCPSynRetrans",
             "TcpExt.TCPFastRetrans", "TcpExt.TCPSlowStartRetrans", "Udp.OutDatagrams",
             "Udp.InErrors", "Udp.RcvbufErrors", "Udp.SndbufErrors", "Udp.NoPorts")


class Wire:
    """Loopback counters: /proc/net/dev for everything, an nftables table
    (``inet openheap_bench``, input hook) for the local HTTP API port.

    The input hook, not output: on output, netfilter sees a TCP send before
    software segmentation (one skb of up to 64 KiB even with gso off), so it
    would miss the headers of all but one segment; every packet lo carries is
    received once, segmented, and the input hook counts it at the IP level."""

    TABLE = "openheap_bench"

    def __init__(self):
        self.link_hdr = 0.0  # bytes per packet that tx_bytes counts beyond the IP packet (calibrated)
        sh(["nft", "add", "table", "inet", self.TABLE])
        sh(["nft", "add", "chain", "inet", self.TABLE, "inp", "{ type filter hook input priority 0; policy accept; }"])
        self.set_api_port(None)

    def set_api_port(self, port: int | None):
        self.api_port = port
        sh(["nft", "flush", "chain", "inet", self.TABLE, "inp"])
        sh(["nft", "add", "rule", "inet", self.TABLE, "inp", "iifname", "lo", "counter", "comment", '"all"'])
        if port:
            for d in ("dport", "sport"):
                sh(["nft", "add", "rule", "inet", self.TABLE, "inp", "iifname", "lo", "tcp", d, str(port),
                    "counter", "comment", '"api_%s"' % d])

    def nft(self) -> dict:
        data = json.loads(sh(["nft", "-j", "list", "chain", "inet", self.TABLE, "inp"]))
        out = {}
        for item in data.get("nftables", []):
            rule = item.get("rule")
            if rule:
                for e in rule.get("expr", []):
                    if "counter" in e:
                        out[rule.get("comment")] = (e["counter"]["bytes"], e["counter"]["packets"])
        return out

    def read(self, nft=True) -> dict:
        b, p = lo_dev()
        r = {"t": time.perf_counter(), "dev_bytes": b, "dev_pkts": p, "rx_drop": lo_rx_drop()}
        r.update({k: v for k, v in snmp().items() if k in SNMP_KEYS})
        if nft:
            c = self.nft()
            r["nft_bytes"], r["nft_pkts"] = c.get("all", (0, 0))
            r["api_bytes"] = sum(c.get(k, (0, 0))[0] for k in ("api_dport", "api_sport"))
            r["api_pkts"] = sum(c.get(k, (0, 0))[1] for k in ("api_dport", "api_sport"))
        return r

    def delta(self, a: dict, b: dict) -> dict:
        d = {k: b[k] - a[k] for k in b if k in a}
        d["seconds"] = d.pop("t")
        d["ip_bytes"] = d["dev_bytes"] - self.link_hdr * d["dev_pkts"]
        if "api_bytes" in d:
            d["grid_bytes"] = d["ip_bytes"] - d["api_bytes"]
            d["grid_pkts"] = d["dev_pkts"] - d["api_pkts"]
        return d


def setup_lo() -> dict:
    """lo up, MTU 1500, offloads off; returns what ethtool then reports."""
    sh(["ip", "link", "set", "lo", "up"])
    sh(["ip", "link", "set", "lo", "mtu", "1500"])
    sh(["ethtool", "-K", "lo", "tso", "off", "gso", "off", "gro", "off"])
    feats = {}
    for line in sh(["ethtool", "-k", "lo"]).splitlines():
        k, _, v = line.strip().partition(":")
        if k in ("tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload"):
            feats[k] = v.strip().split()[0]
    mtu = int(sh(["ip", "-o", "link", "show", "lo"]).split(" mtu ")[1].split()[0])
    if mtu != 1500 or any(v != "off" for v in feats.values()):
        raise RuntimeError("lo is not set up as asked: mtu %s, %s" % (mtu, feats))
    return {"mtu": mtu, **feats}


def calibrate(wire: Wire) -> dict:
    """Send known traffic and see what the counters count.

    UDP: 1000 datagrams of 1000 payload bytes (IP level: 1028 B each).
    TCP: 1 MB over one connection (with MTU 1500 and no offload, at least
    1e6/1448 data segments; the average packet size shows the MTU is in force).
    """
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a = wire.read()
    for _ in range(1000):
        tx.sendto(b"\0" * 1000, rx.getsockname())
        rx.recv(2048)
    b = wire.read()
    rx.close()
    tx.close()
    d = wire.delta(a, b)
    dev_per = d["dev_bytes"] / d["dev_pkts"]
    nft_per = d["nft_bytes"] / max(1, d["nft_pkts"])
    res = {"udp_dgrams": 1000, "udp_payload": 1000, "dev_pkts": d["dev_pkts"], "dev_bytes_per_pkt": dev_per,
           "nft_bytes_per_pkt": nft_per, "link_hdr": dev_per - 1028}
    if d["dev_pkts"] != 1000 or abs(nft_per - 1028) > 0.01:
        raise RuntimeError("calibration: 1000 UDP datagrams of 1000 B counted as %s" % res)
    if res["link_hdr"] not in (0.0, 14.0):
        raise RuntimeError("calibration: lo counts %.2f bytes per 1028-byte IP packet" % dev_per)
    wire.link_hdr = res["link_hdr"]
    # TCP
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cl = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    got = [0]

    def drain():
        while True:
            x = conn.recv(1 << 16)
            if not x:
                break
            got[0] += len(x)

    th = threading.Thread(target=drain)
    a = wire.read()
    th.start()
    cl.sendall(b"\0" * 1000000)
    cl.shutdown(socket.SHUT_WR)
    th.join()
    conn.close()
    cl.close()
    srv.close()
    time.sleep(0.2)
    b = wire.read()
    d = wire.delta(a, b)
    res["tcp_payload"] = got[0]
    res["tcp_pkts"] = d["dev_pkts"]
    res["tcp_nft_pkts"], res["tcp_nft_bytes"] = d["nft_pkts"], d["nft_bytes"]
    if d["nft_pkts"] != d["dev_pkts"] or d["nft_bytes"] != d["ip_bytes"]:
        raise RuntimeError("calibration: TCP counted %d packets / %d bytes by lo but %d / %d by nftables" % (
            d["dev_pkts"], d["ip_bytes"], d["nft_pkts"], d["nft_bytes"]))
    res["tcp_ip_bytes"] = d["ip_bytes"]
    res["tcp_wire_per_byte"] = d["ip_bytes"] / got[0]
    if d["dev_pkts"] < 1000000 / 1448:
        raise RuntimeError("calibration: 1 MB of TCP took only %d packets: MTU or offload not in force" % d["dev_pkts"])
    return res


def measure_idle(wire: Wire, seconds: float, our_ns: int) -> dict:
    """Traffic and CPU of the grid while nothing is asked of it."""
    pids = [p for p in pids_in_netns(our_ns) if p != os.getpid()]
    c0 = {p: cpu_ticks(p) for p in pids}
    a = wire.read()
    time.sleep(seconds)
    b = wire.read()
    d = wire.delta(a, b)
    cpu = sum(cpu_ticks(p) - c0[p] for p in pids) / os.sysconf("SC_CLK_TCK")
    return {"seconds": d["seconds"], "bytes_per_s": d["grid_bytes"] / d["seconds"], "pkts_per_s": d["grid_pkts"] / d["seconds"],
            "cpu_share": cpu / d["seconds"], "tcp_retrans": d.get("Tcp.RetransSegs", 0)}


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


def http_upload(method: str, port: int, url: str, path: Path, headers: dict, timeout: float) -> tuple[int, bytes]:
    size = path.stat().st_size
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, blocksize=1 << 16)
    try:
        with open(path, "rb") as f:
            c.request(method, url, body=f, headers={"Content-Length": str(size), **headers})
            r = c.getresponse()
            return r.status, r.read()
    finally:
        c.close()


def http_download(port: int, url: str, out: Path, headers: dict, timeout: float) -> tuple[int, str, int]:
    """GET to a file; (status, sha256, bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", url, headers=headers)
        r = c.getresponse()
        if r.status != 200:
            return r.status, r.read()[:300].decode(errors="replace"), 0
        h = hashlib.sha256()
        n = 0
        with open(out, "wb") as f:
            while chunk := r.read(1 << 16):
                h.update(chunk)
                f.write(chunk)
                n += len(chunk)
        return r.status, h.hexdigest(), n
    finally:
        c.close()


# --------------------------------------------------------------------------
# the two systems


class Openheap:
    name = "openheap"

    def __init__(self, tmp: Path, max_size: int, files_per_board: float):
        self.home = tmp / "ohhome"
        self.boards = tmp / "boards"
        self.env = dict(os.environ, OPENHEAP_BOARDS=str(self.boards))
        self.env.pop("OPENHEAP_HOME", None)
        share = -(-max_size // K)
        # a share is the ciphertext / k plus hash trees (~0.4 % for big files)
        self.max_share = max(MIB, -(-(int(share * 1.02) + MIB) // 4096) * 4096)
        fs = int(files_per_board * share * 1.15) + 8 * MIB
        self.fs_size = -(-fs // 4096) * 4096
        self.pid = self.api_port = self.token = None
        self.up_out = ""
        self.note = ""

    def cmd(self, *args) -> list[str]:
        return [str(OPENHEAP), "--home", str(self.home), *args]

    def start(self):
        shutil.copytree(ROOT / "boards", self.boards)
        vpath = self.boards / "virtual.json"
        v = json.loads(vpath.read_text())
        if v["max_share"] < self.max_share:
            self.note = "virtual board max_share raised from %d to %d bytes (copy of boards/ via OPENHEAP_BOARDS); " % (
                v["max_share"], self.max_share)
            v["max_share"] = self.max_share
        self.note += "boards' filesystem %d bytes (--fs-size)" % self.fs_size
        vpath.write_text(json.dumps(v, indent=2) + "\n")
        r = Cli(self.cmd("up", "--nodes", str(NODES), "--board", "virtual", "--fs-size", str(self.fs_size), "--wait", "60"),
                env=self.env, timeout=180).run()
        self.up_out = r["stdout"] + r["stderr"]
        if r["rc"]:
            raise RuntimeError("openheap up failed (%d): %s" % (r["rc"], self.up_out.strip()[-800:]))
        info = json.loads((self.home / "coordinator" / "api.json").read_text())
        self.pid, self.api_port = int(info["pid"]), int(info["api_port"])
        self.token = (self.home / "coordinator" / "token").read_text().strip()
        deadline = time.monotonic() + 60
        while True:  # every board registered with room for a share
            r = Cli(self.cmd("nodes"), env=self.env, timeout=60).run()
            reg = r["stdout"].count(" registered ")
            if reg >= NODES:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("only %d of %d boards registered:\n%s" % (reg, NODES, r["stdout"]))
            time.sleep(1)

    def stop(self):
        try:
            r = Cli(self.cmd("down"), env=self.env, timeout=90).run()
            if r["rc"]:
                log("openheap down failed:", (r["stderr"] or r["stdout"]).strip()[:300])
        except Exception as e:
            log("openheap down:", e)

    def cli_put(self, path: Path) -> dict:
        r = Cli(self.cmd("put", path, "-k", str(K), "-n", str(N), "--happy", str(HAPPY)), env=self.env,
                timeout=self.timeout(path)).run()
        lines = r["stdout"].strip().splitlines()
        r["cap"] = lines[-1].strip() if r["rc"] == 0 and lines else None
        return r

    def cli_get(self, cap: str, out: Path, size: int) -> dict:
        return Cli(self.cmd("get", cap, "-o", out), env=self.env, timeout=self.timeout(size)).run()

    def api_put(self, path: Path) -> dict:
        q = urllib.parse.urlencode({"k": K, "n": N, "happy": HAPPY, "name": path.name})
        t = time.perf_counter()
        st, body = http_upload("POST", self.api_port, "/v1/files?" + q, path,
                               {"Authorization": "Bearer " + self.token, "Content-Type": "application/octet-stream",
                                "Accept": "application/json"}, self.timeout(path))
        r = {"seconds": time.perf_counter() - t, "rc": 0 if st in (200, 201) else st, "stderr": body[:300].decode(errors="replace")}
        r["cap"] = json.loads(body)["cap"] if r["rc"] == 0 else None
        return r

    def api_get(self, cap: str, out: Path, size: int) -> dict:
        t = time.perf_counter()
        st, digest, n = http_download(self.api_port, "/v1/files/" + urllib.parse.quote(cap, safe=":"), out,
                                      {"Authorization": "Bearer " + self.token,
                                       "Accept": "application/octet-stream, application/json"}, self.timeout(size))
        return {"seconds": time.perf_counter() - t, "rc": 0 if st == 200 else st, "sha256": digest, "bytes": n,
                "stderr": "" if st == 200 else digest}

    @staticmethod
    def timeout(x) -> float:
        size = x.stat().st_size if isinstance(x, Path) else x
        return max(300.0, size / 20e3)  # at least 20 kB/s

    def version(self) -> str:
        try:
            v = sh([str(OPENHEAP), "--version"]).strip()
        except Exception:
            v = "openheap ?"
        try:
            rev = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
            dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).strip()
            v += " (git %s%s)" % (rev, " + uncommitted changes" if dirty else "")
        except Exception:
            pass
        return v


class Tahoe:
    name = "tahoe"

    def __init__(self, tmp: Path):
        self.dir = tmp / "tahoe"
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        self.web_port = None
        self.pid = None
        self.client = self.dir / "client"

    def _create(self, args_list):
        ps = [subprocess.Popen([str(TAHOE), *a], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True) for a in args_list]
        for p, a in zip(ps, args_list):
            out = p.communicate(timeout=120)[0]
            if p.returncode:
                raise RuntimeError("tahoe %s failed: %s" % (a[0], out.decode(errors="replace")[-500:]))

    def _run(self, d: Path):
        lf = open(self.dir / (d.name + ".log"), "ab")
        self.logs.append(lf)
        # stdin stays an open pipe: 'tahoe run' exits when its stdin closes,
        # so the nodes also go if this process dies.
        self.procs.append(subprocess.Popen([str(TAHOE), "run", str(d)], stdin=subprocess.PIPE, stdout=lf, stderr=lf,
                                           start_new_session=True))

    def start(self):
        self.dir.mkdir(parents=True)
        ports = free_tcp_ports(NODES + 2)
        ip, self.web_port = ports[0], ports[1]
        intro = self.dir / "introducer"
        self._create([["create-introducer", "--listen=tcp", "--port=tcp:%d:interface=127.0.0.1" % ip,
                       "--location=tcp:127.0.0.1:%d" % ip, str(intro)]])
        self._run(intro)
        furl_path = intro / "private" / "introducer.furl"
        deadline = time.monotonic() + 60
        while not furl_path.exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError("the Tahoe introducer did not start; see %s" % (self.dir / "introducer.log"))
            time.sleep(0.2)
        furl = furl_path.read_text().strip()
        enc = ["--shares-needed=%d" % K, "--shares-happy=%d" % HAPPY, "--shares-total=%d" % N]
        nodes = [["create-node", "--listen=tcp", "--port=tcp:%d:interface=127.0.0.1" % p, "--location=tcp:127.0.0.1:%d" % p,
                  "--introducer=" + furl, "--nickname=s%02d" % i, "--webport=none", *enc, str(self.dir / ("s%02d" % i))]
                 for i, p in enumerate(ports[2:], 1)]
        nodes.append(["create-client", "--introducer=" + furl, "--nickname=client",
                      "--webport=tcp:%d:interface=127.0.0.1" % self.web_port, *enc, str(self.client)])
        self._create(nodes)
        for i in range(1, NODES + 1):
            self._run(self.dir / ("s%02d" % i))
        self._run(self.client)
        deadline = time.monotonic() + 120
        connected = 0
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=5)
                c.request("GET", "/?t=json")
                data = json.loads(c.getresponse().read())
                c.close()
                connected = sum(1 for s in data.get("servers", []) if s.get("connection_status") == "connected")
            except (OSError, ValueError, http.client.HTTPException):
                pass
            if connected >= NODES:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Tahoe client sees %d of %d storage servers; logs in %s" % (connected, NODES, self.dir))
            time.sleep(0.5)
        self.pid = int((self.client / "running.process").read_text().split()[0])

    def stop(self):
        for p in self.procs:
            try:
                p.stdin.close()  # 'tahoe run' stops when its stdin closes
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(3)
                except (OSError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    p.wait()
        for lf in self.logs:
            lf.close()

    def cli_put(self, path: Path) -> dict:
        r = Cli([TAHOE, "-d", self.client, "put", path], timeout=Openheap.timeout(path)).run()
        lines = r["stdout"].strip().splitlines()
        r["cap"] = lines[-1].strip() if r["rc"] == 0 and lines else None
        return r

    def cli_get(self, cap: str, out: Path, size: int) -> dict:
        return Cli([TAHOE, "-d", self.client, "get", cap, out], timeout=Openheap.timeout(size)).run()

    def api_put(self, path: Path) -> dict:
        t = time.perf_counter()
        st, body = http_upload("PUT", self.web_port, "/uri", path, {}, Openheap.timeout(path))
        r = {"seconds": time.perf_counter() - t, "rc": 0 if st in (200, 201) else st, "stderr": body[:300].decode(errors="replace")}
        r["cap"] = body.decode().strip() if r["rc"] == 0 else None
        return r

    def api_get(self, cap: str, out: Path, size: int) -> dict:
        t = time.perf_counter()
        st, digest, n = http_download(self.web_port, "/uri/" + urllib.parse.quote(cap, safe=":"), out, {}, Openheap.timeout(size))
        return {"seconds": time.perf_counter() - t, "rc": 0 if st == 200 else st, "sha256": digest, "bytes": n,
                "stderr": "" if st == 200 else digest}

    @staticmethod
    def version() -> str:
        try:
            return sh([str(TAHOE), "--version"]).strip().splitlines()[0]
        except Exception:
            return "tahoe-lafs ?"


def free_tcp_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


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


# --------------------------------------------------------------------------
# report


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def environment(a) -> dict:
    cpu = cpu_model("?")
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y"),
            "machine": platform.machine(), "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


def fmt_mbps(ops, size):
    xs = [size / o["seconds"] / 1e6 for o in ops if o["rc"] == 0]
    if not xs:
        return "failed", None
    m = statistics.median(xs)
    s = "%.2f" % m if m < 10 else "%.1f" % m
    if len(xs) > 1:
        s += " (%.2f–%.2f)" % (min(xs), max(xs)) if max(xs) < 10 else " (%.1f–%.1f)" % (min(xs), max(xs))
    bad = len(ops) - len(xs)
    if bad:
        s += ", %d of %d failed" % (bad, len(ops))
    return s, m


def wire_figs(ops, size, idle_rate):
    nets, gross = [], []
    for o in ops:
        if o["rc"] != 0:
            continue
        w = o["wire"]
        gross.append(w["grid_bytes"] / size)
        nets.append((w["grid_bytes"] - idle_rate * w["seconds"]) / size)
    return med(nets), med(gross)


def size_label(size):
    return "%g MiB" % (size / MIB) if size % (MIB // 4) == 0 else "%d B" % size


def report(a, R, env) -> str:
    L = []
    title = "`bench/bench_grid.py`" + (" --big" if a.big else "") + (" --quick" if a.quick else "")
    L.append("## %s — %s\n" % (env["date"], title))
    L.append("Machine: %s, %s, %d cores, kernel %s; Python %s; load average %s at the start, %s at the end; "
             "processes outside the benchmark's namespace used %.1f CPU-seconds during its %.0f s (%.0f%% of one core)%s.\n" % (
                 env["machine"], env["cpu"], env["cores"], env["kernel"], env["python"], "/".join(R["load_start"]),
                 "/".join(R["load_end"]), R["other_cpu_s"], R["elapsed_s"], 100 * R["other_cpu_s"] / max(1, R["elapsed_s"]),
                 "; busiest: " + ", ".join("%s (pid %d) %.1f s" % (n, p, s) for s, n, p in R["other_cpu_top"]) if R["other_cpu_top"] else ""))
    if a.big:
        return report_big(a, R, env, L)
    oh, th = R.get("openheap"), R.get("tahoe")
    vers = []
    if oh:
        vers.append(oh["version"])
    if th:
        vers.append(th["version"])
    L.append("Versions: %s. Network: private namespace, lo MTU %d, tso/gso/gro off. Settings: %s-of-%s, happy %d, %d storage nodes; "
             "sizes %s; %d runs each (median, min–max); run took %.0f s.\n" % (
                 "; ".join(vers), R["lo"]["mtu"], K, N, HAPPY, NODES, ", ".join(size_label(s) for s in a.sizes), a.runs, R["elapsed_s"]))
    cols = [("openheap", oh), ("Tahoe-LAFS", th)]
    L.append("| figure | %s | target (openheap) |" % " | ".join(c for c, r in cols if r))
    L.append("| --- | %s | --- |" % " | ".join("---" for c, r in cols if r))

    def ops_of(res, kind, iface, size):
        return [o for o in res["ops"] if o["kind"] == kind and o["iface"] == iface and o["size"] == size]

    def row(label, cells, target=""):
        L.append("| %s | %s | %s |" % (label, " | ".join(c for c, (n, r) in zip(cells, cols) if r), target))

    for size in a.sizes:
        sl = size_label(size)
        for kind in ("put", "get"):
            for iface in a.ifaces:
                cells, ms = [], []
                for n, res in cols:
                    if res:
                        s, m = fmt_mbps(ops_of(res, kind, iface, size), size)
                    else:
                        s, m = "", None
                    cells.append(s)
                    ms.append(m)
                tgt = ""
                if oh and th and ms[0] is not None and ms[1] is not None:
                    tgt = "> Tahoe: %s" % ("met" if ms[0] > ms[1] else "not met (%.0f%% of Tahoe)" % (100 * ms[0] / ms[1]))
                row("%s %s, %s, MB/s" % (kind, sl, "CLI" if iface == "cli" else "HTTP API"), cells, tgt)
        for kind in ("put", "get"):
            cells, nets = [], []
            for n, res in cols:
                if not res:
                    cells.append("")
                    nets.append(None)
                    continue
                parts = []
                allnet = []
                for iface in a.ifaces:
                    net, gross = wire_figs(ops_of(res, kind, iface, size), size, res["idle"]["bytes_per_s"])
                    if net is not None:
                        allnet.append(net)
                        parts.append("%.3f (gross %.3f)%s" % (net, gross, "" if len(a.ifaces) == 1 else " " + ("CLI" if iface == "cli" else "API")))
                cells.append("; ".join(parts) or "failed")
                nets.append(max(allnet) if allnet else None)
            limit = 1.1 * N / K if kind == "put" else 1.1
            tgt = "≤ %.2f" % limit
            if oh and nets[0] is not None:
                tgt += ": %s" % ("met" if nets[0] <= limit else "not met")
            row("%s %s, wire bytes per plaintext byte (IP level, grid traffic, idle subtracted)" % (kind, sl), cells, tgt)
        for kind in ("put", "get"):
            cells = []
            for n, res in cols:
                if not res:
                    cells.append("")
                    continue
                parts = []
                for iface in a.ifaces:
                    hw = [o["vmhwm_kb"] for o in ops_of(res, kind, iface, size) if o.get("vmhwm_kb")]
                    if hw:
                        parts.append("%.1f MB %s" % (max(hw) / 1000, "CLI" if iface == "cli" else "API"))
                cells.append(", ".join(parts))
            row("%s %s, peak memory of the coordinator / Tahoe client node (VmHWM during the op, max of runs)" % (kind, sl), cells)
        if "cli" in a.ifaces:
            cells = []
            for n, res in cols:
                if not res:
                    cells.append("")
                    continue
                parts = []
                for kind in ("put", "get"):
                    rs = [o["maxrss_kb"] for o in ops_of(res, kind, "cli", size) if o.get("maxrss_kb")]
                    parts.append("%s %.1f MB" % (kind, max(rs) / 1000) if rs else "%s ?" % kind)
                cells.append(", ".join(parts))
            row("%s, CLI process peak RSS" % sl, cells)
    cells = []
    for n, res in cols:
        if res:
            i = res["idle"]
            cells.append("%.0f B/s, %.1f packets/s, %.0f%% of a core (all grid processes); after the runs: %.0f B/s" % (
                i["bytes_per_s"], i["pkts_per_s"], 100 * i["cpu_share"], res["idle_after"]["bytes_per_s"]))
    row("idle grid traffic (%g s window, grid at rest)" % a.idle, cells_pad(cells, cols))
    cells = []
    for n, res in cols:
        if res:
            cells.append("%.1f MB at rest (VmRSS), %.1f MB after the runs" % (
                (res["rest"].get("VmRSS") or 0) / 1000, (res["end_rest"].get("VmRSS") or 0) / 1000))
    row("coordinator / Tahoe client node resident memory", cells_pad(cells, cols))
    cells = []
    for n, res in cols:
        if res:
            ops = res["ops"]
            cells.append("TCP retransmitted segments %d (of them tail-loss probes %d; retransmission timeouts %d); "
                         "UDP receive errors %d (buffer %d), no-port %d; packets lo dropped on receive (backlog full) %d" % (
                sum(o["wire"].get("Tcp.RetransSegs", 0) for o in ops), sum(o["wire"].get("TcpExt.TCPLossProbes", 0) for o in ops),
                sum(o["wire"].get("TcpExt.TCPTimeouts", 0) for o in ops), sum(o["wire"].get("Udp.InErrors", 0) for o in ops),
                sum(o["wire"].get("Udp.RcvbufErrors", 0) for o in ops), sum(o["wire"].get("Udp.NoPorts", 0) for o in ops),
                sum(o["wire"].get("rx_drop", 0) for o in ops)))
    row("over all timed operations", cells_pad(cells, cols))
    cells = []
    for n, res in cols:
        if res:
            ns = res.get("netstat", {})
            cells.append("retransmitted segments %d; the receiver reported %d duplicate segments (DSACK), %d reorderings seen "
                         "(TCPSACKReorder), %d out-of-order queued" % (
                             ns.get("Tcp.RetransSegs", 0), ns.get("TcpExt.TCPDSACKRecvSegs", 0),
                             ns.get("TcpExt.TCPSACKReorder", 0), ns.get("TcpExt.TCPOFOQueue", 0)))
    row("TCP while that system ran its operations (duplicates = spurious retransmissions after reordering, not losses)",
        cells_pad(cells, cols))
    cells = []
    for n, res in cols:
        if res:
            cells.append("%.1f s" % res["start_s"])
    row("grid start (`openheap up` / Tahoe create + run until the client sees 10 servers)", cells_pad(cells, cols))
    cells = []
    for n, res in cols:
        if res:
            cells.append("%.2f s (%.2f–%.2f)" % (med(res["cli_start"]), min(res["cli_start"]), max(res["cli_start"])))
    row("CLI process start: `openheap --version` / `tahoe --version`, median of 3", cells_pad(cells, cols))
    L.append("")
    obs = []
    if oh:
        # packets per operation: share data goes over CoAP over TCP (BERT
        # blocks) to boards that take it, over UDP (one datagram per 1 KiB
        # block) to the others; both counts include the local HTTP API's
        for size in a.sizes:
            for kind in ("put", "get"):
                ok = [o["wire"] for o in oh["ops"] if o["kind"] == kind and o["size"] == size and o["rc"] == 0]
                if ok:
                    dg = [w.get("Udp.OutDatagrams", 0) for w in ok]
                    seg = [w.get("Tcp.OutSegs", 0) for w in ok]
                    obs.append("openheap %s %s: %d TCP segments and %d UDP datagrams per operation (median, both "
                               "directions, the local HTTP API's included; share data travels in BERT blocks over "
                               "CoAP over TCP)" % (kind, size_label(size), med(seg), med(dg)))
        if oh.get("note"):
            obs.append("openheap: " + oh["note"])
    for n, res in cols:
        if res and res["failures"]:
            obs.append("%s failures: %s" % (n, "; ".join(res["failures"][:6])))
        if res and not all(o.get("hwm_reset", True) for o in res["ops"]):
            obs.append("%s: VmHWM could not be reset between operations: peaks are cumulative" % n)
    if oh and th:
        for size in a.sizes:
            for iface in a.ifaces:
                x = [o["wire"]["api_bytes"] / size for o in oh["ops"] if o["size"] == size and o["iface"] == iface and o["rc"] == 0]
                y = [o["wire"]["api_bytes"] / size for o in th["ops"] if o["size"] == size and o["iface"] == iface and o["rc"] == 0]
                if x and y:
                    obs.append("local HTTP API traffic (excluded above) per plaintext byte and operation, %s %s: openheap %.3f, Tahoe %.3f" % (
                        size_label(size), "CLI" if iface == "cli" else "API", med(x), med(y)))
    c = R["calib"]
    obs.append("counter check: 1000 UDP datagrams of 1000 B moved %.1f bytes each in lo's tx_bytes and %.1f in the nftables counter "
               "(IP level = 1028), so lo counts %g link-header bytes per packet here; 1 MB over TCP took %d packets, %.3f IP bytes per byte" % (
                   c["dev_bytes_per_pkt"], c["nft_bytes_per_pkt"], c["link_hdr"], c["tcp_pkts"], c["tcp_wire_per_byte"]))
    if obs:
        L.append("Observations:\n")
        L.extend("* " + o for o in obs)
        L.append("")
    L.append(METHOD % (ORDER_SEQUENTIAL if a.sequential else ORDER_TURNS))
    return "\n".join(L) + "\n"


def cells_pad(cells, cols):
    it = iter(cells)
    return [next(it, "") if r else "" for n, r in cols]


def report_big(a, R, env, L) -> str:
    b = R["big"]
    size = b["size"]
    L.append("Versions: %s. openheap only: one file of %d MB (random), 3-of-10, happy 7, on 10 virtual boards, through the CLI; %s; run took %.0f s.\n" % (
        b.get("version", "?"), size // 10**6, b.get("note", ""), R["elapsed_s"]))
    L.append("| figure | put | get |")
    L.append("| --- | --- | --- |")

    def both(fn):
        return " | ".join(fn(b[k]) if k in b else "—" for k in ("put", "get"))

    L.append("| time, MB/s | %s |" % both(lambda r: "%.0f s, %.3f MB/s%s" % (r["seconds"], size / r["seconds"] / 1e6, "" if r["rc"] == 0 else " (FAILED)")))
    L.append("| wire bytes per plaintext byte (IP level, grid traffic, idle subtracted; gross) | %s |" % both(
        lambda r: "%.3f (%.3f)" % ((r["wire"]["grid_bytes"] - b["idle"]["bytes_per_s"] * r["wire"]["seconds"]) / size, r["wire"]["grid_bytes"] / size)))

    def rss_stats(kind):
        s = [x[1] for x in b["samples"][kind] if x[1]]
        if not s:
            return "—"
        n = len(s)
        q = [s[int(n * f)] for f in (0.1, 0.5, 0.9)]
        return "%d samples: min %.1f, at 10/50/90%% of the time %.1f / %.1f / %.1f, max %.1f MB" % (
            n, min(s) / 1000, q[0] / 1000, q[1] / 1000, q[2] / 1000, max(s) / 1000)

    L.append("| coordinator VmRSS sampled every 0.5 s during the transfer | %s | %s |" % (rss_stats("put"), rss_stats("get")))
    L.append("| coordinator VmHWM during the transfer (reset at its start) | %s |" % both(lambda r: "%.1f MB" % (r["vmhwm_kb"] / 1000) if r.get("vmhwm_kb") else "?"))
    L.append("| coordinator VmRSS 2 s after | %s |" % " | ".join(
        "%.1f MB" % (b["after_" + k]["VmRSS"] / 1000) if b.get("after_" + k, {}).get("VmRSS") else "—" for k in ("put", "get")))
    L.append("| CLI process peak RSS (wait4 ru_maxrss) | %s |" % both(lambda r: "%.1f MB" % (r["maxrss_kb"] / 1000)))
    L.append("")
    L.append("Before the put the coordinator had VmRSS %.1f MB, VmHWM %.1f MB (since its start). Idle grid traffic %.0f B/s. Read back %s. %s\n" % (
        b["before"].get("VmRSS", 0) / 1000, b["before"].get("VmHWM", 0) / 1000, b["idle"]["bytes_per_s"],
        "identical" if b.get("verified") else "NOT verified", ("Failures: " + "; ".join(b["failures"])) if b["failures"] else ""))
    L.append(METHOD_BIG)
    return "\n".join(L) + "\n"


METHOD = """Method: everything ran in a private network namespace (`unshare --net`; `lo` up, MTU 1500, `ethtool -K lo tso off gso off gro off`), %s. openheap: `openheap up --nodes 10 --board virtual --fs-size ...` in a temporary home, `openheap put FILE -k 3 -n 10 --happy 7` / `openheap get CAP -o FILE`, and the coordinator's HTTP API (`POST /v1/files`, `GET /v1/files/<cap>`); memory is the coordinator daemon that `openheap up` starts (`openheap serve` in the background, pid from `api.json`). Tahoe-LAFS from PyPI in its own venv: one introducer, 10 storage nodes, one client node on 127.0.0.1 (`shares.needed/happy/total` 3/7/10), `tahoe put FILE` / `tahoe get CAP FILE` and its web API (`PUT /uri`, `GET /uri/<cap>`); memory is the client node. Each put stores a fresh random file (both systems encrypt convergently), each get reads it back to a file and is compared by SHA-256. MB/s = 10^6 bytes / wall time of the CLI process or HTTP request (so CLI figures include the process start, measured on its own as `--version`). Wire bytes: `lo` tx_bytes from `/proc/net/dev` (per namespace; `/sys/class/net` still shows the host's `lo` after `unshare --net`) minus the traffic to and from the local HTTP API port (CLI or benchmark ↔ coordinator / client node, counted by nftables rules on the input hook, where lo's packets arrive already segmented), i.e. the IP packets (headers included) between the coordinator / client node and the storage nodes, plus the grid's own background traffic during the operation; that background is measured over an idle window before the runs and subtracted at its rate × the operation's duration (the gross figure is given too). Memory: VmHWM from `/proc/<pid>/status`, reset before each operation by writing 5 to `/proc/<pid>/clear_refs`; CLI peak RSS from `wait4`'s `ru_maxrss`. Targets (issue): openheap ≤ 1.1 × n/k = 3.67 wire bytes per plaintext byte on put and ≤ 1.1 on get; throughput above Tahoe's."""

ORDER_SEQUENTIAL = "one system after the other (`--sequential`)"
ORDER_TURNS = ("both grids up at once, taking turns put-and-get pair by pair (openheap first in even-numbered pairs, "
               "Tahoe first in odd ones), the other grid's processes stopped with SIGSTOP meanwhile and resumed with "
               "SIGCONT %g s before their next pair, so that the machine's speed, which drifts over minutes on a shared "
               "host, weighs on both alike; each grid started, settled and measured its idle traffic while the other "
               "was stopped or not yet started" % RESUME_SETTLE)

METHOD_BIG = """Method: as for the grid comparison (private network namespace, `lo` MTU 1500 without offloads), openheap only: `openheap up --nodes 10` with boards big enough for one share of the file, one `openheap put FILE -k 3 -n 10 --happy 7` and one `openheap get CAP -o FILE` of a random file, compared by SHA-256. The coordinator's VmRSS and VmHWM were sampled every 0.5 s from `/proc/<pid>/status` during each transfer (VmHWM reset by `/proc/<pid>/clear_refs` before each); the CLI's peak RSS is `wait4`'s `ru_maxrss`. Memory that stays flat while the file is 10-100 times larger shows the path streams."""


RESULTS_HEADER = """# Benchmark results

Each section is one run of a benchmark in `bench/` (see `bench/README.md`),
appended by the benchmark itself; older sections are kept as they were.
"""


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
        a.results = str(HERE / "RESULTS.md")
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
