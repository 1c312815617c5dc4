"""The compute grid (issue 4): jobs cut into tasks that run on the boards.

Layers, bottom up (each module's docstring says more):

``wire``       the task protocol's numbers and payloads (TK_/TR_/TS_ keys)
``code``       compiling the user's module with mpy-cross; the code hash
``client``     one board: PUT /c, POST /t, GET /t/<id> with Observe, DELETE
``cache``      results by (code id, function, CBOR args) in SQLite
``scheduler``  many tasks over many boards: retries, speculation, replicas
``over``       ranges of a stored file computed where its shares are
``job``        a whole job (what ``openheap run`` does)
``executor``   :class:`Executor`, a ``concurrent.futures.Executor``
"""

from __future__ import annotations

__all__ = ["Executor", "TaskError", "TaskFailed"]


def __getattr__(name):  # lazy: importing openheap stays cheap
    if name == "Executor":
        from openheap.compute.executor import Executor

        return Executor
    if name in ("TaskError", "TaskFailed"):
        from openheap.compute import errors

        return getattr(errors, name)
    raise AttributeError(name)
