"""The coordinator's file service: put, get, list, delete and check files on
the registered nodes, with the storage engine (openheap.storage.engine).

Plugged into the HTTP API by :func:`create_file_service` (found by
:func:`openheap.coordinator.service.default_file_service`).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile

from openheap.errors import UsageError
from openheap.storage import engine
from openheap.storage.caps import LiteralCap, ReadCap, VerifyCap, parse_cap
from openheap.storage.crypto import load_or_create_secret
from openheap.storage.errors import NotHappy

from .api import Download, FileService, PutOptions

log = logging.getLogger("openheap.coordinator.files")

DEFAULT_K, DEFAULT_N, DEFAULT_HAPPY = 3, 10, 7  # Tahoe-LAFS's defaults
SPOOL_IN_MEMORY = 8 << 20  # uploads larger than this are spooled to disk
GET_QUEUE = 4  # segments between the storage engine and the HTTP response
NODE_TIMEOUT = 5.0


def create_file_service(coordinator) -> "GridFiles":
    return GridFiles(coordinator)


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

    async def start(self) -> None:
        self.secret = load_or_create_secret(self.coordinator.paths.dir / "secret")

    async def close(self) -> None:
        pass

    def _peers(self, registered_only: bool) -> list[engine.Peer]:
        nodes = self.registry.nodes(state="registered" if registered_only else None)
        return [engine.Peer(nd.name, nd.host, nd.port, nd.fs_free, nd.max_share, nd.zone) for nd in nodes]

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
            async with engine.Grid(peers, timeout=NODE_TIMEOUT) as grid:
                res = await engine.put(grid, spool, size, k=k, n=n, happy=happy,
                                       secret=None if options.random_key else self.secret)
        cap = res.cap.to_string()
        si = getattr(res.cap, "storage_index", None)
        self.registry.add_file(cap, size=size, k=k, n=n, happy=happy, name=options.name, si=si,
                               random_key=options.random_key)
        lease = self.coordinator.clock() + self.coordinator.lease_default
        for shnum, node in list(res.existing.items()) + list(res.placed.items()):
            self.registry.add_share(si, shnum, node, 0, lease)
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
            async with engine.Grid(self._peers(False), timeout=NODE_TIMEOUT) as grid:
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

        return Download(c.size, chunks())

    async def list_files(self) -> list[dict]:
        return [f.to_json() for f in self.registry.files()]

    async def delete(self, cap: str) -> dict:
        c = parse_cap(cap)
        removed = 0
        if isinstance(c, (ReadCap, VerifyCap)):
            async with engine.Grid(self._peers(False), timeout=NODE_TIMEOUT) as grid:
                removed = await engine.delete(grid, c.storage_index)
            self.registry.remove_shares(c.storage_index)
        entries = self.registry.remove_cap(cap.strip())
        return {"cap": cap.strip(), "nodes": removed, "catalog_entries": entries}

    async def check(self, caps, *, verify: bool = False, repair: bool = False) -> dict:
        """Check the files of ``caps`` (the catalog when None): count and
        locate their shares; with ``verify`` also hash every block; with
        ``repair`` (which verifies) rebuild missing or corrupt shares. The
        registry's share records follow what was found and done."""
        if caps is None:
            caps = [f.cap for f in self.registry.files()]
        verify = verify or repair  # a corrupt share is only found by reading it
        out = []
        async with engine.Grid(self._peers(False), timeout=NODE_TIMEOUT) as grid:
            live = [p for p in self._peers(True)]
            for text in caps:
                c = parse_cap(text)
                if isinstance(c, LiteralCap):
                    out.append({"cap": text, "healthy": True, "recoverable": True, "literal": True})
                    continue
                res = await engine.check(grid, c, verify=verify)
                info = self._check_json(text, res)
                self._record(c.storage_index, res)
                if repair and not res.healthy:
                    peers = [p for p in live if p.name not in set(res.unreachable)]
                    rep = await engine.repair(grid, c, res, peers=peers)
                    self._record_repair(c.storage_index, res, rep)
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

    def _record(self, si: bytes, res: "engine.CheckResult") -> None:
        """Make the registry's share records of ``si`` match what the nodes
        that answered hold (nodes that did not answer keep their records)."""
        known = {(r.shnum, r.node) for r in self.registry.shares(si)}
        good = {(s, nd) for s, nds in res.good.items() for nd in nds}
        dead = set(res.unreachable)
        lease = self.coordinator.clock() + self.coordinator.lease_default
        for s, nd in good - known:
            self.registry.add_share(si, s, nd, res.share_size, lease)
        for s, nd in known - good:
            if nd not in dead:
                self.registry.remove_share(si, s, nd)

    def _record_repair(self, si: bytes, res: "engine.CheckResult", rep: "engine.RepairResult") -> None:
        lease = self.coordinator.clock() + self.coordinator.lease_default
        for nd, s in rep.deleted:
            self.registry.remove_share(si, s, nd)
        for s, nd in rep.rebuilt.items():
            self.registry.add_share(si, s, nd, res.share_size, lease)
