"""Share leases on the nodes (protocols/RESOURCES.md "Leases").

Every storage index a node holds has a lease: an expiry in the node's time
(epoch seconds, which it takes from the coordinator's registration answers).
A node deletes the shares of an index once its lease has run out, so the
coordinator keeps the files of its catalog alive by renewing their leases
before that (``POST /s/<si>?l=<seconds>``), and lets everything else go.

These calls use only :meth:`openheap.node.NodeClient.request`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import cbor2
from aiocoap import Code

from ohproto import const as P
from openheap.errors import CoapError, UsageError
from openheap.node import NodeClient, si_text

__all__ = ["LeaseInfo", "renew_lease", "read_lease", "renew_on"]

RENEW_CONCURRENCY = 8  # lease renewals in flight at once in one renew_on()


@dataclass
class LeaseInfo:
    """A node's ``lease-info`` answer: ``expires`` (None when the node has no
    lease recorded yet) and ``now``, its time (None when it has none)."""

    expires: int | None
    now: int | None

    @classmethod
    def from_payload(cls, payload: bytes) -> "LeaseInfo":
        """Decode a CBOR ``lease-info`` map (UsageError if it is not one)."""
        try:
            m = cbor2.loads(payload) if payload else {}
        except Exception as e:  # cbor2 raises several kinds on garbage
            raise UsageError("the node's lease-info is not valid CBOR (%s)" % e) from None
        if not isinstance(m, dict):
            raise UsageError("the node's lease-info is not a CBOR map")
        exp, now = m.get(P.LE_EXPIRES), m.get(P.LE_NOW)
        return cls(exp if isinstance(exp, int) else None, now if isinstance(now, int) else None)


def _seconds(seconds) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= P.LEASE_MAX:
        raise UsageError("a lease is a whole number of seconds from 0 to %d, not %r" % (P.LEASE_MAX, seconds))
    return seconds


async def renew_lease(client: NodeClient, si: bytes | str, seconds: int) -> LeaseInfo:
    """``POST /s/<si>?l=<seconds>``: the lease of ``si`` on this node becomes
    exactly the node's now + ``seconds``; returns the node's ``lease-info``.

    Raises :class:`CoapError` (4.04 when the node holds no share of ``si``,
    5.03 when it has no time yet) or :class:`NodeUnreachable`.
    """
    secs = _seconds(seconds)
    path = "%s/%s" % (P.PATH_SHARES, si_text(si))
    rsp = await client.request(Code.POST, path, query=(P.QUERY_LEASE + str(secs),))
    return LeaseInfo.from_payload(rsp.payload)


async def read_lease(client: NodeClient, si: bytes | str) -> LeaseInfo:
    """``GET /s/<si>?l``: the lease of ``si`` on this node (4.04 if it holds none)."""
    path = "%s/%s" % (P.PATH_SHARES, si_text(si))
    rsp = await client.request(Code.GET, path, query=(P.QUERY_LEASE_INFO,))
    return LeaseInfo.from_payload(rsp.payload)


async def renew_on(clients: dict[str, NodeClient], si: bytes, seconds: int,
                   nodes) -> dict[str, LeaseInfo | Exception]:
    """Renew the lease of ``si`` on each of ``nodes`` (names in ``clients``,
    e.g. an :class:`openheap.storage.engine.Grid`'s), a few at a time.

    Returns ``{node: LeaseInfo}`` for the renewed ones and ``{node:
    exception}`` (a :class:`CoapError` or :class:`OSError`) for the others;
    it never raises for one node's failure.
    """
    secs = _seconds(seconds)
    sem = asyncio.Semaphore(RENEW_CONCURRENCY)

    async def one(name):
        async with sem:
            try:
                return name, await renew_lease(clients[name], si, secs)
            except (CoapError, OSError, UsageError) as e:
                return name, e

    return dict(await asyncio.gather(*(one(nm) for nm in nodes if nm in clients)))
