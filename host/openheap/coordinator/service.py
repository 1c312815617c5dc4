"""The coordinator process: CoAP registration, registry and HTTP API in one loop.

Files in ``<home>/coordinator/`` (the folder is mode 0700):

``grid.db``          the registry (:mod:`openheap.coordinator.registry`)
``token``            the API's bearer token, mode 0600, made at first start
``coordinator.pid``  pid of the running coordinator, locked (``flock``) while
                     it runs, so that two coordinators never share a home
``api.json``         while running: ``{"pid", "api", "api_port", "coap_host",
                     "coap_port", "coap", "home", "version", "started"}``
``state.json``       the last CoAP port, reused at the next start when free so
                     that boards configured with it keep finding the coordinator
``coordinator.log``  its log when started in the background by ``openheap up``

``Coordinator(home).run()`` serves until SIGTERM or SIGINT, then stops
cleanly (API closed, CoAP socket closed, ``api.json`` removed, lock freed).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import aiocoap

from ohproto import const as P

from .. import __version__
from .api import Api, FileService
from .errors import AlreadyRunning, CoordinatorError
from .paths import Paths, paths
from .rd import make_site
from .registry import DEFAULT_GRACE, UNREACHABLE, Registry, iso
from .upkeep_loop import Upkeep, UpkeepConfig

__all__ = ["Coordinator", "Paths", "paths", "load_or_create_token", "DEFAULT_COAP_PORT", "LEASE_DEFAULT",
           "default_file_service", "CoordinatorThread"]

log = logging.getLogger("openheap.coordinator")

DEFAULT_COAP_PORT = 5683
LEASE_DEFAULT = P.LEASE_DEFAULT  # seconds a share lease lasts (31 days, as Tahoe)
SWEEP_INTERVAL = 1.0  # seconds between checks for nodes that stopped refreshing


def _ensure_dir(p: Paths) -> None:
    try:
        p.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(p.dir, 0o700)
    except OSError as e:
        raise CoordinatorError("cannot use %s for the coordinator: %s" % (p.dir, e.strerror or e)) from None


def load_or_create_token(path: Path) -> str:
    """The API token in ``path``; made (random, mode 0600) if missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise CoordinatorError("cannot create the API token %s: %s" % (path, e.strerror or e)) from None
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    try:
        token = path.read_text().strip()
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError as e:
        raise CoordinatorError("cannot read the API token %s: %s" % (path, e.strerror or e)) from None
    if len(token) < 16:
        raise CoordinatorError("the API token in %s is too short; delete the file to get a new one" % path)
    return token


