"""Errors of the compute grid, in the :mod:`openheap.errors` hierarchy.

Two kinds of trouble are told apart:

* the *job* cannot run (no boards, a module that does not compile, no such
  function, bad inputs): :class:`CompileError`, :class:`NoBoards`, plain
  :class:`~openheap.errors.UsageError`; the CLI prints one sentence;
* one *task* did not give a value: :class:`TaskError` (the function raised on
  the board: its type and message, e.g. ``ZeroDivisionError``) or
  :class:`TaskFailed` (no board could run it: timeouts, boards lost, retries
  used up). ``Executor`` futures raise these.

The per-board answers that the scheduler handles itself are
:class:`BoardBusy` (5.03, with the Max-Age the board asked for),
:class:`HeapTooSmall` (4.13) and :class:`CodeNotCached` (4.04 on POST /t).
"""

from __future__ import annotations

from openheap.errors import ClientError, OpenheapError, ServerError, UsageError

__all__ = ["CompileError", "NoBoards", "TaskError", "TaskFailed", "BoardBusy", "HeapTooSmall",
           "CodeNotCached", "TaskTimeout"]


class CompileError(UsageError):
    """The user's module does not compile (mpy-cross's message, with the line)."""


class NoBoards(OpenheapError):
    """No board can run tasks (none registered, none answering, none fits)."""

    exit_code = 7


class TaskError(OpenheapError):
    """The task's function raised on the board: ``type`` and ``text`` as the
    board reported them (``MemoryError``, ``ImportError``, ``ResultTooLarge``...)."""

    def __init__(self, type_name: str, text: str, board: str | None = None):
        self.type, self.text, self.board = type_name, text, board
        super().__init__("%s: %s" % (type_name, text) if text else type_name)


class TaskFailed(OpenheapError):
    """No board gave the task a result: every try failed (the reasons are in
    ``attempts``: ``[(board, reason), ...]``), or the replicas disagreed."""

    def __init__(self, message: str, attempts=()):
        self.attempts = list(attempts)
        super().__init__(message)


class TaskTimeout(OpenheapError):
    """A board did not answer a task within its time limit plus a margin."""


class BoardBusy(ServerError):
    """5.03: the board already runs as many tasks as it may; try again after
    ``max_age`` seconds."""

    def __init__(self, code, diagnostic=None, max_age: int | None = None):
        super().__init__(code, diagnostic)
        self.max_age = max_age


class HeapTooSmall(ClientError):
    """4.13: the board's task heap is smaller than the task asks for."""


class CodeNotCached(ClientError):
    """4.04 on POST /t: the board does not hold the module (PUT /c/<hex> first)."""
