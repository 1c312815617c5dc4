"""Which boards a job runs on.

* :func:`from_coordinator`: the boards registered with the home's running
  coordinator (``GET /v1/nodes``: name, board, address, state); each board's
  definition (``boards/<board>.json``) gives its ``mpy_arch``, how many tasks
  it runs at once (``tasks``) and its heap budget.
* :func:`from_addresses`: explicit ``(host, port)`` pairs or ``"host:port"``
  strings; each board is asked ``GET /i`` for its name and board type.
"""

from __future__ import annotations

import asyncio

from ohproto import const as P
from openheap.compute.client import BoardClient
from openheap.compute.errors import NoBoards
from openheap.errors import CoapError, ConfigError, UsageError

__all__ = ["from_coordinator", "from_addresses", "client_for", "coordinator_nodes"]


def _definition(board: str | None):
    from openheap import boards

    if not board:
        return None
    try:
        return boards.get_board(board)
    except ConfigError:
        return None


def client_for(name: str, host: str, port: int, board: str | None, heap: int | None = None) -> BoardClient:
    """A :class:`BoardClient` set up from the board definition ``board``."""
    d = _definition(board)
    return BoardClient(name, host, port, board=board, arch=d.mpy_arch if d else None,
                       slots=d.tasks if d else 1, heap=heap or (d.heap_budget if d else None))


def coordinator_nodes(home=None) -> list[dict]:
    """The registered nodes of the home's coordinator (CoordinatorNotRunning if none runs)."""
    from openheap.coordinator.client import CoordinatorClient

    return [n for n in CoordinatorClient(home).nodes() if n.get("state") == "registered"]


def from_coordinator(home=None) -> list[BoardClient]:
    """Task clients for the boards registered with the coordinator of ``home``."""
    nodes = coordinator_nodes(home)
    if not nodes:
        raise NoBoards("no boards are registered with the coordinator; start some with 'openheap up'")
    return [client_for(n["name"], n["host"], int(n["port"]), n.get("board"), n.get("heap_total")) for n in nodes]


def _address(a) -> tuple[str, int]:
    if isinstance(a, str):
        host, sep, port = a.rpartition(":")
        if not sep or not port.isdigit():
            raise UsageError("a board address is host:port, not %r" % a)
        return host.strip("[]"), int(port)
    try:
        host, port = a
        return str(host), int(port)
    except (TypeError, ValueError):
        raise UsageError("a board address is (host, port) or 'host:port', not %r" % (a,)) from None


async def from_addresses(addresses, timeout: float = 2.0) -> list[BoardClient]:
    """Task clients for explicit board addresses (each asked GET /i); boards
    that do not answer are left out, NoBoards when none answers."""
    pairs = [_address(a) for a in addresses]

    async def one(host, port):
        probe = BoardClient("%s:%d" % (host, port), host, port)
        try:
            st = await probe.status(timeout=timeout)
        except (CoapError, OSError):
            return None
        finally:
            probe.close()
        name = st.get(P.ST_NAME) or "%s:%d" % (host, port)
        return client_for(str(name), host, port, st.get(P.ST_BOARD), st.get(P.ST_HEAP_TOTAL))

    got = [c for c in await asyncio.gather(*(one(h, p) for h, p in pairs)) if c is not None]
    if not got:
        raise NoBoards("none of the %d board address%s answered" % (len(pairs), "" if len(pairs) == 1 else "es"))
    names = [c.name for c in got]
    for c in got:  # two boards with one name: tell them apart by address
        if names.count(c.name) > 1:
            c.name = "%s@%s:%d" % (c.name, c.host, c.port)
    return got
