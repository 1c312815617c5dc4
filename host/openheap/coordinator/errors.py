"""Errors of the coordinator and of the CLI's view of it.

Exit status 8 is the coordinator's: not running, already running, or its
API failed. Everything else the API reports keeps the exit status of the
error the coordinator raised (a bad capability is still a usage error, 2).
"""

from __future__ import annotations

from openheap.errors import OpenheapError

__all__ = ["CoordinatorError", "CoordinatorNotRunning", "AlreadyRunning", "NotFound", "NOT_RUNNING"]

NOT_RUNNING = "the coordinator is not running; start it with 'openheap up' or 'openheap serve'"


class CoordinatorError(OpenheapError):
    """The coordinator could not be started, reached or understood (exit 8)."""

    exit_code = 8


class CoordinatorNotRunning(CoordinatorError):
    """No coordinator serves this home."""

    def __init__(self, message: str = NOT_RUNNING):
        super().__init__(message)


class AlreadyRunning(CoordinatorError):
    """Another coordinator holds this home's lock; ``pid`` is its process id."""

    def __init__(self, home, pid: int | None):
        self.pid = pid
        who = "a coordinator (pid %d)" % pid if pid else "a coordinator"
        super().__init__(
            "%s is already running for %s; stop it with 'openheap down' or use another --home" % (who, home)
        )


class NotFound(OpenheapError):
    """Something named in a request does not exist (HTTP 404, exit 1)."""

    http_status = 404
