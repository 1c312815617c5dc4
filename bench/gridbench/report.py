"""The RESULTS.md section: machine and versions, the comparison table (or
the ``--big`` table), observations, and the method text."""

from __future__ import annotations

import datetime
import os
import platform
import statistics

from benchlib import cpu_model

from .common import HAPPY, MIB, NODES, K, N
from .runner import RESUME_SETTLE


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
            def peak(res):
                parts = []
                for iface in a.ifaces:
                    hw = [o["vmhwm_kb"] for o in ops_of(res, kind, iface, size) if o.get("vmhwm_kb")]
                    if hw:
                        parts.append("%.1f MB %s" % (max(hw) / 1000, "CLI" if iface == "cli" else "API"))
                return ", ".join(parts)

            row("%s %s, peak memory of the coordinator / Tahoe client node (VmHWM during the op, max of runs)" % (kind, sl),
                per_system(cols, peak))
        if "cli" in a.ifaces:
            def cli_rss(res):
                parts = []
                for kind in ("put", "get"):
                    rs = [o["maxrss_kb"] for o in ops_of(res, kind, "cli", size) if o.get("maxrss_kb")]
                    parts.append("%s %.1f MB" % (kind, max(rs) / 1000) if rs else "%s ?" % kind)
                return ", ".join(parts)

            row("%s, CLI process peak RSS" % sl, per_system(cols, cli_rss))
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


def per_system(cols, cell):
    """One cell per system column: ``cell(results)``, or "" for a system not measured."""
    return [cell(res) if res else "" for _, res in cols]


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
