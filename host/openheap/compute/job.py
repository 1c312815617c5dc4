"""A whole job in one call: boards, tasks, scheduler, results in order.

:func:`run_job` is what ``openheap run`` does (and what the benchmark
calls): it builds a :class:`~openheap.compute.scheduler.Task` per input,
runs them over the boards, and returns the answers in input order with the
summary. :func:`prepare_over` sets up a job over a stored file's ranges
(``--over CAP``): where the systematic shares are (``engine.locate``) and
how to fetch plaintext when the bytes have to be shipped.
"""

from __future__ import annotations

import asyncio
import io

from openheap.compute import over as O
from openheap.compute.client import BoardClient
from openheap.compute.report import IP_UDP
from openheap.compute.scheduler import BATCH, Board, Scheduler, Task
from openheap.errors import CoapError, UsageError
from openheap.storage.errors import StorageError
from openheap.storage.layout import HEADER_SIZE, parse_header

__all__ = ["run_job", "prepare_over", "Answer"]


class Answer:
    """One input's outcome: ``status`` ok / raised / failed, with ``value`` or
    ``error`` (``[type, message]``)."""

    __slots__ = ("index", "status", "value", "error")

    def __init__(self, index, status, value=None, error=None):
        self.index, self.status, self.value, self.error = index, status, value, error

    def to_json(self, extra: dict | None = None) -> dict:
        """The JSON line ``openheap run`` writes."""
        from openheap.compute.wire import to_json

        d = {"input": self.index}
        if extra:
            d.update(extra)
        d["status"] = "ok" if self.status == "ok" else "failed"
        if self.status == "ok":
            d["value"] = to_json(self.value)
        else:
            d["error"] = list(self.error)
            if self.status == "failed":
                d["grid"] = True  # no board gave an answer (not the function's own exception)
        return d


async def run_job(clients: list[BoardClient], code, func: str, inputs, *, timeout: float = 30.0,
                  retries: int = 2, replicas: int = 1, heap: int | None = None, cache=None,
                  speculate: bool = True, progress=None, holds=None, ranges=None, source=None,
                  ship: bool = False, batch: int = BATCH) -> tuple[list[Answer], object]:
    """Run ``func`` of ``code`` once per input (a list of positional-argument
    lists), or once per range of ``ranges`` (with ``source``). Returns
    ``(answers in input order, summary)``. ``progress(done, total)`` is
    called as answers come in. ``batch``: quick tasks per request at most
    (1: one task per request)."""
    holds = holds or {}
    boards = [Board(c, holds.get(c.name, ())) for c in clients]
    if ranges is not None:
        tasks = [Task(r.index, code, func, [], timeout=timeout, heap=heap, rng=source.ref(r, ship)) for r in ranges]
    else:
        tasks = [Task(i, code, func, args, timeout=timeout, heap=heap) for i, args in enumerate(inputs)]
    total = len(tasks)
    done = 0

    def on_done(task, answer):
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    sched = Scheduler(boards, retries=retries, replicas=replicas, cache=cache, speculate=speculate, on_done=on_done,
                      batch=batch)
    await sched.start()
    try:
        futs = [sched.submit(t) for t in tasks]
        await sched.join()
    finally:
        await sched.close()
    answers = []
    for i, f in enumerate(futs):
        exc = f.exception()
        if exc is not None:
            answers.append(Answer(i, "failed", error=("TaskFailed", str(exc))))
            continue
        kind, value = f.result()
        answers.append(Answer(i, "ok", value=value) if kind == "ok" else Answer(i, "raised", error=value))
    if source is not None:
        for counters in source.other_traffic:  # the whole file read when no holder answered
            sched.summary.add_wire("file read", counters)
        loc = source.locate_traffic
        sched.summary.extra["over"] = {"ranges": len(ranges), "shipped": len(sched.summary.shipped),
                                       "fetched_bytes": source.fetched, "whole_file_reads": len(source.other_traffic),
                                       "locate_ip_bytes": loc[2] + loc[3] + IP_UDP * (loc[0] + loc[1])}
    return answers, sched.summary


async def prepare_over(clients: list[BoardClient], cap, chunk: int = O.DEFAULT_CHUNK):
    """``(source, ranges, holds)`` for a job over the file ``cap`` (a read-cap):
    ``holds`` maps board name -> {(si, shnum)} of the systematic shares it holds."""
    from openheap.storage import engine
    from openheap.storage.caps import LiteralCap, ReadCap

    if isinstance(cap, LiteralCap):
        raise UsageError("this file (%d bytes) is kept inside its capability and has no shares to compute "
                         "next to; pass its bytes as an input instead" % cap.size)
    if not isinstance(cap, ReadCap):
        raise UsageError("--over needs a read capability (oh:r1:...): the boards need the key of each range")
    peers = [engine.Peer(c.name, c.host, c.port) for c in clients]
    async with engine.Grid(peers, timeout=5.0) as grid:
        found = await engine.locate(grid, cap.storage_index)
        located = _grid_counters(grid)
    by_name = {c.name: c for c in clients}
    holders = {s: [by_name[nm] for nm, _, _ in lst if nm in by_name] for s, lst in found.items() if s < cap.k}
    missing = [s for s in range(cap.k) if not holders.get(s)]
    holds: dict[str, set] = {}
    for s, lst in holders.items():
        for c in lst:
            holds.setdefault(c.name, set()).add((cap.storage_index, s))

    async def whole() -> bytes:
        buf = io.BytesIO()
        async with engine.Grid(peers, timeout=10.0) as g:
            try:
                await engine.get(g, cap, buf)
            finally:
                source.other_traffic.append(_grid_counters(g))
        return buf.getvalue()

    if len(missing) == cap.k and not found:
        raise UsageError("no board holds a share of this file; is it stored on this grid?")
    source = O.Source(cap, holders, whole)
    source.locate_traffic = located
    segsize = None  # the share header says which segment size the file was stored with
    for c in [c for lst in holders.values() for c in lst]:
        try:
            chan = await c.channel()
            chan.timeout = 5.0
            head = parse_header(await chan.read_range(source.share_path(_first(holders, c)), 0, HEADER_SIZE))
        except (CoapError, OSError, StorageError):
            continue
        segsize = head.params.segsize
        break
    return source, O.plan(cap.k, cap.n, cap.size, chunk, segsize), holds


def _grid_counters(grid) -> tuple[int, int, int, int]:
    """Datagrams and UDP payload bytes both ways on a storage Grid's share channels."""
    out = [0, 0, 0, 0]
    for c in grid.clients.values():
        ch = c._chan
        if ch is not None:
            for i, v in enumerate((ch.sent, ch.received, ch.bytes_sent, ch.bytes_received)):
                out[i] += v
    return tuple(out)


def _first(holders, client) -> int:
    return min(s for s, lst in holders.items() if client in lst)


_ = asyncio
