"""Run inside a network namespace of its own (``unshare --net``): a grid of
virtual boards whose loopback drops a share of all packets, TCP and UDP, in
both directions, then a put and a get through the real CLI.

    unshare --net python lossy_netns.py HOME LOSS_PERCENT FILE

``openheap up`` runs before the loss is switched on (nftables: ``numgen
random`` on the input hook, every packet between the coordinator and the
boards; the CLI's HTTP API port is spared). The input hook, not output: a
datagram dropped on output fails its sender's ``sendto`` with EPERM, which
a lossy link never does; dropped on input, it is lost silently, as on a
radio. Prints one JSON line: the exit
status and time of put and get, whether the bytes came back identical, the
packets dropped, and the TCP segments retransmitted meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TABLE = "openheap_loss"


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout


def tcp_retrans() -> int:
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Tcp:")]
    return int(lines[1][lines[0].index("RetransSegs")])


def dropped() -> int:
    data = json.loads(sh("nft", "-j", "list", "chain", "inet", TABLE, "inp"))
    return sum(e["counter"]["packets"] for item in data["nftables"] if "rule" in item
               for e in item["rule"]["expr"] if "counter" in e)


def main() -> int:
    home, loss, src = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    script = Path(sys.executable).parent / "openheap"
    cli = ([str(script)] if script.is_file() else [sys.executable, "-m", "openheap.cli.main"]) + ["--home", str(home)]
    sh("ip", "link", "set", "lo", "up")
    out = {}
    try:
        sh(*cli, "up", "--nodes", "5")
        api = json.loads((home / "coordinator" / "api.json").read_text())["api_port"]
        sh("nft", "add", "table", "inet", TABLE)
        sh("nft", "add", "chain", "inet", TABLE, "inp", "{ type filter hook input priority 0; policy accept; }")
        sh("nft", "add", "rule", "inet", TABLE, "inp", "meta", "l4proto", "{ tcp, udp }", "th", "sport", "!=", str(api),
           "th", "dport", "!=", str(api), "numgen", "random", "mod", "100", "<", str(loss), "counter", "drop")
        r0 = tcp_retrans()
        t = time.monotonic()
        put = subprocess.run([*cli, "put", str(src)], capture_output=True, text=True, timeout=300)
        out["put"] = {"rc": put.returncode, "s": time.monotonic() - t, "stderr": put.stderr[-500:]}
        cap = put.stdout.strip().splitlines()[-1] if put.returncode == 0 else None
        if cap:
            back = src.with_suffix(".back")
            t = time.monotonic()
            get = subprocess.run([*cli, "get", cap, "-o", str(back)], capture_output=True, text=True, timeout=300)
            out["get"] = {"rc": get.returncode, "s": time.monotonic() - t, "stderr": get.stderr[-500:]}
            out["identical"] = back.exists() and hashlib.sha256(back.read_bytes()).digest() == \
                hashlib.sha256(src.read_bytes()).digest()
        out["dropped"] = dropped()
        out["tcp_retransmitted"] = tcp_retrans() - r0
    finally:
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
        subprocess.run([*cli, "down"], capture_output=True, timeout=120)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
