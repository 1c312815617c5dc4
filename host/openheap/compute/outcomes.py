"""What becomes of an attempt: a vote for a value, a failure to retry, a
task given up; the scheduler's bookkeeping of answers (a mixin of
:class:`openheap.compute.scheduler.Scheduler`, split out to keep modules
small).

An answer is ``("ok", value)``, ``("error", (type, message))`` (the
function raised) or ``("failed", TaskFailed)`` (no board could answer).
With ``replicas`` R a task is resolved when R boards gave the same answer
(compared as CBOR); every board that answered differently is reported as
outvoted. Failures of the grid count against ``retries``.
"""

from __future__ import annotations

import time

from openheap.compute import wire as W
from openheap.compute.errors import TaskFailed
from openheap.compute.task import Attempt, Board, Task, short

__all__ = ["Outcomes"]


class Outcomes:
    """Answer bookkeeping for the scheduler (uses its queues and summary)."""

    def _untried(self, t: Task) -> bool:
        return any(o.name not in t.tried and not o.down and self._fits(o, t) for o in self.boards.values())

    def _ended(self, t: Task, a: Attempt) -> None:
        t.running.pop(a.board, None)
        if not t.running:
            self._active.discard(t)

    def _abandon(self, t: Task, a: Attempt) -> None:
        self._ended(t, a)
        if a.board in t.tried and a.board not in t.unfit:
            t.tried.discard(a.board)
        if a.speculative:
            t.spec -= 1
            self.summary.speculative -= 1
        if not t.done:
            self._enqueue(t, front=True)
        self._poke()

    def _failed(self, b: Board, t: Task, a: Attempt, why: str, batch: bool = False) -> None:
        """Attempt ``a`` failed (the grid's fault, not the function's): try
        ``t`` again elsewhere while retries are left. ``batch``: the attempt
        was one of a batch that failed as a whole, so whose fault it was is
        not known: the task goes again, alone (it has tried ``b`` now, so it
        is not batched again), and this does not count against its retries."""
        self._ended(t, a)
        a.outcome, a.ended = "failed", time.monotonic()
        b.failed += 1
        if t.done:
            return
        if batch:
            self._troubled.add(t)
            self.summary.retry(t.index, b.name, why + " (its batch failed; sent again alone)", True)
            self._enqueue(t, front=True)
            return
        t.failures.append((b.name, why))
        self._troubled.add(t)
        self.summary.retry(t.index, b.name, why, len(t.failures) <= self.retries)
        if len(t.failures) > self.retries:
            if not t.running and not t.votes:
                self._give_up(t, "failed %d time%s: %s" % (len(t.failures), "" if len(t.failures) == 1 else "s",
                                                             "; ".join("%s: %s" % f for f in t.failures)))
            elif not t.running:
                self._settle_without_quorum(t)
            return
        self._enqueue(t, front=True)

    def _vote(self, b: Board, t: Task, a: Attempt, answer) -> None:
        self._ended(t, a)
        a.outcome, a.ended = answer[0], time.monotonic()
        if t.done:
            if a.speculative or self.replicas > 1:
                self.summary.late += 1
            return
        if self.replicas == 1 and self.cache is None:
            key = b""  # nothing to compare or keep
        else:
            key = W.dumps(answer[1]) if answer[0] == "ok" else b"E" + W.dumps(list(answer[1]))
        t.votes.setdefault(key, []).append(b.name)
        t.answers[key] = answer
        if len(t.votes[key]) >= self.replicas:
            if a.speculative:
                self.summary.spec_won += 1
            if len(t.votes) > 1:
                self.summary.disagree(t.index, {bd: t.answers[k] for k, bds in t.votes.items() for bd in bds}, key,
                                      t.answers)
            if self.cache is not None:
                if answer[0] == "ok":
                    self.cache.put_value(t.code.code_id, t.func, t.args_cbor, key)
                else:
                    self.cache.put_error(t.code.code_id, t.func, t.args_cbor, answer[1])
            self._resolve(t, answer)
            return
        if t.wants(self.replicas):
            if len(t.votes) > 1:
                self._troubled.add(t)
            self._enqueue(t, front=True)

    def _settle_without_quorum(self, t: Task) -> None:
        if t.votes and self.replicas > 1:
            detail = "; ".join("%s said %s" % ("+".join(bds), short(t.answers[k])) for k, bds in t.votes.items())
            self.summary.disagree(t.index, {bd: t.answers[k] for k, bds in t.votes.items() for bd in bds}, None,
                                  t.answers)
            self._give_up(t, "no %d boards agreed (%s)" % (self.replicas, detail))
        else:
            self._give_up(t, "failed: %s" % "; ".join("%s: %s" % f for f in t.failures))

    def _give_up(self, t: Task, why: str) -> None:
        if t.done:
            return
        self._resolve(t, ("failed", TaskFailed("task %s %s" % (t.index, why), t.failures)))

    def _resolve(self, t: Task, answer, cached: bool = False) -> None:
        t.done = True
        self._troubled.discard(t)
        self._active.discard(t)
        for a in t.running.values():
            a.outcome = "lost-race"
        if not cached:
            self._open -= 1
            if not self._open and self._drained is not None and not self._drained.done():
                self._drained.set_result(None)  # join() returns
        kind, value = answer
        if kind == "ok":
            self.summary.ok += 1
        elif kind == "error":
            self.summary.errors += 1
        else:
            self.summary.failed += 1
        if not t.fut.done():
            if kind == "failed":
                t.fut.set_exception(value)
            else:
                t.fut.set_result(answer)
        if self.on_done is not None:
            self.on_done(t, answer)
        self._poke()
