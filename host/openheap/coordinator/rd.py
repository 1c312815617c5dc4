"""The registration resource: boards register with the coordinator over CoAP.

In the spirit of the CoRE Resource Directory (RFC 9176), simplified to what a
board needs (the contract is in docs/COORDINATOR.md)::

    POST /rd?ep=<name>&lt=<lifetime s>   payload: registration map (CBOR)
        -> 2.01 Created, Location-Path "rd" "<id>", payload: response map
    POST /rd/<id>[?lt=<lifetime s>]      payload: registration map
        -> 2.04 Changed, payload: response map
        -> 4.04 Not Found when the id is unknown (the node registers again)
    bad query or payload                 -> 4.00 Bad Request, diagnostic text

The node's address is the source address and port of the request (the
board sends from the socket it serves on). Registration map keys are the
``RG_*`` numbers of :mod:`ohproto.const`, answer map keys the ``RR_*`` ones.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import time

import aiocoap.resource as resource
import cbor2
from aiocoap import Code, Message

from ohproto import const as P

from .registry import REGISTERED, NodeInfo, Registry
from ..errors import UsageError

__all__ = [
    "RegistrationResource",
    "RegistrationUpdateResource",
    "add_to_site",
    "make_site",
    "remote_hostport",
    "encode_registration",
    "decode_registration",
    "PATH_RD",
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "MAX_PAYLOAD",
    "RT_RD",
]

log = logging.getLogger("openheap.coordinator.rd")

PATH_RD = P.PATH_RD
RT_RD = "core.rd"  # RFC 9176 resource type of a registration interface
DEFAULT_LIFETIME = 90000  # seconds, RFC 9176's default when lt= is absent
MAX_LIFETIME = (1 << 32) - 1
MAX_PAYLOAD = 512  # a registration map is about 60 bytes

# Map keys are the shared contract's (protocols/ohproto/const.py): RG_* in
# the registration map a node sends, RR_* in the answer.
_FIELDS = [  # (key, NodeInfo attribute, type, required)
    (P.RG_NAME, "name", str, True),
    (P.RG_BOARD, "board", str, True),
    (P.RG_FIRMWARE, "firmware", str, True),
    (P.RG_FS_TOTAL, "fs_total", int, True),
    (P.RG_FS_FREE, "fs_free", int, True),
    (P.RG_MAX_SHARE, "max_share", int, True),
    (P.RG_SHARES, "shares_held", int, True),
    (P.RG_ZONE, "zone", str, False),
    (P.RG_HEAP_TOTAL, "heap_total", int, True),
]


def encode_registration(info: NodeInfo) -> bytes:
    """The CBOR registration payload for ``info`` (what a board sends)."""
    m = {}
    for key, attr, _typ, _req in _FIELDS:
        value = getattr(info, attr)
        if value is not None:
            m[key] = value
    return cbor2.dumps(m, canonical=True)


def decode_registration(payload: bytes) -> NodeInfo:
    """Parse and check a registration payload; UsageError (one sentence) if bad.

    Unknown keys are ignored (newer boards may say more).
    """
    if not payload:
        raise UsageError("the registration payload is empty; it must be a CBOR map")
    if len(payload) > MAX_PAYLOAD:
        raise UsageError("the registration payload is %d bytes; at most %d are accepted" % (len(payload), MAX_PAYLOAD))
    stream = io.BytesIO(payload)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception as e:  # cbor2 raises several kinds on garbage
        raise UsageError("the registration payload is not valid CBOR (%s)" % e) from None
    if stream.tell() != len(payload):
        raise UsageError("the registration payload has %d bytes after its CBOR map" % (len(payload) - stream.tell()))
    if not isinstance(value, dict):
        raise UsageError("the registration payload must be a CBOR map, not %s" % type(value).__name__)
    kwargs = {}
    for key, attr, typ, required in _FIELDS:
        if key not in value:
            if required:
                raise UsageError("the registration map lacks key %d (%s)" % (key, attr))
            continue
        v = value[key]
        if typ is int and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise UsageError("registration key %d (%s) must be an unsigned integer, not %r" % (key, attr, v))
        if typ is str and not isinstance(v, str):
            raise UsageError("registration key %d (%s) must be a text string, not %r" % (key, attr, v))
        kwargs[attr] = v
    return NodeInfo(**kwargs).validate()


def remote_hostport(remote) -> tuple[str, int]:
    """(host, port) of an aiocoap remote; IPv4-mapped IPv6 becomes plain IPv4."""
    sockaddr = getattr(remote, "sockaddr", None)  # udp6 transport: the peer's socket address
    if sockaddr:
        host = sockaddr[0].split("%", 1)[0]
        try:
            addr = ipaddress.ip_address(host)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            host = str(addr)
        except ValueError:
            pass
        return host, int(sockaddr[1])
    from aiocoap.util import hostportsplit

    host, port = hostportsplit(remote.hostinfo)
    return host, int(port or P.DEFAULT_PORT)


def _query(request) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in request.opt.uri_query:
        key, sep, value = item.partition("=")
        if key in ("ep", "lt"):
            if key in out:
                raise UsageError("%s= is given twice" % key)
            if not sep:
                raise UsageError("%s= needs a value" % key)
            out[key] = value
    return out


def _lifetime(query: dict[str, str], default: int | None) -> int | None:
    text = query.get("lt")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIFETIME:
        raise UsageError("lt= must be a lifetime in seconds from 1 to %d, not %r" % (MAX_LIFETIME, text))
    return int(text)


def _error(code, text: str) -> Message:
    return Message(code=code, payload=text.encode("utf-8")[:200])


class _Base(resource.Resource):
    def __init__(self, registry: Registry, *, lease_default: int, clock=time.time, on_event=None):
        super().__init__()
        self.registry = registry
        self.lease_default = int(lease_default)
        self.clock = clock
        self.on_event = on_event  # callable(event: str, NodeRecord, previous state or None)

    def _answer(self, code) -> Message:
        payload = cbor2.dumps({P.RR_TIME: int(self.clock()), P.RR_LEASE: self.lease_default}, canonical=True)
        return Message(code=code, payload=payload, content_format=P.CF_CBOR)

    def _notify(self, event: str, rec, previous) -> None:
        if previous is None:
            what = "registered"
        elif previous != REGISTERED:
            what = "is back"
        elif event == "registered":
            what = "registered again"
        else:
            log.debug("node %s refreshed from %s", rec.name, rec.address)
            what = None
        if what:
            log.info("node %s %s from %s (%s, firmware %s, lifetime %d s)", rec.name, what, rec.address,
                     rec.board, rec.firmware, rec.lifetime)
        if self.on_event is not None:
            try:
                self.on_event(event, rec, previous)
            except Exception:
                log.exception("node event listener failed")


def _registration(request, default_lifetime):
    """The registration map and lifetime of a register or refresh request;
    :class:`UsageError` when the ``ep=`` query and the map disagree."""
    query = _query(request)
    info = decode_registration(request.payload)
    ep = query.get("ep")
    if ep is not None and ep != info.name:
        raise UsageError("ep=%s but the registration map names %s" % (ep, info.name))
    return info, _lifetime(query, default_lifetime)


class RegistrationResource(_Base):
    """``POST /rd?ep=<name>&lt=<s>``: register (or re-register) a node."""

    rt = RT_RD
    ct = P.CF_CBOR

    async def render_post(self, request):
        try:
            info, lifetime = _registration(request, DEFAULT_LIFETIME)
        except UsageError as e:
            return _error(Code.BAD_REQUEST, str(e))
        host, port = remote_hostport(request.remote)
        rec, previous = self.registry.register(info, host, port, lifetime, now=self.clock())
        self._notify("registered", rec, previous)
        rsp = self._answer(Code.CREATED)
        rsp.opt.location_path = (PATH_RD, rec.reg_id)
        return rsp


class RegistrationUpdateResource(_Base, resource.PathCapable):
    """``POST /rd/<id>``: refresh a registration (4.04 when the id is unknown)."""

    def get_link_description(self):
        return None  # registrations are not advertised

    async def render_post(self, request):
        path = request.opt.uri_path
        if len(path) != 1 or not path[0]:
            return _error(Code.NOT_FOUND, "not found")
        reg_id = path[0]
        try:
            info, lifetime = _registration(request, None)
            host, port = remote_hostport(request.remote)
            result = self.registry.refresh(reg_id, info, host, port, lifetime, now=self.clock())
        except UsageError as e:
            return _error(Code.BAD_REQUEST, str(e))
        if result is None:
            return _error(Code.NOT_FOUND, "unknown registration %s; register again" % reg_id[:32])
        rec, previous = result
        self._notify("refreshed", rec, previous)
        return self._answer(Code.CHANGED)


def add_to_site(site: resource.Site, registry: Registry, *, lease_default: int, clock=time.time,
                on_event=None) -> None:
    """Mount ``/rd`` and ``/rd/<id>`` on an aiocoap site."""
    kw = dict(lease_default=lease_default, clock=clock, on_event=on_event)
    site.add_resource([PATH_RD], RegistrationResource(registry, **kw))
    site.add_resource([PATH_RD], RegistrationUpdateResource(registry, **kw))


def make_site(registry: Registry, **kw) -> resource.Site:
    """A site with ``/.well-known/core`` and the registration resources."""
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    add_to_site(site, registry, **kw)
    return site

