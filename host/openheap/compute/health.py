"""Boards that stop answering, and tasks no board can run (a mixin of
:class:`openheap.compute.scheduler.Scheduler`).

A board that fails an attempt by silence or an ICMP error is marked down:
no task goes to it, and it is probed with ``GET /i`` (every 0.25 s, backing
off to 2 s) until it answers; a board restarted by its watchdog then says
which task it lost (``ST_TASK_LOST``), which goes into the summary.

A board that answers 5.03 busy is asked again after the Max-Age it gave,
for as long as a task's time limit (plus the margin): busy for longer, it
is set aside like a silent one, until ``GET /i`` shows it running no task,
and its tasks go to other boards. Seen: a board answered every task busy
for good while still answering ``GET /i`` (most likely a task entry left
unfinished by a MemoryError), and the ranges of ``--over`` (which go to the
board holding their share while it is up) waited on it forever. A board
that is still busy when it comes back, without having answered a task in
between, fails the attempts it refuses, so that tasks end even on a board
that says it runs nothing and refuses everything.

The watch loop fails tasks that cannot be run: every board gone for
``GIVE_UP`` seconds, too little heap everywhere, replicas that cannot agree.
"""

from __future__ import annotations

import asyncio
import time

from openheap.compute import wire as W
from openheap.compute.task import Attempt, Board, Task
from openheap.errors import CoapError

__all__ = ["Health", "PROBE_MIN", "PROBE_MAX", "GIVE_UP"]

PROBE_MIN, PROBE_MAX = 0.25, 2.0  # seconds between probes of a board that stopped answering
GIVE_UP = 30.0  # seconds with no board answering before every open task fails


class Health:
    """Board liveness for the scheduler (uses its boards, queues and summary)."""

    def _board_down(self, b: Board, what: str = "stopped answering") -> None:
        if b.down or self._closing:
            return
        b.down, b.down_since = True, time.monotonic()
        b.up_event.clear()
        self.summary.board_event(b.name, what)
        b.probing = asyncio.ensure_future(self._probe(b))
        self._poke()

    def _board_busy(self, b: Board, t: Task, a: Attempt, max_age: int | None, limit: float,
                    first: bool = True, batch: bool = False) -> None:
        """``b`` answered attempt ``a`` of ``t`` 5.03 busy (``first``: the
        first attempt of its request; ``batch``: one of a batch). The task
        goes back to the queue and ``b`` is asked again after ``max_age``
        seconds; busy for longer than ``limit`` (the attempt's time limit),
        ``b`` is set aside (marked down) until ``GET /i`` shows it running
        no task. Set aside once already, back and still busy without having
        answered a task since, ``b`` fails the attempt."""
        now = time.monotonic()
        if not b.busy_since:
            b.busy_since = now
        spell = now - b.busy_since
        if spell <= limit:
            self._abandon(t, a)
            if first:
                b.busy_until = now + (max_age if max_age else 0.05)
                self.summary.busy += 1
            return
        if b.busy_downs:
            self._failed(b, t, a, "the board still answers busy (for %.0f s now) after it said it runs no task"
                         % spell, batch)
        else:
            self._abandon(t, a)  # (whatever runs there, maybe another job's task, is no fault of this one)
        if first:
            b.busy_downs += 1
            self._board_down(b, "answered busy for %.1f s" % spell)

    async def _probe(self, b: Board) -> None:
        pause = PROBE_MIN
        while not self._closing:
            await asyncio.sleep(pause)
            try:
                st = await b.client.status(timeout=max(pause, 0.5))
            except (CoapError, OSError):
                pause = min(pause * 1.5, PROBE_MAX)
                continue
            if b.busy_downs and st.get(W.ST_TASK_RUNNING) is not None:
                pause = min(pause * 1.5, PROBE_MAX)
                continue  # set aside as busy: back once it runs no task
            lost = st.get(W.ST_TASK_LOST)
            b.restarts.append((time.monotonic(), lost))
            if lost is not None and lost in self._ids:
                self.summary.board_event(b.name, "answers again; it restarted and lost task %s (id %d)"
                                         % (self._ids[lost], lost))
            else:
                self.summary.board_event(b.name, "answers again")
            b.down = False
            b.up_event.set()
            self._poke()
            return

    async def _watch(self) -> None:
        """Fail what no board can run: every board gone for GIVE_UP seconds,
        or no board fit for a task."""
        while not self._closing:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            if self._live_boards():
                self._last_up = now
            elif self._open and now - self._last_up > GIVE_UP:
                for t in list(self._pending) + list(self._active):
                    self._give_up(t, "could not run: no board has answered for %g s" % GIVE_UP)
            for t in list(self._troubled):
                if t.done or t.running or not t.wants(self.replicas):
                    continue
                if not any(self._eligible(b, t) or (b.down and b.name not in t.tried) for b in self.boards.values()):
                    if t.votes:
                        self._settle_without_quorum(t)
                    elif t.unfit and len(t.unfit) >= len(self.boards):
                        note = sorted(set(t.heap_notes.values()))
                        need = "%d bytes of heap" % t.heap if t.heap else "more heap than a board has free"
                        if t.rng is not None:
                            need += " (%d for its %d-byte range; try a smaller --chunk)" % (
                                2 * t.rng.range.length, t.rng.range.length)
                        self._give_up(t, "needs %s; the boards said: %s" % (need, "; ".join(note) or "too little"))
                    elif not any(not b.down for b in self.boards.values()):
                        continue  # wait for a board to come back (or GIVE_UP)
                    else:
                        self._settle_without_quorum(t)
