"""Boards that stop answering, and tasks no board can run (a mixin of
:class:`openheap.compute.scheduler.Scheduler`).

A board that fails an attempt by silence or an ICMP error is marked down:
no task goes to it, and it is probed with ``GET /i`` (every 0.25 s, backing
off to 2 s) until it answers; a board restarted by its watchdog then says
which task it lost (``ST_TASK_LOST``), which goes into the summary. The
watch loop fails tasks that cannot be run: every board gone for
``GIVE_UP`` seconds, too little heap everywhere, replicas that cannot agree.
"""

from __future__ import annotations

import asyncio
import time

from openheap.compute import wire as W
from openheap.compute.task import Board
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

    async def _probe(self, b: Board) -> None:
        pause = PROBE_MIN
        while not self._closing:
            await asyncio.sleep(pause)
            try:
                st = await b.client.status(timeout=max(pause, 0.5))
            except (CoapError, OSError):
                pause = min(pause * 1.5, PROBE_MAX)
                continue
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
