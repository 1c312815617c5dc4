"""The coordinator's file service: put, get, list, delete and check files on
the registered nodes, with the storage engine (openheap.storage.engine).

Plugged into the HTTP API by :func:`create_file_service` (found by
:func:`openheap.coordinator.service.default_file_service`).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections import OrderedDict

from openheap.errors import UsageError
from openheap.storage import engine
from openheap.storage.caps import LiteralCap, ReadCap, VerifyCap, parse_cap
from openheap.storage.crypto import load_or_create_secret
from openheap.node import ContextPool, si_text
from openheap.storage.errors import NotHappy
from openheap.storage.layout import Params, share_length
from openheap.storage.leases import LeaseInfo, renew_on

from .api import Download, FileService, PutOptions
from .errors import NotFound

log = logging.getLogger("openheap.coordinator.files")

DEFAULT_K, DEFAULT_N, DEFAULT_HAPPY = 3, 10, 7  # Tahoe-LAFS's defaults
SPOOL_IN_MEMORY = 8 << 20  # uploads larger than this are spooled to disk
GET_QUEUE = 4  # segments between the storage engine and the HTTP response
READS_KEPT = 256  # files whose latest read is remembered (GET /v1/files/<cap>/last-read)
NODE_TIMEOUT = 5.0


NOT_FOUND = 0x84  # CoAP 4.04


def create_file_service(coordinator) -> "GridFiles":
    """The file service of ``coordinator`` (see :func:`service.default_file_service`)."""
    return GridFiles(coordinator)


def describe_cap(c) -> dict:
    """What a parsed capability says by itself: kind, size, k, n, storage
    index (base64url, as in share paths) and, for a read-cap, its verify-cap."""
    if isinstance(c, LiteralCap):
        return {"kind": "LiteralCap", "size": len(c.data)}
    info = {"kind": type(c).__name__, "size": c.size, "k": c.k, "n": c.n,
            "storage_index": si_text(c.storage_index)}
    if isinstance(c, ReadCap):
        info["verify_cap"] = c.verify_cap().to_string()
    return info


def choose_encoding(options: PutOptions, nodes: int) -> tuple[int, int, int, str | None]:
    """``(k, n, happy, note)``: the options, with defaults lowered for a grid of
    ``nodes`` registered nodes; ``note`` says what was lowered, if anything."""
    if nodes < 1:
        raise NotHappy("no nodes are registered; start some with 'openheap up' and try again", 0, 1)
    k = options.k or DEFAULT_K
    n = options.n or DEFAULT_N
    happy = options.happy or DEFAULT_HAPPY
    note = None
    if options.n is None and n > nodes:
        n = max(nodes, options.k or 1, options.happy or 1)
    if options.happy is None and happy > n:
        happy = n
    if options.k is None and k > happy:
        k = happy
    if (k, n, happy) != (options.k or DEFAULT_K, options.n or DEFAULT_N, options.happy or DEFAULT_HAPPY):
        note = "only %d node%s registered: using %d-of-%d, happy %d" % (
            nodes, " is" if nodes == 1 else "s are", k, n, happy)
    if not 1 <= k <= happy <= n <= 256:
        raise UsageError("k=%d, happy=%d, n=%d is impossible: 1 <= k <= happy <= n <= 256 is required"
                         % (k, happy, n))
    return k, n, happy, note


class GridFiles(FileService):
    """Files on the grid of nodes the coordinator's registry knows."""

    def __init__(self, coordinator):
        self.coordinator = coordinator
        self.registry = coordinator.registry
        self.secret = None
        self.contexts = ContextPool()  # the nodes' aiocoap contexts, kept between operations
        self.reads: OrderedDict[bytes, dict] = OrderedDict()  # storage index -> what its latest read found

    async def start(self) -> None:
        self.secret = load_or_create_secret(self.coordinator.paths.dir / "secret")

    async def close(self) -> None:
        await self.contexts.close()

    def grid(self, peers: list[engine.Peer]) -> engine.Grid:
        """The storage engine's view of ``peers`` for one operation (``async with``)."""
        return engine.Grid(peers, timeout=NODE_TIMEOUT, contexts=self.contexts)

    def peers(self, registered_only: bool, names=None) -> list[engine.Peer]:
        """The registry's nodes as engine peers (only registered ones if
        ``registered_only``; only those in ``names`` if given)."""
        nodes = self.registry.nodes(state="registered" if registered_only else None)
        return [engine.Peer(nd.name, nd.host, nd.port, nd.fs_free, nd.max_share, nd.zone) for nd in nodes
                if names is None or nd.name in names]

    _peers = peers

    async def put(self, source, options: PutOptions) -> dict:
        peers = self._peers(True)
        k, n, happy, note = choose_encoding(options, len(peers))
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
            size = 0
            async for chunk in source:
                spool.write(chunk)
                size += len(chunk)
            if options.size is not None and size != options.size:
                raise UsageError("the upload ended after %d of its %d bytes" % (size, options.size))
            spool.seek(0)
            async with self.grid(peers) as grid:
                res = await engine.put(grid, spool, size, k=k, n=n, happy=happy,
                                       secret=None if options.random_key else self.secret)
                cap = res.cap.to_string()
                si = getattr(res.cap, "storage_index", None)
                expiry = {}
                if res.existing:  # shares stored before: their leases run from then, so renew them now
                    expiry = await self.renew(grid, si, set(res.existing.values()))
        self.registry.add_file(cap, size=size, k=k, n=n, happy=happy, name=options.name, si=si,
                               random_key=options.random_key)
        lease = self.coordinator.clock() + self.coordinator.lease_default
        slen = share_length(Params(k, n, size)) if si is not None else 0
        for shnum, node in list(res.existing.items()) + list(res.placed.items()):
            self.registry.add_share(si, shnum, node, slen, expiry.get(node, lease))
        log.info("put %s: %d bytes, %d-of-%d, %d shares sent, %d already there", cap[:24], size, k, n,
                 len(res.placed), len(res.existing))
        return {"cap": cap, "size": size, "k": k, "n": n, "happy": happy, "note": note,
                "placed": {str(s): nd for s, nd in sorted(res.placed.items())},
                "existing": {str(s): nd for s, nd in sorted(res.existing.items())},
                "bytes_sent": res.bytes_sent, "failed": {str(s): w for s, w in res.failed.items()}}

    async def get(self, cap: str) -> Download:
        c = parse_cap(cap, accept=(ReadCap, LiteralCap))
        if isinstance(c, LiteralCap):
            async def one():
                yield c.data
            return Download(len(c.data), one())
        queue: asyncio.Queue = asyncio.Queue(maxsize=GET_QUEUE)

        class _Out:
            async def write(self, data):
                await queue.put(data)

        async def run():
            async with self.grid(self._peers(False)) as grid:
                result = await engine.get(grid, c, _Out())
            await queue.put(None)
            return result

        task = asyncio.create_task(run())
        first = asyncio.create_task(queue.get())
        done, _ = await asyncio.wait({task, first}, return_when=asyncio.FIRST_COMPLETED)
        if task in done and task.exception() is not None:
            first.cancel()
            raise task.exception()  # before any byte: a clean HTTP error
        head = await first

        async def chunks():
            item = head
            while item is not None:
                yield item
                item = await queue.get()
            res = await task
            for node, shnum, why in res.corrupt:
                log.warning("get %s: share %d on node %s is corrupt: %s", cap[:24], shnum, node, why)
            self._read_done(c.storage_index, res)

        return Download(c.size, chunks())

    def _read_done(self, si: bytes, res: "engine.GetResult") -> None:
        self.reads.pop(si, None)
        self.reads[si] = {
            "at": self.coordinator.clock(),
            "served": {str(s): nd for s, nd in sorted(res.served.items())},
            "corrupt": [{"node": nd, "share": s, "why": why} for nd, s, why in res.corrupt],
            "failed": [{"node": nd, "share": s, "error": err} for nd, s, err in res.failed],
        }
        while len(self.reads) > READS_KEPT:
            self.reads.popitem(last=False)

    async def last_read(self, cap: str) -> dict:
        """What the latest read of ``cap``'s file through this coordinator
        found: ``at`` (None: no read since the coordinator started), the node
        that served each share, the shares found corrupt (``node``, ``share``,
        ``why``) and those whose node failed (``error``)."""
        c = parse_cap(cap.strip())
        if isinstance(c, LiteralCap):
            return {"at": None, "served": {}, "corrupt": [], "failed": [], "literal": True}
        return self.reads.get(c.storage_index) or {"at": None, "served": {}, "corrupt": [], "failed": []}

    async def renew(self, grid: "engine.Grid", si: bytes, nodes) -> dict[str, float]:
        """Renew the lease of ``si`` for ``coordinator.lease_default`` seconds
        on ``nodes`` (of ``grid``); record and return ``{node: new expiry}``
        of those that renewed. A node answering 4.04 no longer holds the
        file: its share records are dropped."""
        got = await renew_on(grid.clients, si, self.coordinator.lease_default, nodes)
        out = {}
        for node, info in got.items():
            if isinstance(info, LeaseInfo):
                out[node] = float(info.expires if info.expires is not None
                                  else self.coordinator.clock() + self.coordinator.lease_default)
                self.registry.renew_leases(si, out[node], node)
            elif getattr(info, "code", None) == NOT_FOUND:
                if self.registry.remove_shares(si, node):
                    log.warning("node %s no longer holds any share of %s", node, si_text(si))
        return out

    async def list_files(self) -> list[dict]:
        return [f.to_json() for f in self.registry.files()]

    async def delete(self, cap: str) -> dict:
        """Delete the shares of ``cap`` on every node now, and every catalog
        entry of that file."""
        text = cap.strip()
        c = parse_cap(text)
        removed = 0
        entries = 0
        if isinstance(c, (ReadCap, VerifyCap)):
            async with self.grid(self._peers(False)) as grid:
                removed = await engine.delete(grid, c.storage_index)
            self.registry.remove_shares(c.storage_index)
            for other in {f.cap for f in self.registry.files(si=c.storage_index)}:
                entries += self.registry.remove_cap(other)
        entries += self.registry.remove_cap(text)
        log.info("rm %s: shares deleted on %d nodes, %d catalog entries removed", text[:24], removed, entries)
        return {"cap": text, "nodes": removed, "catalog_entries": entries}

    async def delete_name(self, name: str) -> dict:
        """Remove the catalog entry ``name``; its file's shares are deleted
        too unless another catalog entry still names the same file."""
        rec = self.registry.file(name)
        if rec is None:
            raise NotFound("there is no file named %r in the catalog (see 'openheap ls')" % name)
        others = [f for f in (self.registry.files(si=rec.si) if rec.si is not None else self.registry.files(rec.cap))
                  if f.id != rec.id]
        if others:
            self.registry.remove_file(name)
            log.info("rm %s: catalog entry removed; the file stays (also named %s)", name,
                     others[0].name or others[0].cap[:24])
            return {"cap": rec.cap, "name": name, "nodes": 0, "catalog_entries": 1, "kept": True}
        out = await self.delete(rec.cap)
        out["name"] = name
        return out

    async def describe(self, cap: str) -> dict:
        """What a capability string points to: its kind, size, k/n and
        storage index, its catalog entries, and the shares the registered
        nodes hold now (works without a catalog entry)."""
        text = cap.strip()
        c = parse_cap(text)
        info = describe_cap(c)
        info["catalog"] = [{"name": f.name, "created": f.to_json()["created"]}
                           for f in (self.registry.files(si=c.storage_index) if info.get("storage_index")
                                     else self.registry.files(text))]
        if isinstance(c, LiteralCap):
            info["found"] = {"shares": 0, "recoverable": True, "healthy": True, "literal": True}
            return info
        async with self.grid(self.peers(True)) as grid:
            res = await engine.check(grid, c)
        info["found"] = {"shares": res.shares, "nodes": res.nodes, "needed": res.k, "n": res.n,
                         "where": {str(s): nds for s, nds in sorted(res.good.items())},
                         "unreachable": list(res.unreachable),
                         "recoverable": res.recoverable, "healthy": res.healthy}
        return info

    async def add(self, cap: str, name: str | None = None) -> dict:
        """Put a capability into the catalog (e.g. after the catalog was
        lost), so that its leases are renewed and the repair scheduler looks
        after it; records and renews the shares found now."""
        text = cap.strip()
        c = parse_cap(text, accept=(ReadCap, VerifyCap, LiteralCap))
        info = describe_cap(c)
        si = getattr(c, "storage_index", None)
        found = None
        if si is not None:
            async with self.grid(self.peers(True)) as grid:
                res = await engine.check(grid, c)
                self.record_check(si, res, set(grid.clients))
                await self.renew(grid, si, {nd for nds in res.good.values() for nd in nds})
            found = {"shares": res.shares, "nodes": res.nodes, "needed": res.k, "n": res.n,
                     "recoverable": res.recoverable, "healthy": res.healthy}
        if not any(f.cap == text and f.name == name for f in self.registry.files(text)):
            self.registry.add_file(text, size=info["size"], k=info.get("k", 1), n=info.get("n", 1),
                                   happy=info.get("n", 1), name=name, si=si)
        log.info("catalog: added %s%s", text[:24], " as %s" % name if name else "")
        return {"cap": text, "name": name, "found": found}

    async def check(self, caps, *, verify: bool = False, repair: bool = False) -> dict:
        """Check the files of ``caps`` (the catalog when None): count and
        locate their shares; with ``verify`` also hash every block; with
        ``repair`` (which verifies) rebuild missing or corrupt shares. The
        registry's share records follow what was found and done."""
        if caps is None:
            caps = [f.cap for f in self.registry.files()]
        verify = verify or repair  # a corrupt share is only found by reading it
        out = []
        async with self.grid(self._peers(False)) as grid:
            live = [p for p in self._peers(True)]
            for text in caps:
                c = parse_cap(text)
                if isinstance(c, LiteralCap):
                    out.append({"cap": text, "healthy": True, "recoverable": True, "literal": True})
                    continue
                res = await engine.check(grid, c, verify=verify)
                info = self._check_json(text, res)
                self.record_check(c.storage_index, res, set(grid.clients))
                if repair and not res.healthy:
                    peers = [p for p in live if p.name not in set(res.unreachable)]
                    rep = await engine.repair(grid, c, res, peers=peers)
                    self.record_repair(c.storage_index, res, rep)
                    info["repair"] = {
                        "rebuilt": {str(s): nd for s, nd in sorted(rep.rebuilt.items())},
                        "failed": {str(s): why for s, why in sorted(rep.failed.items())},
                        "deleted": [{"node": nd, "shnum": s} for nd, s in sorted(rep.deleted)],
                        "bytes_sent": rep.bytes_sent, "error": rep.error}
                    # the state after the repair, as a plain check sees it
                    info["after"] = self._check_json(text, await engine.check(grid, c))
                    for nd, s, why in res.corrupt:
                        log.warning("check %s: share %d on node %s is corrupt: %s", text[:24], s, nd, why)
                    log.info("repair %s: rebuilt %s%s", text[:24], rep.rebuilt or "nothing",
                             " (%s)" % rep.error if rep.error else "")
                out.append(info)
        return {"files": out, "verify": verify, "repair": repair}

    @staticmethod
    def _check_json(text: str, res: "engine.CheckResult") -> dict:
        return {"cap": text, "k": res.k, "n": res.n, "shares": res.shares, "nodes": res.nodes,
                "where": {str(s): nds for s, nds in sorted(res.good.items())},
                "corrupt": [{"node": nd, "shnum": s, "reason": why} for nd, s, why in res.corrupt],
                "failed": [{"node": nd, "shnum": s, "error": why} for nd, s, why in res.failed],
                "unreachable": list(res.unreachable), "verified": res.verified,
                "recoverable": res.recoverable, "healthy": res.healthy}

    def record_check(self, si: bytes, res: "engine.CheckResult", asked) -> None:
        """Make the registry's share records of ``si`` match what the nodes
        ``asked`` that answered hold (other nodes keep their records). A
        share found but not recorded gets a lease expiry of now (unknown:
        the next renewal pass renews it)."""
        known = {(r.shnum, r.node) for r in self.registry.shares(si)}
        good = {(s, nd) for s, nds in res.good.items() for nd in nds}
        dead = set(res.unreachable)
        now = self.coordinator.clock()
        for s, nd in good - known:
            self.registry.add_share(si, s, nd, res.share_size, now)
        for s, nd in known - good:
            if nd in asked and nd not in dead:
                self.registry.remove_share(si, s, nd)

    def record_repair(self, si: bytes, res: "engine.CheckResult", rep: "engine.RepairResult") -> None:
        """Record the shares a repair rebuilt (with a fresh lease) and forget
        the corrupt copies it deleted."""
        lease = self.coordinator.clock() + self.coordinator.lease_default
        for nd, s in rep.deleted:
            self.registry.remove_share(si, s, nd)
        for s, nd in rep.rebuilt.items():
            self.registry.add_share(si, s, nd, res.share_size, lease)
