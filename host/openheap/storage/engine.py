"""Putting and getting files on the grid's nodes over CoAP.

The storage library (encoder, decoder, placement) does the work; this module
moves its bytes. ``put`` encodes the file segment by segment and streams every
planned share to its node at the same time, in one pass (each share's SHA-256
goes with its last block), so memory stays bounded by a few segments whatever
the file size; shares the grid already holds (the same file put before, with
convergent encryption) are not sent again. ``get`` asks every node which
shares it holds, reads k of them from the nodes that answered fastest,
checks every block against the hash trees and replaces a share whose block
is corrupt or whose node fails with another one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from openheap.errors import CoapError, NodeUnreachable
from openheap.node import NodeClient
from openheap.storage import crypto
from openheap.storage.caps import LITERAL_MAX, LiteralCap, ReadCap, VerifyCap
from openheap.storage.decoder import Decoder
from openheap.storage.encoder import Encoder, read_exactly
from openheap.storage.errors import CorruptShare, NotEnoughShares, NotHappy, StorageError
from openheap.storage.layout import HEADER_SIZE, Params, segment_range, share_length, trailer_range
from openheap.storage.placement import Node as PlacementNode
from openheap.storage.placement import check_happy, place
from openheap.storage.repair import Repairer

__all__ = ["Peer", "Grid", "PutResult", "GetResult", "CheckResult", "RepairResult", "put", "get", "locate",
           "delete", "check", "repair"]

QUEUE_SEGMENTS = 2  # segments buffered per share between encoder and sender
FAST_STEP = 0.025  # answer times within this of each other count as equally fast


@dataclass(frozen=True)
class Peer:
    """A node the engine may use: where it is and what it can take."""

    name: str
    host: str
    port: int
    free: int = 1 << 40
    max_share: int | None = None
    zone: str | None = None


@dataclass
class PutResult:
    cap: object
    placed: dict[int, str] = field(default_factory=dict)  # shnum -> node name (sent now)
    existing: dict[int, str] = field(default_factory=dict)  # shnum -> node name (already there)
    bytes_sent: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # shnum -> why


@dataclass
class GetResult:
    size: int
    served: dict[int, str] = field(default_factory=dict)  # shnum -> node name
    corrupt: list[tuple[str, int, str]] = field(default_factory=list)  # (node, shnum, reason)
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # (node, shnum, error)


class Grid:
    """The nodes available to one operation, a CoAP client for each.

    Each node gets a client context (a UDP socket) of its own: aiocoap, with
    one socket for many peers, fails requests to live nodes when an ICMP
    "port unreachable" from a dead one arrives at the same time (seen on
    loopback with several boards down), and a grid operation must tell a
    dead node from a live one.
    """

    def __init__(self, peers: list[Peer], *, timeout: float = 10.0):
        self.peers = {p.name: p for p in peers}
        self.timeout = timeout
        self.clients: dict[str, NodeClient] = {}

    async def __aenter__(self) -> "Grid":
        self.clients = {p.name: NodeClient(p.host, p.port, name=p.name, timeout=self.timeout)
                        for p in self.peers.values()}
        await asyncio.gather(*(c.__aenter__() for c in self.clients.values()))
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)


async def locate(grid: Grid, si: bytes) -> dict[int, list[tuple[str, int, float]]]:
    """Which node holds which share of ``si``: ``{shnum: [(node, size, seconds)]}``,
    each list fastest-answering node first. Silent or failing nodes are skipped."""

    async def ask(name):
        t = time.monotonic()
        try:
            held = await grid.clients[name].share_set(si)
        except CoapError:
            return name, {}, 0.0
        return name, held, time.monotonic() - t

    found: dict[int, list] = {}
    for name, held, took in await asyncio.gather(*(ask(nm) for nm in grid.clients)):
        for shnum, size in held.items():
            found.setdefault(shnum, []).append((name, size, took))
    for lst in found.values():
        lst.sort(key=lambda e: e[2])
    return found


async def delete(grid: Grid, si: bytes) -> int:
    """Delete every share of ``si`` on every node; returns how many nodes had some."""

    async def one(name):
        try:
            await grid.clients[name].delete_share(si)
            return 1
        except CoapError:
            return 0

    return sum(await asyncio.gather(*(one(nm) for nm in grid.clients)))


def _file_key(src: BinaryIO, params: Params, secret: bytes | None) -> bytes:
    if secret is None:
        return crypto.random_key()
    digest, _ = crypto.sha256_stream(src)
    src.seek(0)
    return crypto.convergent_key(secret, digest, params.k, params.n, params.segsize)


async def put(grid: Grid, src: BinaryIO, size: int, *, k: int = 3, n: int = 10, happy: int = 7,
              secret: bytes | None = None, progress: Callable[[int], None] | None = None) -> PutResult:
    """Store ``size`` bytes from the seekable binary file ``src`` on the grid.

    ``secret`` (the grid's convergence secret) gives a convergent key; None a
    random one. Raises :class:`NotHappy` (and leaves no share of this put
    behind) when the shares cannot be placed so that any k of ``happy``
    nodes rebuild the file.
    """
    if size <= LITERAL_MAX:
        data = read_exactly(src, size)
        return PutResult(LiteralCap(data))
    params = Params(k, n, size)
    key = _file_key(src, params, secret)
    si = crypto.storage_index(key)
    slen = share_length(params)
    held = await locate(grid, si)
    existing = {s: lst[0][0] for s, lst in held.items() if lst[0][1] == slen and s < n}
    nodes = [PlacementNode(p.name, p.free, p.max_share, p.zone) for p in grid.peers.values()]
    plan = place(si, nodes, n, happy, k, slen, existing=existing)
    result = PutResult(None, existing=dict(existing))
    enc = Encoder(key, params)
    queues = {s: asyncio.Queue(maxsize=QUEUE_SEGMENTS) for s in plan}

    async def chunks(q):
        while True:
            c = await q.get()
            if c is None:
                return
            yield c

    async def send(shnum, node):
        q = queues[shnum]
        try:
            await grid.clients[node].put_share_stream(si, shnum, chunks(q), slen)
            result.placed[shnum] = node
            result.bytes_sent += slen
        except (CoapError, OSError) as e:
            result.failed[shnum] = "%s: %s" % (node, e)
            while await q.get() is not None:  # let the producer go on
                pass

    senders = [asyncio.create_task(send(s, nd)) for s, nd in plan.items()]
    try:
        for s, q in queues.items():
            await q.put(enc.header(s))
        done = 0
        for segnum in range(params.num_segments):
            want = params.segment_size(segnum)
            data = read_exactly(src, want)
            if len(data) != want:
                raise StorageError("the file is shorter than its %d bytes; was it changed while "
                                   "being stored?" % size)
            blocks = enc.encode_segment(data)
            for s, q in queues.items():
                await q.put(blocks[s])
            done += want
            if progress:
                progress(done)
        _, _, trailers = enc.finish()
        for s, q in queues.items():
            await q.put(trailers[s])
            await q.put(None)
        await asyncio.gather(*senders)
    except BaseException:
        for t in senders:
            t.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        await _remove(grid, si, plan)
        raise
    result.cap = enc.read_cap()
    have = dict(existing)
    have.update(result.placed)
    try:
        check_happy(list(have.items()), happy, k)
    except NotHappy as e:
        await _remove(grid, si, result.placed)
        why = "; ".join("share %d: %s" % kv for kv in sorted(result.failed.items()))
        raise NotHappy("%s%s" % (e, " (failed: %s)" % why if why else ""), e.happiness, e.needed) from None
    return result


async def _remove(grid: Grid, si: bytes, plan: dict[int, str]) -> None:
    async def one(shnum, node):
        try:
            await grid.clients[node].delete_share(si, shnum)
        except CoapError:
            pass

    await asyncio.gather(*(one(s, nd) for s, nd in plan.items()))


class _Source:
    """One share being read: its node, and whether its trailer checked out."""

    def __init__(self, shnum: int, node: str):
        self.shnum, self.node = shnum, node


async def get(grid: Grid, cap, out: BinaryIO, *,
              progress: Callable[[int], None] | None = None) -> GetResult:
    """Write the file ``cap`` names to ``out``, verifying every block.

    ``out.write`` may be a coroutine function (it is awaited).

    Raises :class:`NotEnoughShares` naming how many shares were found and how
    many are needed when fewer than k good shares can be read.
    """
    if isinstance(cap, LiteralCap):
        out.write(cap.data)
        return GetResult(len(cap.data))
    if not isinstance(cap, (ReadCap, VerifyCap)):
        raise TypeError("get needs a read or verify capability")
    res = GetResult(cap.size)
    si = cap.storage_index
    held = await locate(grid, si)
    # Candidates: fastest nodes first (in steps of FAST_STEP seconds, so that
    # noise does not count), and among equally fast ones the systematic shares
    # (< k): they hold the ciphertext itself and need no decoding.
    cands = sorted(((int(lst[0][2] / FAST_STEP), s >= cap.k, s, nd)
                    for s, lst in held.items() for nd, _, _ in lst[:1]))
    queue = [_Source(s, nd) for _, _, s, nd in cands]
    dec = Decoder(cap)
    active: list[_Source] = []

    async def admit(src: _Source) -> bool:
        client = grid.clients[src.node]
        try:
            header = await client.read_range(si, src.shnum, 0, HEADER_SIZE)
            p = dec.params or Params(cap.k, cap.n, cap.size)
            off, ln = trailer_range(p)
            trailer = await client.read_range(si, src.shnum, off, ln)
            dec.add_share(src.shnum, header, trailer)
            return True
        except CorruptShare as e:
            res.corrupt.append((src.node, src.shnum, e.reason))
        except (CoapError, OSError) as e:
            res.failed.append((src.node, src.shnum, str(e)))
        return False

    async def fill():
        while len(active) < cap.k and queue:
            batch = []
            while queue and len(active) + len(batch) < cap.k:
                batch.append(queue.pop(0))
            oks = await asyncio.gather(*(admit(b) for b in batch))
            active.extend(b for b, ok in zip(batch, oks) if ok)
        if len(active) < cap.k:
            bad = {s for _, s, _ in res.corrupt + res.failed}
            good = len(set(held) - bad) if held else 0
            err = NotEnoughShares(good, cap.k)
            err.result = res
            raise err

    await fill()
    p = dec.params
    written = 0
    for segnum in range(p.num_segments):
        blocks: dict[int, bytes] = {}
        while len(blocks) < cap.k:
            need = [s for s in active if s.shnum not in blocks]

            async def fetch(src):
                off, ln = segment_range(p, segnum)
                try:
                    return src, await grid.clients[src.node].read_range(si, src.shnum, off, ln)
                except (CoapError, OSError) as e:
                    return src, e

            for src, got in await asyncio.gather(*(fetch(s) for s in need)):
                if isinstance(got, Exception):
                    res.failed.append((src.node, src.shnum, str(got)))
                    active.remove(src)
                elif not dec.block_ok(src.shnum, segnum, got):
                    res.corrupt.append((src.node, src.shnum, "block %d does not match its hash" % segnum))
                    active.remove(src)
                else:
                    blocks[src.shnum] = got
            if len(blocks) < cap.k:
                await fill()
        data = dec.decode_segment(segnum, blocks)
        w = out.write(data)
        if inspect.isawaitable(w):  # an async sink (e.g. a bounded queue)
            await w
        written += len(data)
        if progress:
            progress(written)
    res.served = {s.shnum: s.node for s in active}
    return res


# -- check, verify and repair


@dataclass
class CheckResult:
    """What :func:`check` found for one file.

    ``good`` maps each share number to the nodes holding a good copy (with
    ``verify=False``: a copy of the right size, unverified). ``corrupt`` and
    ``failed`` are ``(node, shnum, reason)``; ``unreachable`` the nodes that
    did not answer at all.
    """

    k: int
    n: int
    size: int
    verified: bool = False
    good: dict[int, list[str]] = field(default_factory=dict)
    corrupt: list[tuple[str, int, str]] = field(default_factory=list)
    failed: list[tuple[str, int, str]] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    share_size: int = 0

    @property
    def shares(self) -> int:
        """Distinct good share numbers."""
        return len(self.good)

    @property
    def nodes(self) -> int:
        """Distinct nodes holding at least one good share."""
        return len({nd for lst in self.good.values() for nd in lst})

    @property
    def happiness(self) -> int:
        from openheap.storage.placement import happiness

        return happiness(self.good)

    @property
    def recoverable(self) -> bool:
        return len(self.good) >= self.k

    @property
    def healthy(self) -> bool:
        """Every share number good, on n distinct nodes."""
        return len(self.good) >= self.n and self.happiness >= self.n


@dataclass
class RepairResult:
    rebuilt: dict[int, str] = field(default_factory=dict)  # shnum -> node it was stored on
    failed: dict[int, str] = field(default_factory=dict)  # shnum -> why it could not be stored
    deleted: list[tuple[str, int]] = field(default_factory=list)  # corrupt copies removed
    sources: dict[int, str] = field(default_factory=dict)  # shnum -> node read from
    bytes_sent: int = 0
    error: str | None = None  # why nothing was repaired, if so


def _params_of(cap) -> Params:
    return Params(cap.k, cap.n, cap.size)


async def _share_sets(grid: Grid, si: bytes) -> tuple[dict[str, dict[int, int]], list[str]]:
    """``({node: {shnum: size}}, unreachable nodes)``."""

    async def ask(name):
        try:
            return name, await grid.clients[name].share_set(si)
        except NodeUnreachable:
            return name, None
        except CoapError as e:
            if getattr(e, "code", None) == 0x84:  # 4.04: holds nothing of this file
                return name, {}
            return name, None
        except OSError:
            return name, None

    held, dead = {}, []
    for name, got in await asyncio.gather(*(ask(nm) for nm in grid.clients)):
        if got is None:
            dead.append(name)
        else:
            held[name] = got
    return held, sorted(dead)


async def _admit(grid: Grid, dec: Decoder, si: bytes, shnum: int, node: str) -> None:
    """Fetch and verify the header and trailer of one share copy (raises
    CorruptShare, CoapError or OSError)."""
    client = grid.clients[node]
    p = dec.params or _params_of(dec.cap)
    header = await client.read_range(si, shnum, 0, HEADER_SIZE)
    off, ln = trailer_range(p)
    trailer = await client.read_range(si, shnum, off, ln)
    dec.add_share(shnum, header, trailer)


async def check(grid: Grid, cap, *, verify: bool = False) -> CheckResult:
    """Count and locate the shares of ``cap`` (a read- or verify-cap); with
    ``verify``, also fetch every share's header, trailer and blocks and
    check them against the capability's hashes."""
    if not isinstance(cap, (ReadCap, VerifyCap)):
        raise TypeError("check needs a read or verify capability")
    p = _params_of(cap)
    slen = share_length(p)
    si = cap.storage_index
    res = CheckResult(cap.k, cap.n, cap.size, verified=verify, share_size=slen)
    held, res.unreachable = await _share_sets(grid, si)
    copies = []
    for node, shares in sorted(held.items()):
        for shnum, size in sorted(shares.items()):
            if shnum >= cap.n:
                res.corrupt.append((node, shnum, "share number %d is beyond n=%d" % (shnum, cap.n)))
            elif size != slen:
                res.corrupt.append((node, shnum, "it is %d bytes long, not %d" % (size, slen)))
            else:
                copies.append((shnum, node))
    if not verify:
        for shnum, node in copies:
            res.good.setdefault(shnum, []).append(node)
        return res
    dec = Decoder(cap)

    async def fetch(shnum, node):
        client = grid.clients[node]
        try:
            header = await client.read_range(si, shnum, 0, HEADER_SIZE)
            off, ln = trailer_range(p)
            return header, await client.read_range(si, shnum, off, ln)
        except (CoapError, OSError) as e:
            return e

    admitted = []
    for (shnum, node), got in zip(copies, await asyncio.gather(*(fetch(s, nd) for s, nd in copies))):
        if isinstance(got, Exception):
            res.failed.append((node, shnum, str(got)))
            continue
        try:
            dec.add_share(shnum, *got)
            admitted.append((shnum, node))
        except CorruptShare as e:
            res.corrupt.append((node, shnum, e.reason))

    async def blocks(shnum, node):
        client = grid.clients[node]
        for segnum in range(p.num_segments):
            off, ln = segment_range(p, segnum)
            try:
                block = await client.read_range(si, shnum, off, ln)
            except (CoapError, OSError) as e:
                res.failed.append((node, shnum, str(e)))
                return
            if not dec.block_ok(shnum, segnum, block):
                res.corrupt.append((node, shnum, "block %d does not match its hash" % segnum))
                return
        res.good.setdefault(shnum, []).append(node)

    await asyncio.gather(*(blocks(s, nd) for s, nd in admitted))
    for lst in res.good.values():
        lst.sort()
    res.corrupt.sort(key=lambda c: (c[1], c[0]))
    return res


async def repair(grid: Grid, cap, checked: CheckResult, *, peers: list[Peer] | None = None) -> RepairResult:
    """Rebuild every share number that ``checked`` found missing or corrupt
    from k good shares, store each on a node chosen by placement (nodes
    holding nothing of this file first), then delete the corrupt copies.

    ``peers`` are the nodes that may receive shares (default: the grid's
    nodes that answered). A rebuilt share's trailer (its last bytes) is sent
    only once the rebuilt hash trees verified against the capability, so a
    failed rebuild stores nothing.
    """
    if not isinstance(cap, (ReadCap, VerifyCap)):
        raise TypeError("repair needs a read or verify capability")
    res = RepairResult()
    p = _params_of(cap)
    slen = share_length(p)
    si = cap.storage_index
    missing = sorted(set(range(cap.n)) - set(checked.good))
    if missing and not checked.recoverable:
        res.error = "only %d good shares were found and %d are needed" % (checked.shares, cap.k)
        return res
    # Share numbers held only by nodes that hold other shares too (no matching
    # gives them a node of their own): rebuilt too when a node holding nothing
    # of this file can take them, so that n shares end up on n distinct nodes.
    matched = _matching(checked.good)
    doubled = sorted(set(checked.good) - set(matched))
    busy = {nd for nds in checked.good.values() for nd in nds}
    dead = set(checked.unreachable)
    if peers is None:
        peers = [pr for pr in grid.peers.values() if pr.name not in dead]
    nodes = [PlacementNode(pr.name, pr.free, pr.max_share, pr.zone) for pr in peers]
    plan: dict[int, str] = {}
    if missing or doubled:
        keep = {sh: nds for sh, nds in checked.good.items() if sh in matched}
        try:
            plan = place(si, nodes, cap.n, 1, 1, slen, existing=keep)
        except (NotHappy, StorageError) as e:
            res.error = "no room for the rebuilt shares: %s" % e
            return res
        except Exception as e:  # UsageError from placement
            res.error = str(e)
            return res
    for sh in missing:
        if sh not in plan:
            res.failed[sh] = "no node has room for it"
    rep_missing = sorted([sh for sh in missing if sh in plan] +
                         [sh for sh in doubled if sh in plan and plan[sh] not in busy])
    corrupt = [(nd, sh) for nd, sh, _ in checked.corrupt]
    if not rep_missing:
        if missing:
            res.error = ("only %d good shares were found and %d are needed" % (checked.shares, cap.k)
                         if not checked.recoverable else "no node has room for the rebuilt shares")
            return res
        await _delete_copies(grid, si, corrupt, res)
        return res
    if not checked.recoverable:
        res.error = "only %d good shares were found and %d are needed" % (checked.shares, cap.k)
        return res
    # Sources: one node per good share number, systematic shares first.
    queue = sorted(((sh >= cap.k, sh, nds[0]) for sh, nds in checked.good.items()))
    queue = [(sh, nd) for _, sh, nd in queue]
    dec = Decoder(cap)
    active: list[tuple[int, str]] = []

    async def fill():
        while len(active) < cap.k and queue:
            batch = []
            while queue and len(active) + len(batch) < cap.k:
                batch.append(queue.pop(0))

            async def one(sh, nd):
                try:
                    await _admit(grid, dec, si, sh, nd)
                    return True
                except CorruptShare as e:
                    checked.corrupt.append((nd, sh, e.reason))
                except (CoapError, OSError):
                    pass
                return False

            oks = await asyncio.gather(*(one(sh, nd) for sh, nd in batch))
            active.extend(x for x, ok in zip(batch, oks) if ok)
        if len(active) < cap.k:
            raise NotEnoughShares(len(active), cap.k)

    try:
        await fill()
    except NotEnoughShares as e:
        res.error = str(e)
        return res
    repairer = Repairer(dec, rep_missing)
    queues = {s: asyncio.Queue(maxsize=QUEUE_SEGMENTS) for s in rep_missing}

    async def chunks(q):
        while True:
            c = await q.get()
            if c is None:
                return
            yield c

    async def send(shnum, node):
        q = queues[shnum]
        try:
            await grid.clients[node].put_share_stream(si, shnum, chunks(q), slen)
            res.rebuilt[shnum] = node
            res.bytes_sent += slen
        except (CoapError, OSError, StorageError) as e:
            res.failed[shnum] = "%s: %s" % (node, e)
            while await q.get() is not None:
                pass

    senders = [asyncio.create_task(send(s, plan[s])) for s in rep_missing]
    try:
        for s, q in queues.items():
            await q.put(repairer.header(s))
        for segnum in range(p.num_segments):
            off, ln = segment_range(p, segnum)
            got: dict[int, bytes] = {}
            while len(got) < cap.k:
                need = [a for a in active if a[0] not in got]

                async def fetch(a):
                    try:
                        return a, await grid.clients[a[1]].read_range(si, a[0], off, ln)
                    except (CoapError, OSError) as e:
                        return a, e

                for a, block in await asyncio.gather(*(fetch(a) for a in need)):
                    if isinstance(block, Exception):
                        active.remove(a)
                    elif not dec.block_ok(a[0], segnum, block):
                        checked.corrupt.append((a[1], a[0], "block %d does not match its hash" % segnum))
                        active.remove(a)
                    else:
                        got[a[0]] = block
                if len(got) < cap.k:
                    await fill()
            for s, block in repairer.repair_segment(segnum, got).items():
                await queues[s].put(block)
        trailers = repairer.finish()  # raises IntegrityError: then nothing is completed
        for s, q in queues.items():
            await q.put(trailers[s])
            await q.put(None)
        await asyncio.gather(*senders)
    except BaseException as e:
        for t in senders:
            t.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        if isinstance(e, (StorageError, CoapError, OSError)):
            res.error = "repair failed: %s" % e
            res.rebuilt.clear()
            return res
        raise
    finally:
        res.sources = {s: nd for s, nd in active}
    # Corrupt copies go, except where a rebuilt share has just replaced one.
    corrupt = [(nd, s) for nd, s, _ in checked.corrupt if res.rebuilt.get(s) != nd]
    await _delete_copies(grid, si, sorted(set(corrupt)), res)
    return res


def _matching(good: dict[int, list[str]]) -> dict[int, str]:
    """A maximum matching of share numbers to distinct nodes holding them."""
    match: dict[str, int] = {}  # node -> shnum

    def augment(sh, seen):
        for nd in good[sh]:
            if nd in seen:
                continue
            seen.add(nd)
            if nd not in match or augment(match[nd], seen):
                match[nd] = sh
                return True
        return False

    for sh in sorted(good):
        augment(sh, set())
    return {sh: nd for nd, sh in match.items()}


async def _delete_copies(grid: Grid, si: bytes, copies, res: RepairResult) -> None:
    async def one(node, shnum):
        try:
            await grid.clients[node].delete_share(si, shnum)
            res.deleted.append((node, shnum))
        except (CoapError, OSError):
            pass

    await asyncio.gather(*(one(nd, s) for nd, s in copies if nd in grid.clients))
