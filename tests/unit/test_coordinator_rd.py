"""The registration resource (POST /rd, POST /rd/<id>) against a real aiocoap client."""

from __future__ import annotations

import asyncio
import time

import aiocoap
import aiocoap.resource
import cbor2
import pytest
from aiocoap import Code, Message

from ohproto import const as P
from openheap.coordinator.rd import decode_registration, encode_registration, make_site
from openheap.coordinator.registry import NodeInfo, Registry
from openheap.coordinator.service import _local_port, open_coap_server
from openheap.errors import UsageError

LEASE = 12345


def node_info(name="node01", **kw) -> NodeInfo:
    base = dict(name=name, board="esp32", firmware="0.2.0", fs_total=2 << 20, fs_free=1 << 20,
                max_share=262144, shares_held=4, zone=None, heap_total=110000)
    base.update(kw)
    return NodeInfo(**base)


class Grid:
    """A registration site on an ephemeral port, and a fake node: an aiocoap
    server context on its own port, which also sends the registrations (so
    the source address is known)."""

    def __init__(self, tmp_path):
        self.registry = Registry(tmp_path / "grid.db", grace=1)
        self.events = []

    async def __aenter__(self):
        site = make_site(self.registry, lease_default=LEASE, on_event=lambda *a: self.events.append(a))
        self.server = await open_coap_server(site, "127.0.0.1", 0)
        self.port = _local_port(self.server)
        self.node = await open_coap_server(aiocoap.resource.Site(), "127.0.0.1", 0)
        self.node_port = _local_port(self.node)
        return self

    async def __aexit__(self, *exc):
        await self.node.shutdown()
        await self.server.shutdown()
        self.registry.close()

    async def post(self, path, payload=b"", query=(), code=Code.POST) -> Message:
        msg = Message(code=code, uri="coap://127.0.0.1:%d/%s" % (self.port, path), payload=payload)
        if query:
            msg.opt.uri_query = tuple(query)
        return await asyncio.wait_for(self.node.request(msg).response, 10)


def run(coro_fn, tmp_path):
    async def main():
        async with Grid(tmp_path) as g:
            return await coro_fn(g)

    return asyncio.run(main())


def test_register_refresh_and_address(tmp_path):
    async def scenario(g):
        t0 = int(time.time())
        rsp = await g.post("rd", encode_registration(node_info()), ("ep=node01", "lt=60"))
        assert rsp.code == Code.CREATED, rsp.payload
        assert rsp.opt.content_format == P.CF_CBOR
        loc = rsp.opt.location_path
        assert len(loc) == 2 and loc[0] == "rd" and loc[1]
        answer = cbor2.loads(rsp.payload)
        assert set(answer) == {P.RR_TIME, P.RR_LEASE}
        assert abs(answer[P.RR_TIME] - t0) <= 2 and answer[P.RR_LEASE] == LEASE
        rec = g.registry.node("node01")
        assert (rec.host, rec.port) == ("127.0.0.1", g.node_port)  # the request's source
        assert (rec.board, rec.firmware, rec.fs_total, rec.fs_free, rec.max_share, rec.shares_held, rec.heap_total,
                rec.lifetime, rec.zone) == ("esp32", "0.2.0", 2 << 20, 1 << 20, 262144, 4, 110000, 60, None)
        assert rec.reg_id == loc[1]
        assert g.events[-1][0] == "registered" and g.events[-1][2] is None

        # refresh with new figures, lifetime unchanged
        rsp = await g.post("/".join(loc), encode_registration(node_info(fs_free=1000, shares_held=9, zone="desk")))
        assert rsp.code == Code.CHANGED, rsp.payload
        assert cbor2.loads(rsp.payload)[P.RR_LEASE] == LEASE
        rec = g.registry.node("node01")
        assert (rec.fs_free, rec.shares_held, rec.zone, rec.lifetime) == (1000, 9, "desk", 60)
        # refresh with a new lifetime
        rsp = await g.post("/".join(loc), encode_registration(node_info()), ("lt=120",))
        assert rsp.code == Code.CHANGED
        assert g.registry.node("node01").lifetime == 120
        assert g.events[-1][0] == "refreshed" and g.events[-1][2] == "registered"

    run(scenario, tmp_path)


def test_unknown_id_is_404_then_register_again(tmp_path):
    async def scenario(g):
        rsp = await g.post("rd/nosuchid", encode_registration(node_info()))
        assert rsp.code == Code.NOT_FOUND
        assert b"register again" in rsp.payload
        rsp = await g.post("rd", encode_registration(node_info()), ("ep=node01", "lt=60"))
        assert rsp.code == Code.CREATED
        rsp = await g.post("rd/%s/extra" % rsp.opt.location_path[1], encode_registration(node_info()))
        assert rsp.code == Code.NOT_FOUND

    run(scenario, tmp_path)


