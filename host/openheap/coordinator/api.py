"""The coordinator's local HTTP API (aiohttp), for the CLI and scripts.

It listens on 127.0.0.1 only, on an ephemeral port written to
``<home>/coordinator/api.json``, and answers only requests carrying
``Authorization: Bearer <token>`` where the token is the content of
``<home>/coordinator/token`` (mode 0600). Everything else gets 401.

Every answer is JSON except a file download. Errors are::

    {"error": "<one sentence>", "kind": "<exception class>", "exit_code": N, "details": {...}}

with an HTTP status from :func:`http_status` (400 bad input, 401 token,
404 unknown, 501 not implemented, 503 not enough nodes or shares, ...), and
``exit_code`` the status the CLI exits with.

Routes are one table (:data:`ROUTES`); the file endpoints call a
:class:`FileService`, answering 501 while none is installed.
"""

from __future__ import annotations

import abc
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .. import __version__
from ..errors import CoapError, ConfigError, NodeUnreachable, OpenheapError, UsageError
from .registry import Registry, iso

__all__ = ["Api", "FileService", "Download", "ROUTES", "http_status", "error_json", "PutOptions"]

log = logging.getLogger("openheap.coordinator.api")

CHUNK = 1 << 16


# -- the file service the lead implements


@dataclass
class PutOptions:
    """Parameters of ``POST /v1/files`` (query string), already checked for type."""

    name: str | None = None  # catalog name (None: not named)
    size: int | None = None  # body length when known (Content-Length or ?size=)
    k: int | None = None  # None: the service's default (3, lowered for small grids)
    n: int | None = None  # None: default (10)
    happy: int | None = None  # None: default (7)
    random_key: bool = False  # convergent key unless true


@dataclass
class Download:
    """What :meth:`FileService.get` returns: the file's length and its bytes.

    ``chunks`` is iterated only after the HTTP status and headers are sent;
    an exception while iterating aborts the connection (the client sees a
    short body). ``headers`` are added to the response (e.g. reports).
    """

    size: int
    chunks: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)


class FileService(abc.ABC):
    """The coordinator's file operations, called by the HTTP file endpoints.

    Every method raises :class:`openheap.errors.OpenheapError` subclasses for
    anything a user can cause (its message is shown as is by the CLI; the
    HTTP status comes from :func:`http_status`, or from an ``http_status``
    attribute on the exception). Return values are JSON-ready.
    """

    async def start(self) -> None:
        """Called once the coordinator's CoAP context and registry are up."""

    async def close(self) -> None:
        """Called when the coordinator stops."""

    @abc.abstractmethod
    async def put(self, source: AsyncIterator[bytes], options: PutOptions) -> dict:
        """Store the bytes of ``source``; return at least ``{"cap": read-cap}``.

        ``POST /v1/files`` answers 201 with this dict.
        """

    @abc.abstractmethod
    async def get(self, cap: str) -> Download:
        """Open a file for reading by capability (``GET /v1/files/<cap>``)."""

    @abc.abstractmethod
    async def list_files(self) -> list[dict]:
        """The catalog (``GET /v1/files``)."""

    @abc.abstractmethod
    async def delete(self, cap: str) -> dict:
        """Delete a file's shares and catalog entries (``DELETE /v1/files/<cap>``)."""

    @abc.abstractmethod
    async def check(self, caps: list[str] | None, *, verify: bool = False, repair: bool = False) -> dict:
        """Check (``verify``: every block; ``repair``: rebuild) the files of
        ``caps``, or the whole catalog when None (``POST /v1/check``)."""

    async def delete_name(self, name: str) -> dict:
        """Remove catalog entry ``name`` (``DELETE /v1/files?name=``)."""
        raise NotImplementedError("this file service cannot remove files by name")

    async def describe(self, cap: str) -> dict:
        """What a capability points to (``GET /v1/caps/<cap>``)."""
        raise NotImplementedError("this file service cannot describe capabilities")

    async def add(self, cap: str, name: str | None = None) -> dict:
        """Put a capability into the catalog (``POST /v1/catalog``)."""
        raise NotImplementedError("this file service cannot add capabilities to the catalog")

    async def last_read(self, cap: str) -> dict:
        """What the latest read of a file found (``GET /v1/files/<cap>/last-read``):
        which node served which share, and the shares found corrupt or failing."""
        raise NotImplementedError("this file service keeps no record of reads")


