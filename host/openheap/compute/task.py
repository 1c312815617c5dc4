"""What the scheduler schedules: tasks, their attempts, and boards.

A :class:`Task` is one function call (code, function name, arguments, time
limit, heap need, optionally a range of a stored file); each run of it on a
board is an :class:`Attempt`; a :class:`Board` wraps a board's
:class:`~openheap.compute.client.BoardClient` with its state (down, busy)
and figures (done, raised, failed, lost, busy time, restarts).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from openheap.compute import wire as W
from openheap.compute.client import BoardClient
from openheap.compute.errors import TaskError

__all__ = ["Attempt", "Task", "Board", "task_error", "short"]


@dataclass
class Attempt:
    """One run of a task on one board."""

    board: str
    task_id: int
    started: float
    speculative: bool = False
    ended: float | None = None
    outcome: str | None = None  # value, error, failed, lost-race


class Task:
    """One function call to run on a board.

    ``args`` are the positional arguments (CBOR-able); ``rng`` is a
    :class:`openheap.compute.over.RangeRef` when the first argument is a
    range of a stored file; ``heap`` the heap it needs (bytes, optional).
    """

    def __init__(self, index, code, func: str, args: list, *, timeout: float = 30.0, heap: int | None = None,
                 rng=None):
        self.index, self.code, self.func, self.args = index, code, func, list(args)
        self.timeout, self.heap, self.rng = timeout, heap, rng
        self._args_cbor: bytes | None = None
        self._wire_args: bytes | None = None
        self.fut: asyncio.Future | None = None
        self.running: dict[str, Attempt] = {}
        self.tried: set[str] = set()
        self.unfit: set[str] = set()
        self.votes: dict[bytes, list[str]] = {}
        self.answers: dict[bytes, tuple[str, object]] = {}
        self.failures: list[tuple[str, str]] = []
        self.spec = 0
        self.heap_notes: dict[str, str] = {}  # board -> its 4.13 diagnostic
        self.done = False
        self.queued = False

    @property
    def wire_args(self) -> bytes:
        """The arguments as CBOR (TK_ARGS of its request), encoded once."""
        if self._wire_args is None:
            self._wire_args = W.dumps(self.args)
        return self._wire_args

    @property
    def args_cbor(self) -> bytes:
        """The arguments as the results cache keys them (a range: the file's
        storage index and the range, then the other arguments)."""
        if self._args_cbor is None:
            self._args_cbor = self.wire_args if self.rng is None else self.rng.key + self.wire_args
        return self._args_cbor

    def best_votes(self) -> int:
        """The most boards that gave one answer so far."""
        if not self.votes:
            return 0
        return max(len(v) for v in self.votes.values())

    def wants(self, replicas: int) -> bool:
        """True while it needs another attempt started."""
        return not self.done and len(self.running) + self.best_votes() < replicas


class Board:
    """A board as the scheduler sees it: client, state and figures."""

    def __init__(self, client: BoardClient, holds=()):
        self.client = client
        self.name = client.name
        self.holds = set(holds)  # (si, shnum) it stores, for --over
        self.down = False
        self.down_since = 0.0
        self.busy_until = 0.0
        self.busy_since = 0.0  # when its current spell of 5.03 busy answers began (0: none)
        self.busy_downs = 0  # times it was set aside for being busy since it last answered a task
        self.done = self.failed = self.lost = self.errors = 0
        self.busy_time = 0.0
        self.up_event = asyncio.Event()
        self.up_event.set()
        self.probing: asyncio.Task | None = None
        self.restarts: list[tuple[float, int | None]] = []  # (when, task id it said it lost)

    def answered(self) -> None:
        """It answered a task (not 5.03 busy): any spell of busy answers is over."""
        self.busy_since, self.busy_downs = 0.0, 0


def short(answer) -> str:
    """An answer in at most 60 characters, for messages."""
    kind, value = answer
    text = repr(value) if kind == "ok" else "%s: %s" % tuple(value)
    return text if len(text) <= 60 else text[:57] + "..."


def task_error(answer, board: str | None = None) -> TaskError:
    """An ``("error", (type, msg))`` answer as a :class:`TaskError`."""
    return TaskError(answer[1][0], answer[1][1], board)