def test_without_query_uses_payload_name_and_default_lifetime(tmp_path):
    async def scenario(g):
        rsp = await g.post("rd", encode_registration(node_info("x1")))
        assert rsp.code == Code.CREATED
        assert g.registry.node("x1").lifetime == 90000

    run(scenario, tmp_path)


GOOD = encode_registration(node_info())


@pytest.mark.parametrize("payload, query, match", [
    (b"", ("ep=node01",), b"empty"),
    (b"\xff\xfe", ("ep=node01",), b"not valid CBOR"),
    (cbor2.dumps([1, 2]), ("ep=node01",), b"must be a CBOR map"),
    (GOOD + b"\x00", ("ep=node01",), b"after its CBOR map"),
    (cbor2.dumps({0: "node01"}), ("ep=node01",), b"lacks key 1"),
    (cbor2.dumps({**cbor2.loads(GOOD), P.RG_FS_FREE: -5}), (), b"unsigned integer"),
    (cbor2.dumps({**cbor2.loads(GOOD), P.RG_BOARD: 7}), (), b"text string"),
    (cbor2.dumps({**cbor2.loads(GOOD), P.RG_NAME: "bad name!"}), (), b"node name"),
    (cbor2.dumps({**cbor2.loads(GOOD), P.RG_FS_FREE: 1 << 40}), (), b"larger than fs_total"),
    (GOOD, ("ep=other",), b"ep=other but the registration map names node01"),
    (GOOD, ("ep=node01", "lt=0"), b"lt= must be"),
    (GOOD, ("ep=node01", "lt=abc"), b"lt= must be"),
    (GOOD, ("ep=node01", "ep=node01"), b"given twice"),
    (b"\xa1" * 600, (), b"at most"),
])
def test_bad_registration_is_400(tmp_path, payload, query, match):
    async def scenario(g):
        rsp = await g.post("rd", payload, query)
        assert rsp.code == Code.BAD_REQUEST
        assert match in rsp.payload
        assert g.registry.nodes() == []  # nothing recorded
        # a bad refresh of a real registration is refused as well
        ok = await g.post("rd", GOOD, ("ep=node01",))
        rsp = await g.post("/".join(ok.opt.location_path), payload, tuple(q for q in query if q.startswith("lt")))
        if payload != GOOD:
            assert rsp.code == Code.BAD_REQUEST

    run(scenario, tmp_path)


def test_refresh_with_other_name_is_400(tmp_path):
    async def scenario(g):
        ok = await g.post("rd", GOOD, ("ep=node01",))
        rsp = await g.post("/".join(ok.opt.location_path), encode_registration(node_info("node02")))
        assert rsp.code == Code.BAD_REQUEST and b"belongs to node node01" in rsp.payload

    run(scenario, tmp_path)


def test_methods_and_discovery(tmp_path):
    async def scenario(g):
        rsp = await g.post("rd", code=Code.GET)
        assert rsp.code == Code.METHOD_NOT_ALLOWED
        rsp = await g.post(".well-known/core", code=Code.GET)
        assert rsp.code == Code.CONTENT
        assert b'</rd>' in rsp.payload and b'rt="core.rd"' in rsp.payload
        rsp = await g.post("nothing", code=Code.GET)
        assert rsp.code == Code.NOT_FOUND

    run(scenario, tmp_path)


def test_decode_registration_roundtrip():
    info = node_info(zone="attic")
    assert decode_registration(encode_registration(info)) == info
    extra = cbor2.dumps({**cbor2.loads(encode_registration(info)), 99: "future"})
    assert decode_registration(extra) == info  # unknown keys are ignored
    with pytest.raises(UsageError):
        decode_registration(cbor2.dumps({**cbor2.loads(GOOD), P.RG_SHARES: True}))


def _vectors(prefix):
    import json
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "protocols" / "vectors.json").read_text()
    found = [v for v in json.loads(text) if v["name"].startswith(prefix)]
    if not found:
        pytest.skip("protocols/vectors.json has no %r vectors" % prefix)
    return found


def test_golden_registration_vectors_decode():
    for v in _vectors("registration"):
        if v["name"].startswith("registration-answer"):
            continue
        info = decode_registration(bytes.fromhex(v["cbor"]))
        assert encode_registration(info).hex() == v["cbor"], v["name"]


def test_answer_matches_golden_vector():
    (v,) = [v for v in _vectors("registration-answer") if v["name"] == "registration-answer"]
    assert cbor2.dumps({P.RR_TIME: 1700000000, P.RR_LEASE: 2678400}, canonical=True).hex() == v["cbor"]