# -- errors


def http_status(exc: BaseException) -> int:
    """The HTTP status for an exception raised by a handler or a FileService."""
    status = getattr(exc, "http_status", None)
    if isinstance(status, int):
        return status
    from ..storage.errors import IntegrityError, NotEnoughShares, NotHappy

    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, (NotEnoughShares, NotHappy)):
        return 503
    if isinstance(exc, NodeUnreachable):
        return 504
    if isinstance(exc, (CoapError, IntegrityError)):
        return 502
    if isinstance(exc, NotImplementedError):
        return 501
    return 500


_DETAILS = ("found", "needed", "happiness", "shnums", "node", "code", "diagnostic", "pid")


def error_json(exc: BaseException) -> dict:
    """The JSON error body for ``exc``."""
    if isinstance(exc, OpenheapError):
        message, exit_code = str(exc), exc.exit_code
    elif isinstance(exc, NotImplementedError):
        message, exit_code = str(exc) or "this is not implemented yet", 1
    else:
        message = "the coordinator failed: %s: %s (see its log)" % (type(exc).__name__, exc)
        exit_code = 1
    details = {k: getattr(exc, k) for k in _DETAILS if getattr(exc, k, None) is not None}
    return {"error": message, "kind": type(exc).__name__, "exit_code": exit_code,
            "details": json.loads(json.dumps(details, default=str))}


def _json(data, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data) + "\n", content_type="application/json")


def _error(status: int, message: str, kind: str, exit_code: int = 1) -> web.Response:
    return _json({"error": message, "kind": kind, "exit_code": exit_code, "details": {}}, status)


# -- the application

# (method, path, Api method name): the whole API.
ROUTES = [
    ("GET", "/v1/status", "status"),
    ("GET", "/v1/nodes", "nodes"),
    ("DELETE", "/v1/nodes/{name}", "node_remove"),
    ("POST", "/v1/files", "files_put"),
    ("GET", "/v1/files", "files_list"),
    ("GET", "/v1/files/{cap}", "files_get"),
    ("GET", "/v1/files/{cap}/last-read", "files_last_read"),
    ("DELETE", "/v1/files/{cap}", "files_delete"),
    ("DELETE", "/v1/files", "files_delete_name"),
    ("GET", "/v1/caps/{cap}", "caps_describe"),
    ("POST", "/v1/catalog", "catalog_add"),
    ("POST", "/v1/check", "check"),
    ("GET", "/v1/upkeep", "upkeep_status"),
]


def _flag(text: str | None, what: str) -> bool:
    if text is None:
        return False
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on", ""):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise UsageError("%s must be true or false, not %r" % (what, text))


def _int(text: str | None, what: str, low: int = 0, high: int = 1 << 62) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise UsageError("%s must be a whole number from %d to %d, not %r" % (what, low, high, text))
    return int(text)


