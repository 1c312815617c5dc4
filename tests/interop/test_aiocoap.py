"""Interop with aiocoap used directly (its own block-wise, link-format and
Observe machinery, not openheap.node), against a virtual board."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random

import aiocoap
import cbor2
import pytest
from aiocoap import Code, Message
from aiocoap.numbers.types import Type
from aiocoap.util import linkformat

ST_NAME, ST_SHARES, ST_RX_MSGS, ST_TX_MSGS, ST_UPTIME, ST_ERRORS = 0, 8, 9, 10, 3, 14
CF_LINK_FORMAT, CF_OCTET_STREAM, CF_CBOR = 40, 42, 60
TIMEOUT = 20.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def si_of(name: str) -> str:
    """A storage index private to one test, in its path form (base64url)."""
    return base64.urlsafe_b64encode(hashlib.sha256(("aiocoap-" + name).encode()).digest()[:16]).rstrip(b"=").decode()


async def with_context(fn):
    ctx = await aiocoap.Context.create_client_context()
    try:
        return await fn(ctx)
    finally:
        await ctx.shutdown()


async def ask(ctx, code, uri, **kw) -> Message:
    return await asyncio.wait_for(ctx.request(Message(code=code, uri=uri, **kw)).response, TIMEOUT)


def links(payload: bytes) -> dict:
    """{href: {attr: [values]}} from a link-format payload (aiocoap's parser)."""
    out = {}
    for link in linkformat.parse(payload.decode("utf-8")).links:
        attrs = {}
        for k, v in link.attr_pairs:
            attrs.setdefault(k, []).append(v)
        out[link.href] = attrs
    return out


# -- discovery


def test_well_known_core(board):
    async def go(ctx):
        return await ask(ctx, Code.GET, board.uri + "/.well-known/core")

    rsp = run(with_context(go))
    assert rsp.code == Code.CONTENT
    assert rsp.opt.content_format == CF_LINK_FORMAT
    found = links(rsp.payload)
    assert set(found) == {"/s", "/i"}
    assert found["/s"]["rt"] == ["oh.s"]
    assert found["/s"]["ct"] == ["60"]
    assert "obs" not in found["/s"]
    assert found["/i"]["rt"] == ["oh.i"]
    assert found["/i"]["ct"] == ["60"]
    assert found["/i"]["obs"] == [None], "/i is observable: a bare 'obs' attribute"
    assert rsp.payload == b'</s>;rt="oh.s";ct=60,</i>;rt="oh.i";ct=60;obs'


@pytest.mark.parametrize("query, hrefs", [
    ("rt=oh.i", {"/i"}),
    ("rt=oh.s", {"/s"}),
    ("rt=oh.*", {"/s", "/i"}),
    ("href=/s", {"/s"}),
    ("rt=nothing", set()),
])
def test_well_known_core_filter(board, query, hrefs):
    async def go(ctx):
        return await ask(ctx, Code.GET, board.uri + "/.well-known/core?" + query)

    rsp = run(with_context(go))
    assert rsp.code == Code.CONTENT
    if hrefs:
        found = links(rsp.payload)
        assert set(found) == hrefs
        for href in hrefs:
            assert found[href]["rt"] == ["oh." + href[1]]
    else:
        assert rsp.payload == b"", "a filter matching nothing gives an empty 2.05"


# -- block-wise, done by aiocoap


@pytest.mark.parametrize("size", [200_000, 200 * 1024, 1024, 1025])
def test_blockwise_put_and_get(board, size):
    data = random.Random(size).randbytes(size)
    si = si_of("bw%d" % size)
    uri = "%s/s/%s/7" % (board.uri, si)
    digest = hashlib.sha256(data).hexdigest()

    async def go(ctx):
        # aiocoap splits the payload itself (1024-byte Block1, Size1 on block 0)
        put = await ask(ctx, Code.PUT, uri + "?h=" + digest, payload=data, content_format=CF_OCTET_STREAM)
        # ... and reassembles the Block2 answer
        get = await ask(ctx, Code.GET, uri)
        again = await ask(ctx, Code.PUT, uri + "?h=" + digest, payload=data, content_format=CF_OCTET_STREAM)
        shares = await ask(ctx, Code.GET, "%s/s/%s" % (board.uri, si))
        gone = await ask(ctx, Code.DELETE, uri)
        after = await ask(ctx, Code.GET, uri)
        return put, get, again, shares, gone, after

    put, get, again, shares, gone, after = run(with_context(go))
    assert put.code == Code.CREATED, (put, put.payload)
    assert get.code == Code.CONTENT, (get, get.payload)
    assert get.opt.content_format == CF_OCTET_STREAM
    assert len(get.payload) == size
    assert get.payload == data
    assert again.code == Code.CHANGED, "the same share PUT again replaces it: 2.04"
    assert shares.code == Code.CONTENT and shares.opt.content_format == CF_CBOR
    assert cbor2.loads(shares.payload) == [[7, size]]
    assert gone.code == Code.DELETED
    assert after.code == Code.NOT_FOUND


def test_blockwise_put_with_wrong_hash_is_refused(board):
    data = random.Random(5).randbytes(5000)
    uri = "%s/s/%s/0" % (board.uri, si_of("wrong-hash"))

    async def go(ctx):
        put = await ask(ctx, Code.PUT, uri + "?h=" + "ab" * 32, payload=data, content_format=CF_OCTET_STREAM)
        get = await ask(ctx, Code.GET, uri)
        return put, get

    put, get = run(with_context(go))
    assert put.code == Code.BAD_REQUEST
    assert put.payload, "4.00 carries a diagnostic"
    assert put.opt.content_format is None
    assert get.code == Code.NOT_FOUND


def test_errors_and_methods(board):
    async def go(ctx):
        return [
            await ask(ctx, Code.GET, "%s/s/%s/0" % (board.uri, si_of("missing"))),
            await ask(ctx, Code.GET, board.uri + "/nothing/here"),
            await ask(ctx, Code.POST, board.uri + "/i", payload=b"x"),
            await ask(ctx, Code.PUT, board.uri + "/s", payload=b"x"),
            await ask(ctx, Code.GET, board.uri + "/s/not-hex/0"),
        ]

    codes = [(r.code, bool(r.payload)) for r in run(with_context(go))]
    assert codes == [
        (Code.NOT_FOUND, True),
        (Code.NOT_FOUND, True),
        (Code.METHOD_NOT_ALLOWED, True),
        (Code.METHOD_NOT_ALLOWED, True),
        (Code.BAD_REQUEST, True),
    ]


def test_non_request_gets_non_response(board):
    async def go(ctx):
        return await ask(ctx, Code.GET, board.uri + "/i", transport_tuning=aiocoap.Unreliable)

    rsp = run(with_context(go))
    assert rsp.code == Code.CONTENT
    assert rsp.mtype == Type.NON
    assert cbor2.loads(rsp.payload)[ST_NAME] == board.name


# -- Observe


def test_observe_status(board):
    """Observe /i with aiocoap; PUT / DELETE a tiny share between
    notifications so the node notifies at once (it also notifies every
    status_period seconds, which is the fallback if a trigger is missed)."""
    si = si_of("observe")
    tiny = b"observe me"
    share = "%s/s/%s/0" % (board.uri, si)
    put_uri = share + "?h=" + hashlib.sha256(tiny).hexdigest()

    async def go(ctx):
        req = ctx.request(Message(code=Code.GET, uri=board.uri + "/i", observe=0))
        first = await asyncio.wait_for(req.response, TIMEOUT)
        assert first.code == Code.CONTENT and first.opt.observe is not None, first
        notes = []
        it = req.observation.__aiter__()

        async def until(shares):
            # the next notification that shows ``shares`` shares held
            while True:
                note = await asyncio.wait_for(it.__anext__(), 12)
                notes.append(note)
                if cbor2.loads(note.payload)[ST_SHARES] == shares:
                    return

        base = cbor2.loads(first.payload)[ST_SHARES]
        for i in range(4):
            if i % 2 == 0:
                rsp = await ask(ctx, Code.PUT, put_uri, payload=tiny)
                assert rsp.code == Code.CREATED, rsp
                await until(base + 1)
            else:
                rsp = await ask(ctx, Code.DELETE, share)
                assert rsp.code == Code.DELETED, rsp
                await until(base)
        req.observation.cancel()
        return first, notes

    first, notes = run(with_context(go))
    assert len(notes) >= 4
    seen = [first] + notes
    for n in notes:
        assert n.code == Code.CONTENT
        assert n.opt.content_format == CF_CBOR
        assert n.opt.observe is not None
        assert n.token == first.token
    seqs = [m.opt.observe for m in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "Observe numbers increase: %s" % seqs
    st = [cbor2.loads(m.payload) for m in seen]
    rx = [s[ST_RX_MSGS] for s in st]
    tx = [s[ST_TX_MSGS] for s in st]
    up = [s[ST_UPTIME] for s in st]
    assert rx == sorted(rx) and rx[-1] >= rx[0] + 4, "datagrams received grow: %s" % rx
    assert all(b > a for a, b in zip(tx, tx[1:])), "datagrams sent grow with every notification: %s" % tx
    assert up == sorted(up)
    assert all(s[ST_NAME] == board.name for s in st)


# -- CoAP over TCP (RFC 8323): aiocoap's own TCP client


def test_tcp_status_and_blockwise_share(board):
    # aiocoap sends its CSM and takes the node's; a share PUT over UDP
    # comes back whole over TCP (after the ?tcp share set request over UDP
    # that makes the node listen until the connection ends).
    data = random.Random(8323).randbytes(30_000)
    si = si_of("tcp")
    tcp = "coap+tcp://%s:%d" % (board.host, board.port)

    async def go(ctx):
        digest = hashlib.sha256(data).hexdigest()
        put = await ask(ctx, Code.PUT, "%s/s/%s/1?h=%s" % (board.uri, si, digest), payload=data)
        await ask(ctx, Code.GET, "%s/s/%s?tcp" % (board.uri, si))
        status = await ask(ctx, Code.GET, tcp + "/i")
        back = await ask(ctx, Code.GET, "%s/s/%s/1" % (tcp, si))
        return put, status, back

    put, status, back = run(with_context(go))
    assert put.code.is_successful(), put
    assert status.code == Code.CONTENT and cbor2.loads(status.payload)[ST_NAME]
    assert back.code == Code.CONTENT and back.payload == data
