"""The coordinator: the long-running process boards register with.

One asyncio loop runs

* the registration resource over CoAP (:mod:`.rd`: ``POST /rd``,
  ``POST /rd/<id>``), which keeps the node registry (:mod:`.registry`,
  SQLite in ``<home>/coordinator/grid.db``) up to date;
* the local HTTP API (:mod:`.api`, aiohttp on 127.0.0.1, bearer token), which
  the CLI reaches through :mod:`.client`; its file endpoints call a
  :class:`~.api.FileService`;
* a sweep that marks nodes unreachable when they stop refreshing.

:class:`~.service.Coordinator` ties them together; :mod:`.daemon` runs it in
the foreground (``openheap serve``) or detached (``openheap up``). The wire
contract for boards and the HTTP API are in docs/COORDINATOR.md.
"""

__all__ = ["Coordinator", "CoordinatorClient", "FileService", "Download", "PutOptions", "Registry"]


def __getattr__(name):  # lazy: the CLI imports the client without aiohttp/aiocoap
    if name == "Coordinator":
        from .service import Coordinator

        return Coordinator
    if name == "CoordinatorClient":
        from .client import CoordinatorClient

        return CoordinatorClient
    if name in ("FileService", "Download", "PutOptions"):
        from . import api

        return getattr(api, name)
    if name == "Registry":
        from .registry import Registry

        return Registry
    raise AttributeError(name)