def _write_json(path: Path, data, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp%d" % os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def default_file_service(coordinator: "Coordinator") -> FileService | None:
    """The file service of module ``openheap.coordinator.files`` if it exists
    (its ``create_file_service(coordinator)``), else None (501 stubs)."""
    import importlib.util

    if importlib.util.find_spec("openheap.coordinator.files") is None:
        return None
    from . import files  # type: ignore[attr-defined]

    return files.create_file_service(coordinator)


class Coordinator:
    """One coordinator for one openheap home.

    ``coap_port``: None picks the port used last time if free, else 5683 if
    free, else an ephemeral one; 0 is always ephemeral; any other number is
    used or fails. ``api_port`` 0 is ephemeral. ``files`` is a FileService,
    or a callable ``(coordinator) -> FileService | None`` called at start.
    ``upkeep`` (an :class:`UpkeepConfig`; default: its defaults with
    ``lease_default`` as the lease) sets lease renewal and the repair
    scheduler, which run when the file service is the grid's own
    (:mod:`openheap.coordinator.files`).
    """

    def __init__(self, home=None, coap_host: str = "127.0.0.1", coap_port: int | None = None, api_port: int = 0, *,
                 api_host: str = "127.0.0.1", lease_default: int = LEASE_DEFAULT, grace: float = DEFAULT_GRACE,
                 sweep_interval: float = SWEEP_INTERVAL, files=None, upkeep: UpkeepConfig | None = None,
                 clock=time.time):
        self.paths = paths(home)
        self.home = self.paths.home
        self.coap_host = coap_host
        self.coap_port_wanted = coap_port
        self.api_host = api_host
        self.api_port_wanted = api_port
        self.upkeep_config = (upkeep if upkeep is not None else UpkeepConfig(lease=int(lease_default))).validate()
        self.lease_default = self.upkeep_config.lease
        self.upkeep: Upkeep | None = None
        self.grace = float(grace)
        self.sweep_interval = float(sweep_interval)
        self.clock = clock
        self._files_arg = files
        self.files: FileService | None = None
        self.registry: Registry | None = None
        self.coap_context: aiocoap.Context | None = None  # also usable as a client context
        self.coap_port: int | None = None
        self.api: Api | None = None
        self.api_port: int | None = None
        self.started: float | None = None
        self.listeners: list[Callable] = []  # callables (event, NodeRecord, previous state)
        self._lock_fd: int | None = None
        self._sweeper: asyncio.Task | None = None
        self._stop_event: asyncio.Event | None = None

    # -- start and stop

    async def start(self) -> None:
        """Lock the home, open the registry, bind CoAP and the API, write api.json."""
        _ensure_dir(self.paths)
        self._lock()
        try:
            token = load_or_create_token(self.paths.token)
            self.registry = Registry(self.paths.db, grace=self.grace, clock=self.clock)
            self.registry.on_missed_sweep = self._unreachable
            site = make_site(self.registry, lease_default=self.lease_default, clock=self.clock,
                             on_event=self._event)
            self.coap_context, self.coap_port = await self._bind_coap(site)
            files = self._files_arg
            if callable(files) and not isinstance(files, FileService):
                files = files(self)
            self.files = files
            if self.files is not None:
                await self.files.start()
            if self.files is not None and hasattr(self.files, "record_check"):  # the grid's own file service
                self.upkeep = Upkeep(self, self.files, self.upkeep_config)
            self.api = Api(self.registry, token, files=self.files, status_info=self._status_info, clock=self.clock,
                           upkeep=self.upkeep.status if self.upkeep is not None else None)
            self.api_port = await self.api.start(self.api_host, self.api_port_wanted)
            self.started = self.clock()
            _write_json(self.paths.state, {"coap_port": self.coap_port})
            _write_json(self.paths.api, self.describe())
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
            if self.upkeep is not None:
                self.upkeep.start()
        except BaseException:
            await self._teardown()
            raise
        log.info("coordinator %s for %s: CoAP on %s:%d, API on http://%s:%d (pid %d)", __version__, self.home,
                 self.coap_host, self.coap_port, self.api_host, self.api_port, os.getpid())

    async def stop(self) -> None:
        """Undo :meth:`start` (safe to call twice)."""
        if self.registry is not None:
            log.info("coordinator stopping")
        await self._teardown()

    async def _teardown(self) -> None:
        if self.upkeep is not None:
            await self.upkeep.stop()
            self.upkeep = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except (asyncio.CancelledError, Exception):
                pass
            self._sweeper = None
        if self.api is not None:
            await self.api.stop()
            self.api = None
        if self.files is not None:
            try:
                await self.files.close()
            except Exception:
                log.exception("the file service failed to close")
            self.files = None
        if self.coap_context is not None:
            await self.coap_context.shutdown()
            self.coap_context = None
        if self._lock_fd is not None and _read_json(self.paths.api).get("pid") == os.getpid():
            try:
                self.paths.api.unlink()
            except OSError:
                pass
        if self.registry is not None:
            self.registry.close()
            self.registry = None
        self._unlock()

    def describe(self) -> dict:
        """What ``api.json`` holds."""
        host = "[%s]" % self.coap_host if ":" in self.coap_host else self.coap_host
        return {
            "pid": os.getpid(),
            "api": "http://%s:%d" % (self.api_host, self.api_port),
            "api_port": self.api_port,
            "coap_host": self.coap_host,
            "coap_port": self.coap_port,
            "coap": "%s:%d" % (host, self.coap_port),
            "home": str(self.home),
            "version": __version__,
            "started": iso(self.started),
        }

    def _status_info(self) -> dict:
        d = self.describe()
        return {k: d[k] for k in ("pid", "api", "coap", "home")}

    # -- running

    async def serve(self, ready: Callable[["Coordinator"], None] | None = None) -> None:
        """Start, call ``ready(self)``, serve until SIGTERM/SIGINT or :meth:`request_stop`, stop."""
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        handled = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                handled.append(sig)
            except (RuntimeError, ValueError):  # not the main thread
                pass
        try:
            await self.start()
            if ready is not None:
                ready(self)
            await self._stop_event.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            await self.stop()

    def _on_signal(self, sig) -> None:
        log.info("received %s", signal.Signals(sig).name)
        self.request_stop()

    def request_stop(self) -> None:
        """Make :meth:`serve` return (from the loop's thread)."""
        if self._stop_event is not None:
            self._stop_event.set()

    def run(self, ready=None) -> None:
        """Blocking :meth:`serve` in a new event loop."""
        asyncio.run(self.serve(ready))

    # -- internals

    def _lock(self) -> None:
        try:
            fd = os.open(self.paths.pid, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise CoordinatorError("cannot create %s: %s" % (self.paths.pid, e.strerror or e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                pid = int(os.read(fd, 32).decode().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            os.close(fd)
            raise AlreadyRunning(self.home, pid or None) from None
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                os.ftruncate(self._lock_fd, 0)
            except OSError:
                pass
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _candidate_ports(self) -> list[int]:
        if self.coap_port_wanted is not None:
            return [int(self.coap_port_wanted)]
        ports = []
        last = _read_json(self.paths.state).get("coap_port")
        if isinstance(last, int) and 0 < last < 65536:
            ports.append(last)
        if DEFAULT_COAP_PORT not in ports:
            ports.append(DEFAULT_COAP_PORT)
        ports.append(0)
        return ports

    async def _bind_coap(self, site) -> tuple[aiocoap.Context, int]:
        candidates = self._candidate_ports()
        for i, port in enumerate(candidates):
            try:
                ctx = await open_coap_server(site, self.coap_host, port)
            except OSError as e:
                if e.errno == errno.EADDRINUSE and i + 1 < len(candidates):
                    log.info("CoAP port %d on %s is taken; trying %s", port, self.coap_host,
                             candidates[i + 1] or "an ephemeral port")
                    continue
                raise CoordinatorError("cannot listen for CoAP on %s:%d: %s" % (
                    self.coap_host, port, e.strerror or e)) from None
            return ctx, _local_port(ctx) or port
        raise AssertionError("unreachable")

    def _event(self, event: str, rec, previous) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, rec, previous)
            except Exception:
                log.exception("node listener %r failed", listener)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                changed = self.registry.sweep()
            except Exception:
                log.exception("sweeping the registry failed")
                continue
            for rec in changed:
                self._unreachable(rec)

    def _unreachable(self, rec, now: float | None = None) -> None:
        """Log and announce that ``rec`` (as last seen) stopped refreshing:
        found by the sweep, or by its own late refresh before a sweep ran."""
        now = self.clock() if now is None else now
        log.warning("node %s is unreachable: no refresh for %.0f s (lifetime %d s)", rec.name,
                    now - rec.last_seen, rec.lifetime)
        self._event(UNREACHABLE, rec, "registered")


async def open_coap_server(site, host: str, port: int) -> aiocoap.Context:
    """An aiocoap server context on UDP ``host:port`` only (no TCP, no
    WebSockets), without SO_REUSEPORT so that a taken port is an error
    (EADDRINUSE) instead of silently shared."""
    saved = os.environ.get("AIOCOAP_REUSE_PORT")
    os.environ["AIOCOAP_REUSE_PORT"] = "0"
    try:
        return await aiocoap.Context.create_server_context(site, bind=(host, port), transports=["udp6"],
                                                           loggername="openheap.coordinator.coap")
    finally:
        if saved is None:
            os.environ.pop("AIOCOAP_REUSE_PORT", None)
        else:
            os.environ["AIOCOAP_REUSE_PORT"] = saved


def _local_port(ctx: aiocoap.Context) -> int | None:
    """The UDP port an aiocoap server context is bound to."""
    for ri in ctx.request_interfaces:
        mi = getattr(getattr(ri, "token_interface", None), "message_interface", None)
        sock = getattr(getattr(mi, "transport", None), "get_extra_info", lambda _k: None)("socket")
        if sock is not None:
            return sock.getsockname()[1]
    return None


class CoordinatorThread:
    """A :class:`Coordinator` serving in a background thread with its own loop
    (for tests and for embedding in a synchronous program)::

        with CoordinatorThread(home, coap_port=0) as c:
            ...  # c is the Coordinator; c.coap_port, c.api_port, c.registry
    """

    def __init__(self, home=None, **kwargs):
        self.coordinator = Coordinator(home, **kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> Coordinator:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="openheap-coordinator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise CoordinatorError("the coordinator did not start within %g s" % timeout)
        if self._error is not None:
            self._thread.join(5)
            raise self._error
        return self.coordinator

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.coordinator.serve(lambda _c: self._ready.set()))
        except BaseException as e:  # reported by start()
            self._error = e
        finally:
            self._ready.set()
            self.loop.close()

    def call(self, coro, timeout: float = 30.0):
        """Run a coroutine on the coordinator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.coordinator.request_stop)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Coordinator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