class Api:
    """The HTTP API of one coordinator.

    ``status_info`` returns extra fields for ``GET /v1/status`` (addresses,
    pid, home); ``files`` is the :class:`FileService` (None: 501 stubs);
    ``upkeep`` returns the lease renewal and repair scheduler figures for
    ``GET /v1/upkeep`` (None: 501).
    """

    def __init__(self, registry: Registry, token: str, *, files: FileService | None = None,
                 status_info: Callable[[], dict] | None = None, clock=time.time,
                 upkeep: Callable[[], dict] | None = None):
        self.registry = registry
        self.upkeep = upkeep
        self.token = token
        self.files = files
        self.status_info = status_info or dict
        self.clock = clock
        self.started = clock()
        self.app = web.Application(middlewares=[self._errors, self._auth])
        for method, path, name in ROUTES:
            self.app.router.add_route(method, path, getattr(self, name))
        self._runner: web.AppRunner | None = None
        self.host: str | None = None
        self.port: int | None = None

    def add_route(self, method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        """Add an endpoint (before :meth:`start`); it gets the token check and JSON errors."""
        self.app.router.add_route(method, path, handler)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: ephemeral); return the port."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=False)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError("cannot listen for the HTTP API on %s:%d: %s" % (host, port, e.strerror or e)) from None
        self.host = host
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- middlewares

    @web.middleware
    async def _errors(self, request, handler):
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            if e.status == 404:
                msg = "there is no %s in the openheap API" % request.path
            elif e.status == 405:
                msg = "%s is not allowed on %s" % (request.method, request.path)
            else:
                msg = e.reason
            return _error(e.status, msg, type(e).__name__)
        except Exception as e:  # any error becomes a JSON answer; unexpected ones are logged
            status = http_status(e)
            if not isinstance(e, (OpenheapError, NotImplementedError)):
                log.exception("%s %s failed", request.method, request.path)
            return _json(error_json(e), status)

    @web.middleware
    async def _auth(self, request, handler):
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            why = "no token was sent" if not header else "the token is wrong"
            return _error(401, "the openheap API needs the token from the coordinator's home (%s)" % why,
                          "Unauthorized", 8)
        return await handler(request)

    # -- coordinator endpoints

    async def status(self, request):
        now = self.clock()
        body = {
            "version": __version__,
            "started": iso(self.started),
            "uptime": round(now - self.started, 1),
            "nodes": self.registry.counts(now=now),
            "files": len(self.registry.files()),
            "file_service": self.files is not None,
        }
        body.update(self.status_info())
        return _json(body)

    async def nodes(self, request):
        state = request.query.get("state")
        now = self.clock()
        return _json([n.to_json(now) for n in self.registry.nodes(state=state, now=now)])

    async def node_remove(self, request):
        name = request.match_info["name"]
        if not self.registry.remove_node(name):
            from .errors import NotFound

            raise NotFound("there is no node named %s in the registry" % name)
        log.info("node %s removed from the registry", name)
        return _json({"removed": name})

    # -- file endpoints (delegated to the FileService)

    def _service(self) -> FileService:
        if self.files is None:
            raise NotImplementedError("this coordinator cannot store files yet (no file service is installed)")
        return self.files

    async def files_put(self, request):
        service = self._service()
        q = request.query
        size = request.content_length
        if size is None:
            size = _int(q.get("size"), "size")
        options = PutOptions(
            name=q.get("name") or None,
            size=size,
            k=_int(q.get("k"), "k", 1, 256),
            n=_int(q.get("n"), "n", 1, 256),
            happy=_int(q.get("happy"), "happy", 1, 256),
            random_key=_flag(q.get("random_key"), "random_key"),
        )
        result = await service.put(request.content.iter_chunked(CHUNK), options)
        return _json(result, 201)

    async def files_list(self, request):
        return _json(await self._service().list_files())

    async def files_get(self, request):
        download = await self._service().get(request.match_info["cap"])
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(download.size)}
        headers.update(download.headers)
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        sent = 0
        try:
            async for chunk in download.chunks:
                sent += len(chunk)
                await response.write(chunk)
        except Exception as e:
            # Too late for an error status: log it and cut the body short.
            log.error("GET of %s broke off after %d of %d bytes: %s", request.match_info["cap"][:24], sent,
                      download.size, e)
            raise
        await response.write_eof()
        return response

    async def files_last_read(self, request):
        return _json(await self._service().last_read(request.match_info["cap"]))

    async def files_delete(self, request):
        return _json(await self._service().delete(request.match_info["cap"]))

    async def files_delete_name(self, request):
        name = request.query.get("name")
        if not name:
            raise UsageError("DELETE /v1/files needs ?name=<catalog name> (or use DELETE /v1/files/<cap>)")
        return _json(await self._service().delete_name(name))

    async def caps_describe(self, request):
        return _json(await self._service().describe(request.match_info["cap"]))

    async def catalog_add(self, request):
        service = self._service()
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("cap"), str) or not (
                body.get("name") is None or isinstance(body.get("name"), str)):
            raise UsageError('the body of POST /v1/catalog must be {"cap": capability, "name": optional name}')
        return _json(await service.add(body["cap"], body.get("name") or None), 201)

    async def upkeep_status(self, request):
        if self.upkeep is None:
            raise NotImplementedError("this coordinator has no lease renewal or repair scheduler "
                                      "(no grid file service)")
        return _json(self.upkeep())

    async def check(self, request):
        service = self._service()
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise UsageError("the body of POST /v1/check must be a JSON object") from None
        if not isinstance(body, dict):
            raise UsageError("the body of POST /v1/check must be a JSON object")
        caps = body.get("caps")
        if body.get("all"):
            caps = None
        elif not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise UsageError('POST /v1/check needs "caps": [capability, ...] or "all": true')
        verify = bool(body.get("verify"))
        repair = bool(body.get("repair"))
        return _json(await service.check(caps, verify=verify, repair=repair))

