"""Running many tasks over many boards: the asyncio scheduler.

Each board gets as many worker coroutines as its definition's ``tasks``
(one, usually). An idle worker *pulls* the next task that fits its board, so
a faster board simply takes more tasks; what fits:

* a board the task has not tried yet (a retry goes to ANOTHER board while
  there is one; with replicas, each board votes at most once);
* a board whose heap is not known to be too small (4.13 marks it unfit);
* for a task over a stored range (``--over``): a board that holds the share,
  or, when no such board is left, any board with the data shipped instead.

Failures of the grid, not of the function (no answer in time, the board
unreachable, a board reset by its watchdog, a task the board reports lost),
send the task to another board, up to ``retries`` times; the board is then
left alone and probed (``GET /i``) until it answers again (a board restarted
by its watchdog rejoins and says which task it lost). A board that answers
busy (5.03) is asked again after its Max-Age, for at most a task's limit:
busy for longer, it is set aside the same way (:meth:`Health._board_busy`),
and tasks that wait for it (ranges on the board holding their share) go
elsewhere. Once the queue has drained, a task running for much longer than
its kind usually takes gets one speculative duplicate on an idle board (it
uses up one retry): whichever answers first wins.
With ``replicas`` R, a result is accepted when R boards returned the same
value (CBOR-equal); a disagreement gets a further run on a new board and is
reported. What the function itself raised is a result like any value (it
is not retried), except a MemoryError: a board's free heap varies, so
another board tries while retries are left.

Results can be served from a :class:`~openheap.compute.cache.ResultCache`.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time

from ohproto import const as P
from openheap.compute import wire as W
from openheap.compute.client import is_refusal
from openheap.compute.errors import BoardBusy, HeapTooSmall, NoBoards
from openheap.compute.health import Health
from openheap.compute.outcomes import Outcomes
from openheap.compute.report import Summary
from openheap.compute.task import Attempt, Board, Task
from openheap.errors import CoapError, NodeUnreachable, format_code

__all__ = ["Task", "Board", "Attempt", "Scheduler", "MARGIN", "LONG_TASK"]

MARGIN = 2.0  # seconds the host waits beyond a task's time limit (the board's watchdog margin)
LONG_TASK = 1.0  # tasks usually longer than this (s) are submitted without TK_WAIT and followed
SPEC_FACTOR = 4.0  # a task running this many times its kind's usual time gets a duplicate...
SPEC_MIN = 0.5  # ... and at least this many seconds
START_PROBE = 1.0  # seconds a board has to answer GET /i when a job starts
BATCH = W.BATCH_MAX + 1  # tasks per request at most (a board's batch: TK_MORE)
BATCH_USUAL = 0.05  # tasks of a kind that usually takes longer (s) go one per request
BATCH_SECONDS = 0.25  # ... and a batch is planned to run about this long at most


class Scheduler(Outcomes, Health):
    """Run :class:`Task` objects over ``boards`` (a list of :class:`Board`).

    Use inside a running loop: ``await s.start()``, ``fut = s.submit(task)``
    (an asyncio future of ``("ok", value)`` / ``("error", (type, msg))`` or a
    :class:`TaskFailed`), ``await s.close()``. ``summary`` has the figures.
    """

    def __init__(self, boards: list[Board], *, retries: int = 2, replicas: int = 1, cache=None,
                 speculate: bool = True, on_done=None, batch: int = BATCH):
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        if not 1 <= batch <= BATCH:
            raise ValueError("batch must be 1 to %d" % BATCH)
        self.batch = batch
        self.boards = {b.name: b for b in boards}
        self.retries, self.replicas, self.cache = retries, replicas, cache
        self.speculate, self.on_done = speculate, on_done
        self.summary = Summary(boards=[b.name for b in boards])
        self.summary.refresh = self._figures
        self._pending: collections.deque[Task] = collections.deque()
        self._troubled: set[Task] = set()
        self._active: set[Task] = set()  # running attempts
        self._waiters: list[asyncio.Future] = []
        self._workers: list[asyncio.Task] = []
        self._monitor: asyncio.Task | None = None
        self._closing = False
        self._next_id = random.randrange(1 << 8, 1 << 14)
        self._ids: dict[int, object] = {}  # task id -> task index, for a board that lost it
        self._usual: dict[tuple, float] = {}  # (code id, func) -> EWMA seconds of a run on a board
        self._last_up = time.monotonic()
        self._open = 0
        self._drained: asyncio.Future | None = None  # join() waits on it; set when _open falls to 0
        self._encoders: dict[tuple, W.TaskEncoder] = {}  # (code hash, func, timeout, heap, wait) -> encoder

    # -- life cycle
    async def start(self, probe: bool = True) -> None:
        """Ask every board ``GET /i`` (those that do not answer start as
        down and are probed until they do; NoBoards when none answers), then
        start one worker per board slot and the monitor."""
        if probe:
            async def ask(b: Board) -> bool:
                try:
                    await b.client.status(timeout=START_PROBE)
                    return True
                except (CoapError, OSError):
                    return False

            up = await asyncio.gather(*(ask(b) for b in self.boards.values()))
            if not any(up):
                for b in self.boards.values():
                    b.client.close()
                raise NoBoards("none of the %d boards answered (%s); are they running?"
                               % (len(up), ", ".join(self.boards)))
            for b, ok in zip(list(self.boards.values()), up):
                if not ok:
                    self._board_down(b, "did not answer at the start")
        self.summary.started = time.monotonic()
        for b in self.boards.values():
            for _ in range(b.client.slots):
                self._workers.append(asyncio.ensure_future(self._worker(b)))
        self._monitor = asyncio.ensure_future(self._watch())

    async def close(self) -> None:
        """Stop the workers (running attempts are abandoned) and close the channels."""
        self._closing = True
        for t in self._workers + [self._monitor] + [b.probing for b in self.boards.values()]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*[t for t in self._workers + [self._monitor] if t is not None], return_exceptions=True)
        self._figures()
        self.summary.refresh = None
        self.summary.ended = time.monotonic()
        for b in self.boards.values():
            b.client.close()
        if self.cache is not None:
            self.cache.flush()

    def _figures(self) -> None:
        for b in self.boards.values():
            c = b.client
            self.summary.board_figures(b.name, c.counters, c.uploads, c.upload_bytes, b.done, b.errors, b.failed,
                                       b.lost, b.busy_time, len(b.restarts))

    def submit(self, task: Task) -> asyncio.Future:
        """Queue ``task``; returns its future (resolved at once from the cache)."""
        loop = asyncio.get_running_loop()
        task.fut = loop.create_future()
        self.summary.tasks += 1
        if self.cache is not None:
            hit = self.cache.get(task.code.code_id, task.func, task.args_cbor)
            if hit is not None:
                self.summary.cached += 1
                self._resolve(task, hit, cached=True)
                return task.fut
        self._open += 1
        self._enqueue(task)
        return task.fut

    async def join(self) -> None:
        """Wait until every submitted task has its answer."""
        while self._open:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    # -- queue
    def _enqueue(self, task: Task, front: bool = False) -> None:
        if task.queued or task.done:
            return
        task.queued = True
        (self._pending.appendleft if front else self._pending.append)(task)
        self._poke()

    def _poke(self) -> None:
        """Wake every idle worker: something changed."""
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def _sleep(self, timeout: float | None) -> None:
        """Wait for :meth:`_poke` (or ``timeout`` seconds)."""
        f = asyncio.get_running_loop().create_future()
        self._waiters.append(f)
        try:
            await asyncio.wait_for(f, timeout)
        except asyncio.TimeoutError:
            pass

    def _live_boards(self):
        return [b for b in self.boards.values() if not b.down]

    def _fits(self, b: Board, t: Task) -> bool:
        if b.name in t.unfit:
            return False
        h = b.client.heap
        return not (t.heap and h and h < t.heap)

    def _eligible(self, b: Board, t: Task) -> bool:
        if not self._fits(b, t) or b.name in t.running:
            return False
        if b.name in t.tried:
            if self.replicas > 1 and any(b.name in v for v in t.votes.values()):
                return False
            # a retry may come back here only when no other board could take it
            if any(o is not b and not o.down and o.name not in t.tried and self._fits(o, t)
                   for o in self.boards.values()):
                return False
        if t.rng is not None and t.rng.where not in b.holds:
            # the data goes to the board only when no board holding it is left to try
            if any(t.rng.where in o.holds and not o.down and o.name not in t.tried and self._fits(o, t)
                   for o in self.boards.values()):
                return False
        return True

    def _pick(self, b: Board) -> tuple[Task, bool] | None:
        q = self._pending
        replicas = self.replicas
        while q:
            t = q[0]
            if t.done or not t.wants(replicas):
                q.popleft().queued = False
                continue
            if not t.tried and not t.unfit and t.rng is None and replicas == 1:
                # the usual case, a fresh task: any board that is not too small takes it
                h = b.client.heap
                if not (t.heap and h and h < t.heap):
                    q.popleft()
                    t.queued = False
                    return t, False
            break
        for i, t in enumerate(q):
            if i > 256:
                break
            if t.done or not t.wants(self.replicas) or not self._eligible(b, t):
                continue
            if len(t.running) + 1 + t.best_votes() >= self.replicas:
                del q[i]  # this attempt satisfies it for now
                t.queued = False
            return t, False
        if self.speculate and not q:
            return self._straggler(b)
        return None

    def _straggler(self, b: Board) -> tuple[Task, bool] | None:
        now = time.monotonic()
        best = None
        for t in self._active:
            if t.done or t.spec or len(t.failures) + t.spec >= self.retries or b.name in t.tried:
                continue
            if not self._fits(b, t) or (t.rng is not None and t.rng.where not in b.holds
                                        and any(t.rng.where in o.holds and not o.down and o.name not in t.tried
                                                for o in self.boards.values())):
                continue
            usual = self._usual.get((t.code.code_id, t.func))
            if usual is None:
                continue
            oldest = min(a.started for a in t.running.values()) if t.running else now
            if now - oldest > max(SPEC_FACTOR * usual, SPEC_MIN) and (best is None or oldest < best[1]):
                best = (t, oldest)
        return (best[0], True) if best else None

    # -- workers
    async def _worker(self, b: Board) -> None:
        while not self._closing:
            if b.down:
                await b.up_event.wait()
                continue
            if b.busy_until:
                wait = b.busy_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                b.busy_until = 0.0
            got = self._pick(b)
            if got is None:
                await self._sleep(0.25 if self._active else 5.0)
                continue
            more = self._batch_more(b, got[0]) if self.batch > 1 and not got[1] else None
            if more:
                await self._attempt_batch(b, [got[0]] + more)
            else:
                await self._attempt(b, *got)

    def _batch_more(self, b: Board, t: Task) -> list[Task]:
        """Fresh tasks from the head of the queue to send with ``t`` in one
        request: of the same code, function and limits, quick ones (their
        kind usually takes under BATCH_USUAL s), as many as keep the batch
        near BATCH_SECONDS and leave work for the other boards (a queue of
        Q tasks over N boards gives batches of about Q / 2N), and as fit one
        datagram."""
        if self.replicas != 1 or t.tried or t.rng is not None:
            return []
        usual = self._usual.get((t.code.code_id, t.func))
        if usual is None or usual > BATCH_USUAL:
            return []  # (the first tasks of a kind go alone: they tell how long it takes)
        q = self._pending
        n = min(self.batch - 1, len(q) // (2 * max(1, len(self._live_boards()))),
                int(BATCH_SECONDS / max(usual, 0.001)))
        room = W.TASK_PAYLOAD_MAX - 80 - len(t.wire_args)  # the map's other keys: at most 80 bytes
        out = []
        while q and len(out) < n:
            o = q[0]
            if o.done:
                q.popleft().queued = False
                continue
            if (o.tried or o.unfit or o.rng is not None or o.code is not t.code or o.func != t.func
                    or o.timeout != t.timeout or o.heap != t.heap):
                break
            room -= len(o.wire_args)
            if room < 0:
                break
            q.popleft().queued = False
            out.append(o)
        return out

    def _encoder(self, code_hash: bytes, t: Task, wait: bool) -> W.TaskEncoder:
        """The POST /t encoder of ``t``'s code, function and limits (made once)."""
        key = (code_hash, t.func, t.timeout, t.heap, wait)
        enc = self._encoders.get(key)
        if enc is None:
            enc = self._encoders[key] = W.TaskEncoder(code_hash, t.func, time_ms=int(t.timeout * 1000),
                                                      heap=t.heap, wait=wait)
        return enc

    def _new_id(self, t: Task, b: Board) -> int:
        self._next_id = self._next_id + 1 if self._next_id < W.TASK_ID_MAX else 1
        self._ids[self._next_id] = t.index
        return self._next_id

    async def _attempt(self, b: Board, t: Task, spec: bool) -> None:
        tid = self._new_id(t, b)
        a = Attempt(b.name, tid, time.monotonic(), spec)
        t.running[b.name] = a
        t.tried.add(b.name)
        self._active.add(t)
        if spec:
            t.spec += 1
            self.summary.speculative += 1
        kind = (t.code.code_id, t.func)
        usual = self._usual.get(kind, 0.0)
        long = usual > LONG_TASK
        try:
            arch = b.client.arch
            code_hash = t.code.hash(arch)
            args, rng = t.wire_args, None
            if t.rng is not None:
                if t.rng.where in b.holds:
                    rng = t.rng.wire()
                else:
                    args = W.dumps([await t.rng.plaintext()] + t.args)
                    self.summary.shipped.add(t.index)
            enc = self._encoder(code_hash, t, not long)
            payload = enc.encode(args, tid, rng)
            if len(payload) > W.TASK_PAYLOAD_MAX:
                self._ended(t, a)
                self._give_up(t, "cannot be sent: its request is %d bytes and a board takes at most %d in one "
                                 "datagram; pass less data per task (or store the data and use --over)"
                              % (len(payload), W.TASK_PAYLOAD_MAX))
                return
            limit = t.timeout + MARGIN
            for again in (rng is not None, False):
                res = await b.client.run(code_hash, lambda: t.code.mpy(arch), payload, timeout=limit,
                                         expect=min(usual * 1.5, t.timeout))
                if res.state in (W.TS_QUEUED, W.TS_RUNNING):
                    self.summary.followed += 1
                    res = await b.client.follow(tid, limit, expect=min(usual, t.timeout))
                if not (again and res.state == W.TS_FAILED and res.error and res.error[0] == "MemoryError"):
                    break
                # The data is on this board only (or on few): after a MemoryError the board has
                # collected its garbage, so it tries once more before the bytes are shipped elsewhere.
                self.summary.mem_again += 1
                tid = a.task_id = self._new_id(t, b)
                payload = enc.encode(args, tid, rng)
        except (CoapError, OSError, ValueError) as e:  # (BoardBusy, HeapTooSmall, NodeUnreachable are CoapErrors)
            self._on_error(b, t, a, e, limit)
            return
        self._settle(b, t, a, res, kind, time.monotonic() - a.started)

    def _on_error(self, b: Board, t: Task, a: Attempt, e: Exception, limit: float, first: bool = True,
                  batch: bool = False) -> None:
        """Attempt ``a`` of ``t`` ended with ``e`` instead of an answer; ``first``:
        the board's own state is to be updated too (once per request);
        ``batch``: ``a`` was part of a batch (see :meth:`Outcomes._failed`)."""
        if isinstance(e, BoardBusy):
            self._board_busy(b, t, a, e.max_age, limit, first, batch)
        elif isinstance(e, HeapTooSmall):
            b.answered()
            self._abandon(t, a)
            t.unfit.add(b.name)
            t.heap_notes[b.name] = e.diagnostic or "heap too small"
            self._troubled.add(t)
        elif isinstance(e, NodeUnreachable):
            why = "no answer within %g s (the task's %g s limit plus %g s)" % (limit, t.timeout, limit - t.timeout) \
                if not is_refusal(e) else "the board became unreachable (%s)" % (e.diagnostic or "down")
            self._failed(b, t, a, why, batch)
            if first:
                self._board_down(b)
        elif isinstance(e, CoapError):
            b.answered()
            if e.code == P.REQUEST_ENTITY_TOO_LARGE:  # PUT /c: the module is larger than its code cache
                t.unfit.add(b.name)
            self._failed(b, t, a, "the board answered %s%s" % (
                format_code(e.code) if e.code is not None else "nothing",
                ": " + e.diagnostic if e.diagnostic else ""), batch)
        else:
            self._failed(b, t, a, "%s: %s" % (type(e).__name__, e), batch)

    async def _attempt_batch(self, b: Board, ts: list[Task]) -> None:
        """Send the fresh tasks ``ts`` (see :meth:`_batch_more`) to ``b`` in one
        request; each gets its result as if sent alone. Tasks the board did
        not run (its answer had no room) go back to the head of the queue."""
        if self._next_id + len(ts) > W.TASK_ID_MAX:
            self._next_id = 0  # the ids of a batch are consecutive
        attempts = []
        now = time.monotonic()
        for t in ts:
            a = Attempt(b.name, self._new_id(t, b), now, False)
            t.running[b.name] = a
            t.tried.add(b.name)
            self._active.add(t)
            attempts.append(a)
        t0 = ts[0]
        kind = (t0.code.code_id, t0.func)
        usual = self._usual.get(kind, 0.0)
        limit = t0.timeout + MARGIN + len(ts) * max(SPEC_FACTOR * usual, 0.01)
        try:
            arch = b.client.arch
            code_hash = t0.code.hash(arch)
            payload = self._encoder(code_hash, t0, True).encode_batch([t.wire_args for t in ts], attempts[0].task_id)
            results = await b.client.run_batch(code_hash, lambda: t0.code.mpy(arch), payload, timeout=limit,
                                               expect=min(len(ts) * usual * 1.5, t0.timeout))
        except (CoapError, OSError, ValueError) as e:
            for i, (t, a) in enumerate(zip(ts, attempts)):
                self._on_error(b, t, a, e, limit, first=not i, batch=True)
            return
        took = (time.monotonic() - now) / len(ts)
        self.summary.batches += 1
        for i, (t, a) in enumerate(zip(ts, attempts)):
            if i >= len(results):
                self._abandon(t, a)  # not run: no room left in the answer
            elif results[i].id != a.task_id:
                self._failed(b, t, a, "the board answered for task %r instead of %d" % (results[i].id, a.task_id))
            else:
                self._settle(b, t, a, results[i], kind, took)

    def _settle(self, b: Board, t: Task, a: Attempt, res: W.Result, kind: tuple, took: float) -> None:
        """What the board answered for attempt ``a`` (``took`` seconds of the board's time)."""
        b.busy_time += took
        b.answered()
        if res.state == W.TS_DONE or res.state == W.TS_FAILED:
            ms = res.ms if isinstance(res.ms, int) else took * 1000
            self._usual[kind] = ms / 1000 if kind not in self._usual else 0.8 * self._usual[kind] + 0.2 * ms / 1000
        if res.state == W.TS_DONE:
            b.done += 1
            self._vote(b, t, a, ("ok", res.value))
        elif res.state == W.TS_FAILED:
            err = res.error or ("Error", "the board gave no reason")
            if err[0] == "MemoryError" and len(t.failures) < self.retries and self._untried(t):
                # a board's free heap varies (fragmentation, its own work): another may have enough
                self._failed(b, t, a, "MemoryError (%s)" % err[1])
                return
            b.errors += 1
            self._vote(b, t, a, ("error", err))
        elif res.state == W.TS_LOST:
            b.lost += 1
            err = res.error or ("Lost", "")
            self._failed(b, t, a, "lost on the board (%s: %s)" % err)
        else:
            self._failed(b, t, a, "the board %s it" % W.STATE_NAMES.get(res.state, "did not finish"))
