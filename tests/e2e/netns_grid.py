"""Run inside a network namespace of its own (``unshare --net``): a grid of
virtual boards behind a loopback made to look like a network, then puts and
gets through the real coordinator. Prints one JSON line of what happened.

    unshare --net python netns_grid.py loss HOME PERCENT FILE
    unshare --net python netns_grid.py lan HOME NODES FILES SIZE

``loss``: 5 boards; after ``openheap up`` a share of all packets between the
coordinator and the boards is dropped, TCP and UDP, both ways (nftables
``numgen random`` on the input hook; the CLI's HTTP API port is spared); a
put and a get of FILE through the CLI. The input hook, not output: a
datagram dropped on output fails its sender's ``sendto`` with EPERM, which a
lossy link never does; dropped on input, it is lost silently, as on a radio.

``lan``: loopback at MTU 1500 without segmentation offloads (every TCP
segment a LAN's size, as the benchmark has it), NODES boards that take
shares of SIZE bytes, and FILES random files of SIZE bytes put back to back
through the HTTP API, 3-of-10, then the last one read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TABLE = "openheap_loss"
REPO = Path(__file__).resolve().parents[2]


def sh(*cmd, timeout=120) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, timeout=timeout).stdout


def tcp_retrans() -> int:
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Tcp:")]
    return int(lines[1][lines[0].index("RetransSegs")])


def cli(home: Path) -> list[str]:
    script = Path(sys.executable).parent / "openheap"
    return ([str(script)] if script.is_file() else [sys.executable, "-m", "openheap.cli.main"]) + ["--home", str(home)]


def loss(home: Path, percent: int, src: Path) -> dict:
    oh = cli(home)
    out = {}
    sh(*oh, "up", "--nodes", "5")
    api = json.loads((home / "coordinator" / "api.json").read_text())["api_port"]
    sh("nft", "add", "table", "inet", TABLE)
    sh("nft", "add", "chain", "inet", TABLE, "inp", "{ type filter hook input priority 0; policy accept; }")
    sh("nft", "add", "rule", "inet", TABLE, "inp", "meta", "l4proto", "{ tcp, udp }", "th", "sport", "!=", api,
       "th", "dport", "!=", api, "numgen", "random", "mod", "100", "<", percent, "counter", "drop")
    r0 = tcp_retrans()
    t = time.monotonic()
    put = subprocess.run([*oh, "put", str(src)], capture_output=True, text=True, timeout=300)
    out["put"] = {"rc": put.returncode, "s": time.monotonic() - t, "stderr": put.stderr[-500:]}
    cap = put.stdout.strip().splitlines()[-1] if put.returncode == 0 else None
    if cap:
        back = src.with_suffix(".back")
        t = time.monotonic()
        get = subprocess.run([*oh, "get", cap, "-o", str(back)], capture_output=True, text=True, timeout=300)
        out["get"] = {"rc": get.returncode, "s": time.monotonic() - t, "stderr": get.stderr[-500:]}
        out["identical"] = back.exists() and back.read_bytes() == src.read_bytes()
    data = json.loads(sh("nft", "-j", "list", "chain", "inet", TABLE, "inp"))
    out["dropped"] = sum(e["counter"]["packets"] for item in data["nftables"] if "rule" in item
                         for e in item["rule"]["expr"] if "counter" in e)
    out["tcp_retransmitted"] = tcp_retrans() - r0
    return out


def lan(home: Path, nodes: int, files: int, size: int) -> dict:
    from openheap.coordinator.client import CoordinatorClient
    from openheap.errors import OpenheapError

    sh("ip", "link", "set", "lo", "mtu", "1500")
    sh("ethtool", "-K", "lo", "tso", "off", "gso", "off", "gro", "off")
    share = -(-size // 3) + (1 << 20)
    boards = home.parent / "boards"  # (beside the home: the test's temporary folder)
    shutil.copytree(REPO / "boards", boards, dirs_exist_ok=True)
    v = json.loads((boards / "virtual.json").read_text())
    v["max_share"] = max(v["max_share"], share)
    (boards / "virtual.json").write_text(json.dumps(v))
    os.environ["OPENHEAP_BOARDS"] = str(boards)
    fs = ((files * share * 23 // 20 + (8 << 20)) // 4096 + 1) * 4096
    sh(*cli(home), "up", "--nodes", nodes, "--fs-size", fs, "--wait", "60", timeout=300)
    api = CoordinatorClient(home, timeout=300)
    out = {"puts": []}
    data = b""
    for i in range(files):  # back to back
        data = os.urandom(size)
        t = time.monotonic()
        try:
            cap = api.put(data, size=size, k=3, n=10, happy=7)["cap"]
            out["puts"].append({"ok": True, "s": time.monotonic() - t})
        except OpenheapError as e:
            out["puts"].append({"ok": False, "error": str(e)[:600]})
            return out
    rsp = api.get(cap)
    with rsp:
        back = rsp.read()
    out["identical"] = hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    return out


def main() -> int:
    what, home = sys.argv[1], Path(sys.argv[2])
    sh("ip", "link", "set", "lo", "up")
    try:
        if what == "loss":
            out = loss(home, int(sys.argv[3]), Path(sys.argv[4]))
        else:
            out = lan(home, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    finally:
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
        subprocess.run([*cli(home), "down"], capture_output=True, timeout=120)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
