"""``openheap.Executor``: a :class:`concurrent.futures.Executor` whose workers
are the grid's boards.

::

    import openheap
    from concurrent.futures import as_completed

    with openheap.Executor() as ex:                 # the boards of the running coordinator
        print(list(ex.map(mymod.square, range(100))))
        futs = [ex.submit("job.py:work", x) for x in inputs]
        for f in as_completed(futs):
            print(f.result())

``submit(fn, *args)`` takes a module-level function of a ``.py`` file (the
module is compiled for the boards with mpy-cross, without its ``if __name__
== "__main__":`` blocks and its host-only imports) or a ``"file.py:func"``
string. Arguments and results travel as CBOR: None, bool, int, float, str,
bytes, lists (tuples arrive as lists) and dicts; keyword arguments are not
supported. A future raises :class:`~openheap.compute.errors.TaskError` when
the function raised on the board (``.type``, ``.text``) and
:class:`~openheap.compute.errors.TaskFailed` when no board could run it.

The scheduler (:mod:`openheap.compute.scheduler`) runs on an event loop in
a background thread; ``boards`` is None (the coordinator of ``home``), or a
list of ``(host, port)`` / ``"host:port"``. ``summary`` is the live
:class:`~openheap.compute.report.Summary`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import threading

from openheap.compute import code as C
from openheap.compute import grid as G
from openheap.compute.cache import ResultCache, cache_path
from openheap.compute.errors import TaskError
from openheap.compute.scheduler import BATCH, Board, Scheduler, Task
from openheap.compute.wire import dumps
from openheap.errors import UsageError

__all__ = ["Executor"]


class Executor(concurrent.futures.Executor):
    """Run Python functions on the grid's boards (see the module docstring).

    ``timeout`` (s) is each task's time limit, ``retries`` how often a task is
    tried again on another board, ``replicas`` how many boards must agree,
    ``heap`` the heap a task needs (bytes), ``cache`` whether to use the
    results cache ``<home>/compute/results.db``, ``batch`` how many quick
    tasks of one function may share a request (1: each its own; the
    default lets waiting quick tasks travel together, the way ``map``'s
    ``chunksize`` does for process pools).
    """

    def __init__(self, boards=None, *, home=None, timeout: float = 30.0, retries: int = 2, replicas: int = 1,
                 heap: int | None = None, cache: bool = True, speculate: bool = True, batch: int = BATCH):
        self.timeout, self.heap = timeout, heap
        self._modules: dict[tuple, C.Code] = {}
        self._shutdown = False
        self._lock = threading.Lock()
        self._futures: set[concurrent.futures.Future] = set()
        self._index = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openheap-executor", daemon=True)
        self._thread.start()
        self._cache = ResultCache(cache_path(home)) if cache else None
        try:
            self._sched: Scheduler = self._call(self._start(boards, home, retries, replicas, speculate, batch))
        except BaseException:
            self._stop_loop()
            raise

    # -- the loop thread
    def _call(self, coro, timeout=None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self, boards, home, retries, replicas, speculate, batch) -> Scheduler:
        if boards is None:
            clients = await asyncio.get_running_loop().run_in_executor(None, G.from_coordinator, home)
        else:
            clients = await G.from_addresses(boards)
        s = Scheduler([Board(c) for c in clients], retries=retries, replicas=replicas, cache=self._cache,
                      speculate=speculate, batch=batch)
        await s.start()
        return s

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    @property
    def summary(self):
        """The scheduler's :class:`~openheap.compute.report.Summary` so far."""
        return self._sched.summary

    @property
    def boards(self) -> list[str]:
        """Names of the boards tasks go to."""
        return list(self._sched.boards)

    # -- code
    def _resolve(self, fn) -> tuple[C.Code, str]:
        if isinstance(fn, str):
            path, sep, func = fn.rpartition(":")
            if not sep or not path:
                raise UsageError("a task is 'file.py:function', not %r" % fn)
            key = ("file", os.path.abspath(path), _stamp(path))
            if key not in self._modules:
                self._modules[key] = C.load_module(path)
            code = self._modules[key]
        elif callable(fn) and inspect.isfunction(fn):
            func = fn.__name__
            if fn.__qualname__ != func:
                raise UsageError("%s is not a module-level function; only those can run on a board" % fn.__qualname__)
            path = inspect.getsourcefile(fn)
            if not path or not os.path.isfile(path):
                raise UsageError("%s has no source file; define it in a .py file" % func)
            key = ("func", os.path.abspath(path), _stamp(path))
            if key not in self._modules:
                with open(path) as f:
                    self._modules[key] = C.Code(C.function_source(f.read()), os.path.basename(path))
            code = self._modules[key]
        else:
            raise UsageError("submit takes a module-level Python function or 'file.py:function', not %r" % (fn,))
        code.check_function(func)
        return code, func

    # -- Executor API
    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        """Run ``fn(*args)`` on a board; returns a Future."""
        if kwargs:
            raise TypeError("tasks take positional arguments only")
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            code, func = self._resolve(fn)
            args = list(args)
            try:
                dumps(args)
            except Exception as e:
                raise TypeError("the arguments cannot travel as CBOR: %s" % e) from None
            index = self._index
            self._index += 1
            task = Task(index, code, func, args, timeout=self.timeout, heap=self.heap)
            cf: concurrent.futures.Future = concurrent.futures.Future()
            self._futures.add(cf)
        self._loop.call_soon_threadsafe(self._dispatch, task, cf)
        return cf

    def _dispatch(self, task: Task, cf: concurrent.futures.Future) -> None:
        if cf.cancelled():
            self._futures.discard(cf)
            return
        fut = self._sched.submit(task)

        def done(f: asyncio.Future) -> None:
            self._futures.discard(cf)
            if not cf.set_running_or_notify_cancel():
                return
            exc = f.exception()
            if exc is not None:
                cf.set_exception(exc)
                return
            kind, value = f.result()
            if kind == "ok":
                cf.set_result(value)
            else:
                cf.set_exception(TaskError(value[0], value[1]))

        fut.add_done_callback(done)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; with ``wait``, let the submitted ones finish first."""
        with self._lock:
            if self._shutdown and self._thread is None:
                return
            self._shutdown = True
            pending = list(self._futures)
        if cancel_futures:
            for f in pending:
                f.cancel()
        if wait:
            concurrent.futures.wait([f for f in pending if not f.cancelled()])
        if self._thread is not None and self._loop.is_running():
            try:
                self._call(self._sched.close(), timeout=30)
            except Exception:  # the loop is going away regardless
                pass
            self._stop_loop()
            self._thread = None


def _stamp(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
