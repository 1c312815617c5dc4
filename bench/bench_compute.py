#!/usr/bin/env python3
"""Benchmark the compute grid (issue 4) on 8 virtual boards.

    .venv/bin/python bench/bench_compute.py            # full run, appends to bench/RESULTS.md
    .venv/bin/python bench/bench_compute.py --quick    # short run, prints only

Starts 8 virtual boards (``Fleet(<tmp>).up(8)``: the real firmware on the
MicroPython unix port, 64 KiB heap each) and measures, in one run:

* the **raw CoAP round-trip rate** of those boards: a hand-written CON GET
  (no token, rotating Message ID) to each board over plain non-blocking UDP
  sockets driven by ``select.epoll`` from one thread, one request
  outstanding per board, all 8 boards at once. Two requests: ``GET /x``
  (no such resource: the board parses and dispatches and answers 4.04; the
  cheapest full request path, the ceiling) and ``GET /i`` (status: the
  board collects garbage and asks littlefs for free space);
* **trivial tasks** (``def f(x): return x``) through the scheduler
  (:func:`openheap.compute.job.run_job`, one request in flight per board,
  code cached by a warm-up job first): tasks/s and CoAP bytes per task (UDP
  payloads, request and response), counted by the task channels; as
  ``openheap run`` does by default (quick tasks waiting in the queue share a
  request, ``TK_MORE``) and with ``--batch 1`` (one task per request);
* **CPU-bound tasks** (SHA-256 over 4 KB made on the board): the same;
* **--over vs shipping** for a 4 MiB random file stored 3-of-8: the bytes
  that cross the network when ``digest(range)`` runs on the boards holding
  each range (TK_RANGE: key material only) against the same ranges with
  their bytes fetched from the boards and shipped as arguments (``--ship``).

Rates are medians of ``--runs`` runs. Targets (issue 4): trivial tasks at
least 70 % of the raw round-trip rate; under 100 bytes of CoAP messages per
trivial task with cached code.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import os
import platform
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ohproto import const as P
from openheap.compute import code as C
from openheap.compute import grid as G
from openheap.compute.job import prepare_over, run_job
from openheap.compute.report import IP_UDP
from openheap.sim.fleet import Fleet

from benchlib import append_results, cpu_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1 << 20

JOB = '''\
import hashlib


def trivial(x):
    return x


def sha4k(x):
    # SHA-256 over 4 KB, fed 512 bytes at a time (a 64 KiB board has little contiguous heap)
    h = hashlib.sha256()
    b = bytes(512)
    for _ in range(8):
        h.update(b)
    return h.digest()[x % 32]


def digest(data):
    return hashlib.sha256(data).digest()[:8]
'''


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def env_info() -> dict:
    cpu = cpu_model()
    dirty = sh(["git", "status", "--porcelain", "--", "firmware", "protocols", "host"])
    return {"date": sh(["date", "-u"]) or datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "machine": platform.machine(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(),
            "commit": sh(["git", "rev-parse", "--short", "HEAD"]) + (" + uncommitted changes" if dirty else "")}


def _busy_cores(window: float = 1.0) -> float:
    """Cores busy (all processes) over ``window`` seconds, from /proc/stat."""
    def sample():
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in f]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)

    t0, i0 = sample()
    time.sleep(window)
    t1, i1 = sample()
    total = max(1, t1 - t0)
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / total)


def wait_quiet(limit: float) -> float:
    """Wait up to ``limit`` seconds until the machine is nearly idle (< 0.3
    cores busy); returns the busy cores last seen."""
    end = time.monotonic() + limit
    busy = _busy_cores()
    while busy >= 0.3 and time.monotonic() < end:
        log("machine busy (%.2f cores); waiting" % busy)
        busy = _busy_cores(2.0)
    return busy


# -- the raw ceiling


def _raw_get(path: str) -> bytearray:
    seg = path.encode()
    return bytearray(bytes([0x40, P.GET, 0, 0, (P.OPT_URI_PATH << 4) | len(seg)]) + seg)


def _raw_task(code_hash: bytes) -> tuple[bytearray, int]:
    """A POST /t datagram for trivial(7) whose task id (4 bytes at the
    returned offset) the raw client rewrites for every request."""
    from openheap.bulk import CON, encode, uint_opt

    m = bytearray(b"\xa5")  # {0: hash, 1: "trivial", 2: [7], 3: id (4-byte uint), 6: true}
    m += b"\x00\x58\x20" + code_hash + b"\x01\x67trivial\x02\x81\x07\x03\x1a"
    off = len(m)
    m += b"\x00\x00\x00\x00\x06\xf5"
    d = encode(CON, P.POST, 0, b"", [(P.OPT_URI_PATH, b"t"), (P.OPT_CONTENT_FORMAT, uint_opt(P.CF_CBOR))], bytes(m))
    return bytearray(d), len(d) - len(m) + off


def raw_rate(boards, path: str, seconds: float, task: bytes | None = None) -> dict:
    """Round trips/s over all boards, one CON request outstanding per board:
    ``GET /<path>``, or with ``task`` (a code hash) a POST /t of trivial(7)
    with a fresh task id each time."""
    ep = select.epoll()
    socks = {}
    tid = [random.randrange(1 << 20, 1 << 30)]
    try:
        for b in boards:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((b.host, b.port))
            s.setblocking(False)
            dgram, at = _raw_task(task) if task else (_raw_get(path), None)
            socks[s.fileno()] = [s, dgram, random.randrange(65536), 0.0, at]
            ep.register(s.fileno(), select.EPOLLIN)
        done = lost = 0
        sizes = []

        def send(st):
            st[2] = (st[2] + 1) & 0xFFFF
            st[1][2], st[1][3] = st[2] >> 8, st[2] & 0xFF
            if st[4] is not None:
                tid[0] += 1
                st[1][st[4]:st[4] + 4] = tid[0].to_bytes(4, "big")
            st[0].send(st[1])
            st[3] = time.perf_counter()

        t0 = time.perf_counter()
        for st in socks.values():
            send(st)
        end = t0 + seconds
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            for fd, _ in ep.poll(0.2):
                st = socks[fd]
                try:
                    d = st[0].recv(2048)
                except BlockingIOError:
                    continue
                if len(d) >= 4 and d[2] == st[1][2] and d[3] == st[1][3]:
                    if task and d[1] != P.CONTENT:
                        raise RuntimeError("raw POST /t answered %d.%02d %r" % (d[1] >> 5, d[1] & 31, d[-40:]))
                    done += 1
                    if len(sizes) < 4:
                        sizes.append((len(st[1]), len(d)))
                    send(st)
            now = time.perf_counter()
            for st in socks.values():  # a lost datagram: send again
                if now - st[3] > 0.5:
                    lost += 1
                    send(st)
        dt = time.perf_counter() - t0
        return {"rps": done / dt, "lost": lost, "sizes": sizes[0] if sizes else None}
    finally:
        ep.close()
        for st in socks.values():
            st[0].close()


# -- jobs


async def task_job(clients, code, func, n, batch=None) -> dict:
    kw = {} if batch is None else {"batch": batch}
    answers, s = await run_job(clients, code, func, [[i] for i in range(n)], timeout=10, retries=2, speculate=False,
                               **kw)
    bad = [a for a in answers if a.status != "ok"]
    if bad:
        raise RuntimeError("%d of %d tasks failed, e.g. %r" % (len(bad), n, bad[0].error))
    ran = n - s.cached
    dgrams = s.datagrams_sent + s.datagrams_received
    return {"tps": n / s.seconds, "seconds": s.seconds, "coap_per_task": s.coap_bytes / ran,
            "ip_per_task": s.wire_bytes / ran, "dgrams_per_task": dgrams / ran, "uploads": s.uploads,
            "retransmissions": None, "batches": s.batches}


def boards_arch(boards):
    from openheap import boards as B

    return B.get_board(boards[0].board).mpy_arch


def run(coro):
    return asyncio.run(coro)


async def over_job(clients, cap, code, ship: bool, chunk: int) -> dict:
    source, ranges, holds = await prepare_over(clients, cap, chunk)
    answers, s = await run_job(clients, code, "digest", None, timeout=10, retries=2, ranges=ranges, source=source,
                               holds=holds, ship=ship, speculate=False)
    bad = [a for a in answers if a.status != "ok"]
    if bad:
        raise RuntimeError("%d of %d range tasks failed, e.g. %r" % (len(bad), len(ranges), bad[0].error))
    return {"seconds": s.seconds, "ip_bytes": s.wire_bytes, "coap_bytes": s.coap_bytes, "tasks": len(ranges),
            "shipped": len(s.shipped), "values": [a.value for a in answers], "fetched": source.fetched}


async def store(boards, data: bytes):
    from openheap.storage import engine

    peers = [engine.Peer(b.name, b.host, b.port) for b in boards]
    async with engine.Grid(peers) as grid:
        res = await engine.put(grid, io.BytesIO(data), len(data), k=3, n=len(boards), happy=min(7, len(boards)),
                               secret=b"bench-compute-secret")
    return res.cap


def med(xs):
    return statistics.median(xs)


def fmt(xs, f="%.0f"):
    xs = sorted(xs)
    if len(xs) == 1:
        return f % xs[0]
    return (f + " (" + f + "–" + f + ")") % (med(xs), xs[0], xs[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run, prints only")
    ap.add_argument("--boards", type=int, default=8)
    ap.add_argument("--tasks", type=int, help="tasks per timed job (default 4000; quick 1000)")
    ap.add_argument("--runs", type=int, help="timed runs per figure (default 3; quick 1)")
    ap.add_argument("--seconds", type=float, help="length of a raw-rate window (default 2; quick 1)")
    ap.add_argument("--file-mib", type=float, help="size of the --over file, MiB (default 4; quick 1)")
    ap.add_argument("--chunk", type=int, default=1024, help="--over range size (default 1024)")
    ap.add_argument("--results", help="append the section here (default bench/RESULTS.md; none with --quick)")
    ap.add_argument("--wait-quiet", type=float, help="first wait up to S seconds for an idle machine (default 300; "
                    "quick 0)")
    a = ap.parse_args()
    q = a.quick
    a.tasks = a.tasks or (1000 if q else 4000)
    a.runs = a.runs or (1 if q else 3)
    a.seconds = a.seconds or (1.0 if q else 2.0)
    a.file_mib = a.file_mib or (1.0 if q else 4.0)
    if a.results is None and not q:
        a.results = str(HERE / "RESULTS.md")
    if a.wait_quiet is None:
        a.wait_quiet = 0.0 if q else 300.0
    env = env_info()
    env["busy_before"] = wait_quiet(a.wait_quiet) if a.wait_quiet else _busy_cores()
    env["load_before"] = Path("/proc/loadavg").read_text().split()[:3]
    tmp = Path(tempfile.mkdtemp(prefix="oh-bench-compute-"))
    fleet = Fleet(tmp / "home")
    R: dict = {}
    t_start = time.monotonic()
    try:
        log("starting %d virtual boards" % a.boards)
        size = int(a.file_mib * MIB)
        boards = fleet.up(a.boards, extra_config={"max_share": max(1 << 20, size // 2)}, fs_size=max(4 << 20, size))
        clients = lambda: [G.client_for(b.name, b.host, b.port, b.board) for b in boards]  # noqa: E731
        job = tmp / "benchjob.py"
        job.write_text(JOB)
        code = C.load_module(job)
        log("warm-up: code to every board")
        run(task_job(clients(), code, "trivial", 20 * a.boards))
        run(task_job(clients(), code, "sha4k", 4 * a.boards))
        R["raw_x"], R["raw_i"], R["raw_t"], R["trivial"], R["sha"], R["single"] = [], [], [], [], [], []
        for i in range(a.runs):
            log("run %d/%d: raw GET /x, raw GET /i, %d trivial tasks, %d SHA-256 tasks" % (
                i + 1, a.runs, a.tasks, a.tasks // 2))
            R["raw_x"].append(raw_rate(boards, "x", a.seconds))
            R["raw_i"].append(raw_rate(boards, "i", a.seconds))
            R["raw_t"].append(raw_rate(boards, "t", a.seconds, task=code.hash(boards_arch(boards))))
            R["trivial"].append(run(task_job(clients(), code, "trivial", a.tasks)))
            R["single"].append(run(task_job(clients(), code, "trivial", a.tasks, batch=1)))
            R["sha"].append(run(task_job(clients(), code, "sha4k", a.tasks // 2)))
        log("storing a %.1f MiB file 3-of-%d" % (a.file_mib, a.boards))
        data = os.urandom(size)
        cap = run(store(boards, data))
        log("--over and --ship over %d-byte ranges" % a.chunk)
        R["over"] = run(over_job(clients(), cap, code, False, a.chunk))
        R["ship"] = run(over_job(clients(), cap, code, True, a.chunk))
        if R["over"]["values"] != R["ship"]["values"]:
            raise RuntimeError("--over and --ship gave different results")
        import hashlib

        want = []
        from openheap.compute.over import plan
        for r in plan(3, a.boards, size, a.chunk):
            want.append(hashlib.sha256(data[r.offset:r.offset + r.length]).digest()[:8])
        R["over_correct"] = R["over"]["values"] == want
        R["size"] = size
    finally:
        fleet.down(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    R["elapsed"] = time.monotonic() - t_start
    env["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    text = report(a, R, env)
    print(text)
    if a.results:
        log("appended to", append_results(a.results, text, "# Benchmark results\n"))
    return 0


def report(a, R, env) -> str:
    raw_x = [r["rps"] for r in R["raw_x"]]
    raw_i = [r["rps"] for r in R["raw_i"]]
    raw_t = [r["rps"] for r in R["raw_t"]]
    triv = [r["tps"] for r in R["trivial"]]
    single = [r["tps"] for r in R["single"]]
    single_per = [r["coap_per_task"] for r in R["single"]]
    sha = [r["tps"] for r in R["sha"]]
    per = [r["coap_per_task"] for r in R["trivial"]]
    ip = [r["ip_per_task"] for r in R["trivial"]]
    sha_per = [r["coap_per_task"] for r in R["sha"]]
    ratio = med(triv) / med(raw_x)
    ratio_i = med(triv) / med(raw_i)
    o, s = R["over"], R["ship"]
    sx = R["raw_x"][0]["sizes"]
    lines = [
        "## %s — `bench/bench_compute.py`" % env["date"], "",
        "Machine: %s, %s, %s cores; Python %s; openheap %s. %d virtual boards (64 KiB heap each), loopback; "
        "%d run%s per figure (median, min–max); run took %.0f s. Machine before the run: %.2f cores busy, load "
        "average %s; after: load average %s." % (
            env["machine"], env["cpu"], env["cores"], env["python"], env["commit"], a.boards, a.runs,
            "" if a.runs == 1 else "s", R["elapsed"], env["busy_before"], " ".join(env["load_before"]),
            " ".join(env["load_after"])), "",
        "| figure | value | target |", "| --- | --- | --- |",
        "| raw CoAP round trips/s, `GET /x` (4.04), 1 outstanding per board, %d boards (ceiling) | %s | |"
        % (a.boards, fmt(raw_x)),
        "| raw CoAP round trips/s, `GET /i` (status), same way | %s | |" % fmt(raw_i),
        "| trivial tasks/s from a raw client: pre-built `POST /t` of `trivial(7)`, fresh task id each, same way "
        "(the boards' own task ceiling) | %s | |" % fmt(raw_t),
        "| trivial tasks/s through the scheduler (`return x`, %d tasks, code cached, 1 request in flight per board; "
        "the default: quick tasks waiting in the queue travel in batches of up to 33, `TK_MORE`; %.0f batches per "
        "job) | %s (%.0f %% of the raw-client task rate) | |" % (
            a.tasks, med([r["batches"] for r in R["trivial"]]), fmt(triv), 100 * med(triv) / med(raw_t)),
        "| the same, one task per request (`--batch 1`) | %s (%.0f %% of the raw `GET /x` rate; %s CoAP bytes "
        "per task) | |" % (fmt(single), 100 * med(single) / med(raw_x), fmt(single_per, "%.1f")),
        "| trivial tasks, share of the raw `GET /i` rate | %.0f %% | ≥ 70 %%: %s |"
        % (100 * ratio_i, "met" if ratio_i >= 0.7 else "not met"),
        "| trivial tasks, share of the raw `GET /x` rate (the cheapest request) | %.0f %% | ≥ 70 %%: %s |"
        % (100 * ratio, "met" if ratio >= 0.7 else "not met"),
        "| CoAP bytes per trivial task (UDP payloads, request + response) | %s | < 100: %s |"
        % (fmt(per, "%.1f"), "met" if med(per) < 100 else "not met"),
        "| IP-level bytes per trivial task (+28 per datagram) | %s | |" % fmt(ip, "%.1f"),
        "| datagrams per trivial task | %.2f | |" % med([r["dgrams_per_task"] for r in R["trivial"]]),
        "| CPU-bound tasks/s (SHA-256 over 4 KB on the board, %d tasks) | %s | |" % (a.tasks // 2, fmt(sha)),
        "| CoAP bytes per CPU-bound task | %s | |" % fmt(sha_per, "%.1f"),
        "| `--over`: %.1f MiB file 3-of-%d, %d ranges of ≤ %d B, `digest(range)` on the holders: IP bytes moved "
        "| %d (%.4f per file byte; %d ranges shipped instead), %.2f s | |" % (
            R["size"] / MIB, a.boards, o["tasks"], a.chunk, o["ip_bytes"], o["ip_bytes"] / R["size"], o["shipped"],
            o["seconds"]),
        "| shipping the same ranges (ciphertext fetched from the holders, plaintext sent as the argument): IP "
        "bytes moved | %d (%.4f per file byte), %.2f s | |" % (s["ip_bytes"], s["ip_bytes"] / R["size"], s["seconds"]),
        "| `--over` moves fewer bytes by | %.1f× | |" % (s["ip_bytes"] / max(1, o["ip_bytes"])),
        "",
        "Notes: raw request/response sizes (UDP payloads) %s for `GET /x`; results of `--over` and shipping "
        "identical and equal to SHA-256 computed on the host: %s. Bytes on the wire are counted by the host's "
        "task channels (every datagram's UDP payload, plus %d per datagram at the IP level); locating the shares "
        "(`engine.locate`, one `GET /s/<si>` per board) is not included." % (
            R["raw_x"][0]["sizes"] and "%d/%d" % tuple(sx), "yes" if R["over_correct"] else "NO", IP_UDP),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
