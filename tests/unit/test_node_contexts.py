"""openheap.node.ContextPool: the coordinator keeps one aiocoap client
context per node between grid operations. A grid borrows them and must
leave them working when it closes; the pool's own close shuts them down."""

from __future__ import annotations

import asyncio
import socket

import aiocoap
import aiocoap.resource as resource
import cbor2

from ohproto import const as P
from openheap.node import ContextPool, NodeClient
from openheap.storage.engine import Grid, Peer


class _Status(resource.Resource):
    def __init__(self):
        super().__init__()
        self.asked = 0

    async def render_get(self, request):
        self.asked += 1
        return aiocoap.Message(payload=cbor2.dumps({1: "node-%d" % self.asked}))


async def _server():
    site = resource.Site()
    st = _Status()
    site.add_resource([P.PATH_STATUS], st)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a free UDP port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    return ctx, st, port


def test_a_pooled_context_outlives_the_grids_that_borrow_it():
    async def go():
        srv, st, port = await _server()
        pool = ContextPool()
        try:
            a = await pool.get("127.0.0.1", port)
            assert await pool.get("127.0.0.1", port) is a  # one per address
            assert await pool.get("127.0.0.1", port + 1) is not a
            assert len(pool) == 2
            for i in (1, 2):  # two operations, one after the other
                async with Grid([Peer("n1", "127.0.0.1", port)], timeout=3, contexts=pool) as g:
                    assert g.clients["n1"]._ctx is a
                    assert (await g.clients["n1"].status())[1] == "node-%d" % i
            # and a client of its own still makes (and shuts down) its own
            async with NodeClient("127.0.0.1", port, timeout=3) as own:
                assert own._ctx is not a
                assert (await own.status())[1] == "node-3"
        finally:
            await pool.close()
            await srv.shutdown()
        assert len(pool) == 0
        return st.asked

    assert asyncio.run(go()) == 3


def test_a_full_pool_lends_nothing_and_clients_make_their_own():
    async def go():
        pool = ContextPool()
        pool.MAX = 1
        try:
            assert await pool.get("127.0.0.1", 1) is not None
            assert await pool.get("127.0.0.1", 2) is None
            async with Grid([Peer("n2", "127.0.0.1", 2)], timeout=1, contexts=pool) as g:
                assert g.clients["n2"]._ctx is not None and g.clients["n2"]._own_ctx
        finally:
            await pool.close()

    asyncio.run(go())
