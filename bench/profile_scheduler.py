#!/usr/bin/env python3
"""Host CPU per trivial task through the scheduler.

    .venv/bin/python bench/profile_scheduler.py                 # 8 boards, 3 runs of 4000 tasks
    .venv/bin/python bench/profile_scheduler.py --profile prof  # also cProfile one run (prof.txt, prof.pstats)
    PYTHONPATH=/tmp/old/host .venv/bin/python bench/profile_scheduler.py  # another version's host/ (a copy)

Starts N virtual boards (as ``bench/bench_compute.py`` does), warms their
code caches, then runs ``trivial(x)`` tasks through
:func:`openheap.compute.job.run_job` and prints, per run: tasks/s, host
process CPU µs per task (``time.process_time``; the kernel's part from
``os.times``, in 10 ms ticks) and board CPU µs per task
(utime + stime of the boards' MicroPython processes, ``/proc/<pid>/stat``).
The machine's load average is printed too: it is shared, so the CPU figures
are the ones to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

from openheap.compute import code as C
from openheap.compute import grid as G
from openheap.compute.job import run_job
from openheap.sim.fleet import Fleet

JOB = "def trivial(x):\n    return x\n"
TICK = os.sysconf("SC_CLK_TCK")


def board_cpu(pids) -> float:
    """Seconds of CPU (user + system) the processes ``pids`` have used."""
    total = 0
    for pid in pids:
        try:
            f = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
    return total / TICK


async def job(clients, code, n: int):
    answers, s = await run_job(clients, code, "trivial", [[i] for i in range(n)], timeout=10, retries=2,
                               speculate=False)
    bad = [a for a in answers if a.status != "ok" or a.value != a.index]
    if bad:
        raise RuntimeError("%d of %d tasks failed, e.g. %r" % (len(bad), n, bad[0].error or bad[0].value))
    return s


def measure(boards, code, n: int, prof: cProfile.Profile | None = None) -> dict:
    clients = [G.client_for(b.name, b.host, b.port, b.board) for b in boards]
    pids = [b.pid for b in boards if b.pid]
    c0, o0, b0, t0 = time.process_time(), os.times(), board_cpu(pids), time.perf_counter()
    if prof is not None:
        prof.enable()
    s = asyncio.run(job(clients, code, n))
    if prof is not None:
        prof.disable()
    c1, o1, b1, t1 = time.process_time(), os.times(), board_cpu(pids), time.perf_counter()
    return {"tps": n / (t1 - t0), "host_us": 1e6 * (c1 - c0) / n, "host_sys_us": 1e6 * (o1.system - o0.system) / n,
            "board_us": 1e6 * (b1 - b0) / n, "dgrams": (s.datagrams_sent + s.datagrams_received) / n, "coap": s.coap_bytes / n}


def show(i: int, r: dict) -> None:
    print("run %d: %6.0f tasks/s  host %5.0f µs/task (%3.0f in the kernel)  boards %5.0f µs/task  %.2f datagrams/task"
          "  %.1f CoAP B/task" % (i + 1, r["tps"], r["host_us"], r["host_sys_us"], r["board_us"], r["dgrams"], r["coap"]),
          flush=True)


def median(rows, k):
    return sorted(r[k] for r in rows)[len(rows) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", metavar="PREFIX", help="cProfile one more run; write PREFIX.txt and PREFIX.pstats")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="oh-prof-sched-"))
    fleet = Fleet(tmp / "home")
    try:
        boards = fleet.up(a.boards)
        (tmp / "job.py").write_text(JOB)
        code = C.load_module(tmp / "job.py")
        measure(boards, code, 20 * a.boards)  # warm-up: code to every board
        print("load average before: %s" % " ".join(Path("/proc/loadavg").read_text().split()[:3]))
        rows = []
        for i in range(a.runs):
            rows.append(measure(boards, code, a.tasks))
            show(i, rows[-1])
        print("median: %.0f tasks/s, host %.1f µs/task, boards %.0f µs/task"
              % (median(rows, "tps"), median(rows, "host_us"), median(rows, "board_us")))
        if a.profile:
            prof = cProfile.Profile(time.process_time)
            r = measure(boards, code, a.tasks, prof)
            print("profiled run: %.0f tasks/s, host %.0f µs/task (with cProfile overhead)" % (r["tps"], r["host_us"]))
            prof.dump_stats(a.profile + ".pstats")
            out = io.StringIO()
            st = pstats.Stats(prof, stream=out).sort_stats("tottime")
            st.print_stats(40)
            st.sort_stats("cumulative").print_stats(40)
            Path(a.profile + ".txt").write_text(out.getvalue())
            print("profile in %s.txt" % a.profile)
        print("load average after: %s" % " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    finally:
        fleet.down(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
