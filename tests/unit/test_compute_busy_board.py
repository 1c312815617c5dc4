"""The scheduler and a board that answers "busy" (5.03) to every task.

A board whose task entry never reaches a final state (most likely: a
MemoryError in the board's bookkeeping around a task) answers every later
POST /t with 5.03 busy, Max-Age 1, for good (seen in the e2e --over test),
while GET /i still works and shows the entry as running. Ranges of a stored file go to the board holding their
share while it is up, so before the fix ``openheap run --over`` waited for
such a board forever: busy answers had no deadline.

The boards here are real UDP endpoints on 127.0.0.1 speaking CoAP at the
message level; everything on the host side (Scheduler, BoardClient, its
channel, Source) is the real thing.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os

import cbor2
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ohproto import const as P
from openheap.bulk import ACK, Response, encode, uint_opt
from openheap.compute import over as O
from openheap.compute import wire as W
from openheap.compute.client import BoardClient
from openheap.compute.code import Code
from openheap.compute.errors import TaskFailed
from openheap.compute.scheduler import Board, Scheduler, Task
from openheap.storage.encoder import encode_file
from openheap.storage.layout import Params

JOB = "def digest(data):\n    return data\n"
STUCK_TASK = 4242  # the task id a stuck board keeps reporting as running


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class FakeBoard(asyncio.DatagramProtocol):
    """A board on a UDP port: GET /i gives its status; POST /t is answered
    5.03 busy (Max-Age 1) for the first ``busy_for`` seconds (None: for
    good; ``shows_task``: its status shows the stuck task as running), then
    run: a range of the share it holds is decrypted as a board does with
    TK_RANGE, and the answer is the digest of the task's data."""

    def __init__(self, name: str, busy_for: float | None = 0.0, shows_task: bool = True):
        self.name, self.busy_for, self.shows_task = name, busy_for, shows_task
        self.share = b""
        self.posts = self.busy = self.ran = 0
        self.t0 = None
        self.tr = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        return self.tr.get_extra_info("sockname")[1]

    def connection_made(self, transport):
        self.tr = transport

    def stuck(self) -> bool:
        return self.busy_for is None or asyncio.get_running_loop().time() - self.t0 < self.busy_for

    def datagram_received(self, data, addr):
        r = Response(data)
        path = [bytes(p).decode() for p in r.opts.get(P.OPT_URI_PATH, [])]
        opts, body, code = [(P.OPT_CONTENT_FORMAT, uint_opt(P.CF_CBOR))], b"", P.CONTENT
        if path == [P.PATH_STATUS]:
            st = {P.ST_NAME: self.name, P.ST_TASKS_DONE: self.ran}
            if self.busy_for is None and self.shows_task:
                st[P.ST_TASK_RUNNING] = STUCK_TASK
            body = cbor2.dumps(st)
        elif path == [W.PATH_TASKS] and r.code == P.POST:
            self.posts += 1
            if self.stuck():
                self.busy += 1
                code, opts, body = P.SERVICE_UNAVAILABLE, [(P.OPT_MAX_AGE, uint_opt(1))], b"busy"
            else:
                body = cbor2.dumps(self.run(cbor2.loads(r.payload)))
        else:
            code, opts = P.NOT_FOUND, []
        self.tr.sendto(encode(ACK, code, r.mid, r.token, opts, body), addr)

    def run(self, q: dict) -> dict:
        self.ran += 1
        args, rng = q.get(W.TK_ARGS, []), q.get(W.TK_RANGE)
        if rng is not None:  # [si, shnum, offset in share, length, key, counter block]
            ct = self.share[rng[2]:rng[2] + rng[3]]
            args = [Cipher(algorithms.AES(rng[4]), modes.CTR(rng[5])).decryptor().update(ct)] + args
        return {W.TR_ID: q[W.TK_ID], W.TR_STATE: W.TS_DONE, W.TR_VALUE: _digest(args[0]), W.TR_MS: 1}


def _stored(size=2000, k=3, n=5):
    data = os.urandom(size)
    sinks = [io.BytesIO() for _ in range(n)]
    cap = encode_file(io.BytesIO(data), os.urandom(16), Params(k, n, size), sinks)
    return data, cap, [s.getvalue() for s in sinks]


async def _job(holder: FakeBoard, *others: FakeBoard, retries: int = 2, timeout: float = 0.3):
    """Four ranges of share 0 (held by ``holder`` only) over the boards;
    returns (answers, scheduler, ranges, data)."""
    data, cap, shares = _stored()
    holder.share = shares[0]

    async def whole() -> bytes:
        return data

    src = O.Source(cap, {}, whole)
    ranges = [r for r in O.plan(cap.k, cap.n, cap.size, 64) if r.shnum == 0 and r.aligned][:4]
    code = Code(JOB, "job.py")
    boards = [Board(BoardClient(holder.name, "127.0.0.1", await holder.start()), {(cap.storage_index, 0)})]
    boards += [Board(BoardClient(o.name, "127.0.0.1", await o.start())) for o in others]
    s = Scheduler(boards, retries=retries)
    await s.start()
    try:
        futs = [s.submit(Task(r.index, code, "digest", [], timeout=timeout, rng=src.ref(r))) for r in ranges]
        await asyncio.wait_for(s.join(), 15)  # (before the fix: forever)
    finally:
        await s.close()
        for fb in (holder,) + others:
            fb.tr.close()
    return [f.exception() or f.result() for f in futs], s, ranges, data


def _right(data, ranges):
    return [("ok", _digest(data[r.offset:r.offset + r.length])) for r in ranges]


def test_a_board_busy_for_good_is_set_aside_and_its_ranges_go_elsewhere():
    stuck, good = FakeBoard("stuck", busy_for=None), FakeBoard("good")
    answers, s, ranges, data = asyncio.run(_job(stuck, good))
    assert answers == _right(data, ranges)
    assert stuck.ran == 0 and good.ran == len(ranges)  # shipped to the other board
    assert not s.summary.retries  # (no fault of the tasks: nothing charged)
    assert s.boards["stuck"].down  # left alone while it still runs its stuck task
    assert any(board == "stuck" and "answered busy" in what for _, board, what in s.summary.events)


def test_a_board_busy_for_a_while_keeps_its_tasks():
    slow, other = FakeBoard("slow", busy_for=1.2), FakeBoard("other")
    answers, s, ranges, data = asyncio.run(_job(slow, other))
    assert answers == _right(data, ranges)
    assert slow.busy >= 1 and slow.ran == len(ranges) and other.ran == 0  # computed in place
    assert not s.summary.retries and not s.boards["slow"].down


def test_a_lone_board_refusing_everything_while_idle_fails_the_tasks_in_the_end():
    # It says it runs no task, so it comes back, and is still busy: then the
    # attempts it refuses fail, and the tasks end with the reason.
    liar = FakeBoard("liar", busy_for=None, shows_task=False)
    answers, s, ranges, data = asyncio.run(_job(liar, retries=1))
    assert all(isinstance(a, TaskFailed) and "still answers busy" in str(a) for a in answers), answers
    assert liar.ran == 0
