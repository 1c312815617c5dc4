"""Counting bytes on loopback: ``lo`` set up at MTU 1500 without offloads,
its counters and nftables' (the ``Wire``), checked against known traffic,
and the grid's idle traffic."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from .common import sh
from .netns import cpu_ticks, pids_in_netns


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
