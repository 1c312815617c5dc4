"""Putting and getting files on the grid's nodes over CoAP.

The storage library (encoder, decoder, placement) does the work; this module
moves its bytes. ``put`` encodes the file segment by segment and streams every
planned share to its node at the same time, in one pass (each share's SHA-256
goes with its last block), so memory stays bounded by a few segments whatever
the file size; shares the grid already holds (the same file put before, with
convergent encryption) are not sent again, and a share whose node fails
mid-put is sent again to a node holding nothing of the file yet (up to
``RESEND_ROUNDS`` times) before happiness is judged. ``get`` asks every node which
shares it holds, reads k of them from the nodes that answered fastest,
checks every block against the hash trees and replaces a share whose block
is corrupt or whose node fails with another one.
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from ohproto.const import SERVICE_UNAVAILABLE
from openheap.errors import CoapError, NodeUnreachable
from openheap.node import ContextPool, NodeClient
from openheap.storage import crypto
from openheap.storage.caps import LITERAL_MAX, LiteralCap, ReadCap, VerifyCap
from openheap.storage.decoder import Decoder
from openheap.storage.encoder import Encoder, read_exactly
from openheap.storage.errors import BadCapability, CorruptShare, NotEnoughShares, NotHappy, StorageError
from openheap.storage.layout import HEADER_SIZE, Params, segment_range, share_length, trailer_range
from openheap.storage.placement import Node as PlacementNode
from openheap.storage.placement import check_happy, happiness, place

__all__ = ["Peer", "Grid", "PutResult", "GetResult", "put", "get", "locate",
           "delete", "check", "repair"]

DEFAULT_TIMEOUT = 10.0  # seconds a node may take to answer one request (retransmissions included)
QUEUE_SEGMENTS = 2  # segments buffered per share between encoder and sender
RESEND_ROUNDS = 3  # times put sends failed shares again to other nodes
RETRY_PAUSE = 0.5  # seconds before a share goes again to the node that failed it (no other node left)
SPOOL_MEMORY = 4 << 20  # bytes a share waiting for its node keeps in memory before a temporary file
SPOOL_PIECE = 64 << 10
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
    dead node from a live one. ``contexts`` (a :class:`ContextPool`) lends
    them instead, kept from one operation to the next.
    """

    def __init__(self, peers: list[Peer], *, timeout: float = DEFAULT_TIMEOUT,
                 contexts: ContextPool | None = None):
        self.peers = {p.name: p for p in peers}
        self.timeout = timeout
        self.contexts = contexts  # a long-running process's pool of them, if any
        self.clients: dict[str, NodeClient] = {}

    async def __aenter__(self) -> "Grid":
        peers = list(self.peers.values())
        ctxs = [None] * len(peers)
        if self.contexts is not None:
            ctxs = [await self.contexts.get(p.host, p.port) for p in peers]
        self.clients = {p.name: NodeClient(p.host, p.port, name=p.name, timeout=self.timeout, context=c)
                        for p, c in zip(peers, ctxs)}
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


class ShareUploads:
    """Shares streamed to their nodes while they are being produced.

    ``plan`` is ``{shnum: node}``; :meth:`feed` hands each share its next
    bytes (header, a block per segment), :meth:`finish` its trailer, and each
    share goes to its node in one Block1 pass (hash with the last block) with
    at most ``QUEUE_SEGMENTS`` pieces buffered. A share whose upload fails is
    recorded in ``failed`` and drained, so the producer never blocks on it.

    A node takes one of the shares at a time (when there are fewer nodes
    than shares): each upload holds an open file and its buffers in the
    board's 64 KiB heap, and two at once with a TCP connection open ran a
    registered board out of memory. The shares waiting for their node keep
    what the producer hands them in a spool (memory, then a temporary file
    past ``SPOOL_MEMORY`` bytes) and send it first when their turn comes.
    """

    def __init__(self, grid: Grid, si: bytes, share_size: int, plan: dict[int, str]):
        self.sent: dict[int, str] = {}
        self.failed: dict[int, str] = {}
        self.transient: set[int] = set()  # failed shares whose node may take them on a second try
        self.bytes_sent = 0
        self._queues = {s: asyncio.Queue(maxsize=QUEUE_SEGMENTS) for s in plan}
        self._turns = {nd: asyncio.Lock() for nd in plan.values()}
        self._tasks = [asyncio.create_task(self._send(grid, si, share_size, s, nd)) for s, nd in plan.items()]

    async def _send(self, grid, si, size, shnum, node):
        q = self._queues[shnum]
        turn = self._turns[node]
        spool = None
        ended = False  # the producer's None was taken into the spool
        if turn.locked():  # another share of this node goes first
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
            wait = asyncio.ensure_future(turn.acquire())
            while not wait.done() and not ended:
                get = asyncio.ensure_future(q.get())
                await asyncio.wait([wait, get], return_when=asyncio.FIRST_COMPLETED)
                if get.done():
                    c = get.result()
                    if c is None:
                        ended = True
                    else:
                        spool.write(c)
                else:
                    get.cancel()
            await wait
        else:
            await turn.acquire()

        async def chunks():
            nonlocal ended
            if spool is not None:
                spool.seek(0)
                while c := spool.read(SPOOL_PIECE):
                    yield c
                spool.close()
            while not ended:
                c = await q.get()
                if c is None:
                    ended = True  # (a failure after this must not wait for more)
                    return
                yield c

        try:
            await grid.clients[node].put_share_stream(si, shnum, chunks(), size)
            self.sent[shnum] = node
            self.bytes_sent += size
        except (CoapError, OSError, StorageError) as e:
            self.failed[shnum] = "%s: %s" % (node, e)
            if _transient(e):
                self.transient.add(shnum)
            while not ended and await q.get() is not None:  # let the producer go on
                pass
        finally:
            turn.release()

    async def feed(self, pieces) -> None:
        """Give share s the bytes ``pieces[s]`` (a mapping or a list by shnum)."""
        for s, q in self._queues.items():
            await q.put(pieces[s])

    async def finish(self, trailers) -> None:
        """The last bytes of every share; waits until every upload ended."""
        await self.feed(trailers)
        for q in self._queues.values():
            await q.put(None)
        await asyncio.gather(*self._tasks)

    async def cancel(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _transient(e: BaseException) -> bool:
    """Whether a node that failed an upload with ``e`` may well take it on a
    second try: silence, a broken connection, or a 5.03 other than a full
    flash or share table (out of memory, too many uploads, busy)."""
    if isinstance(e, (NodeUnreachable, OSError)):
        return True
    if isinstance(e, CoapError) and e.code == SERVICE_UNAVAILABLE:
        why = (e.diagnostic or "").lower()
        return "space" not in why and "limit" not in why
    return False


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
    enc, up = await _send_shares(grid, src, params, key, si, slen, plan, progress)
    result.placed, result.failed, result.bytes_sent = dict(up.sent), dict(up.failed), up.bytes_sent
    result.cap = enc.read_cap()
    have = dict(existing)
    have.update(result.placed)
    bad: set[str] = set()
    transient = set(up.transient)
    tried_again = False
    for _ in range(RESEND_ROUNDS):
        if not result.failed or not src.seekable():
            break
        # Nodes failed mid-put: send those shares again, from the start of
        # the file, to nodes that hold nothing of it yet (placement order),
        # one each: a second share on a node adds no happiness.
        last = plan
        bad |= {nd for s, nd in plan.items() if s in result.failed}
        holding = set(have.values())
        plan = _fresh_plan(si, [nd for nd in nodes if nd.id not in bad and nd.id not in holding],
                           set(result.failed), have, n, k, slen)
        if not plan and not tried_again and happiness(list(have.items())) < happy:
            # No node left that holds nothing of the file, and not happy
            # yet: a share whose node failed it for a passing reason
            # (silence, out of memory) goes to that node once more, after a
            # breath.
            tried_again = True
            plan = {s: nd for s, nd in last.items() if s in result.failed and s in transient
                    and nd not in holding}
            if plan:
                await asyncio.sleep(RETRY_PAUSE)
        if not plan:
            break
        src.seek(0)
        try:
            _, up = await _send_shares(grid, src, params, key, si, slen, plan, None)
        except BaseException:
            await _remove(grid, si, result.placed)
            raise
        for s, nd in up.sent.items():
            result.placed[s] = have[s] = nd
            result.failed.pop(s, None)
        transient = set(up.transient)
        result.bytes_sent += up.bytes_sent
        result.failed.update({s: "%s; again: %s" % (result.failed.get(s, ""), why) for s, why in up.failed.items()})
    try:
        check_happy(list(have.items()), happy, k)
    except NotHappy as e:
        await _remove(grid, si, result.placed)
        why = "; ".join("share %d: %s" % kv for kv in sorted(result.failed.items()))
        raise NotHappy("%s%s" % (e, " (failed: %s)" % why if why else ""), e.happiness, e.needed) from None
    return result


def _fresh_plan(si: bytes, spare: list, failed: set[int], have: dict[int, str], n: int, k: int,
                slen: int) -> dict[int, str]:
    """Where the ``failed`` shares go again: in placement order, one each to
    the ``spare`` nodes (which hold nothing of the file); {} when none fits."""
    try:
        plan = place(si, spare, n, k, k, slen, existing=have) if spare else {}
    except NotHappy:
        return {}
    fresh: dict[int, str] = {}
    for s, nd in sorted(plan.items()):
        if s in failed and nd not in fresh.values():
            fresh[s] = nd
    return fresh


async def _send_shares(grid: Grid, src: BinaryIO, params: Params, key: bytes, si: bytes, slen: int,
                       plan: dict[int, str], progress) -> tuple[Encoder, ShareUploads]:
    """Encode the file from ``src`` (at its start) and stream the shares of
    ``plan`` to their nodes in one pass; on any error remove what was sent."""
    enc = Encoder(key, params)
    up = ShareUploads(grid, si, slen, plan)
    try:
        await up.feed({s: enc.header(s) for s in plan})
        done = 0
        for segnum in range(params.num_segments):
            want = params.segment_size(segnum)
            data = read_exactly(src, want)
            if len(data) != want:
                raise StorageError("the file is shorter than its %d bytes; was it changed while "
                                   "being stored?" % params.size)
            await up.feed(enc.encode_segment(data))
            done += want
            if progress:
                progress(done)
        _, _, trailers = enc.finish()
        await up.finish(trailers)
    except BaseException:
        await up.cancel()
        await _remove(grid, si, plan)
        raise
    return enc, up


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
    """Write the file ``cap`` (a read-cap) names to ``out``, verifying every
    block. A verify-cap raises :class:`BadCapability`: it cannot decrypt.

    ``out.write`` may be a coroutine function (it is awaited).

    Raises :class:`NotEnoughShares` naming how many shares were found and how
    many are needed when fewer than k good shares can be read.
    """
    if isinstance(cap, LiteralCap):
        out.write(cap.data)
        return GetResult(len(cap.data))
    if isinstance(cap, VerifyCap):
        raise BadCapability("a verify-cap can check and repair a file but not read it; "
                            "give its read-cap (URI:CHK:...)")
    if not isinstance(cap, ReadCap):
        raise TypeError("get needs a read capability")
    res = GetResult(cap.size)
    si = cap.storage_index
    held = await locate(grid, si)
    # Candidates: fastest nodes first (in steps of FAST_STEP seconds, so that
    # noise does not count), and among equally fast ones the systematic shares
    # (< k): they hold the ciphertext itself and need no decoding. A share
    # held by several nodes (a repair put it elsewhere while its first node
    # was away) is a candidate on each: another copy when one fails.
    cands = sorted(((int(took / FAST_STEP), s >= cap.k, s, nd)
                    for s, lst in held.items() for nd, _, took in lst))
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

    def take(batch):
        # the next candidate of a share not being read already
        used = {a.shnum for a in active} | {b.shnum for b in batch}
        for i, c in enumerate(queue):
            if c.shnum not in used:
                return queue.pop(i)
        return None

    async def fill():
        while len(active) < cap.k and queue:
            batch = []
            while len(active) + len(batch) < cap.k and (c := take(batch)) is not None:
                batch.append(c)
            if not batch:
                break
            oks = await asyncio.gather(*(admit(b) for b in batch))
            active.extend(b for b, ok in zip(batch, oks) if ok)
        if len(active) < cap.k:
            bad = {(nd, s) for nd, s, _ in res.corrupt + res.failed}
            good = len({s for s, lst in held.items() if any((nd, s) not in bad for nd, _, _ in lst)})
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
                try:  # (segments are read in order, up to the trailer)
                    return src, await grid.clients[src.node].read_range(si, src.shnum, off, ln,
                                                                        upto=trailer_range(p)[0])
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


# check / verify / repair live in openheap.storage.upkeep; re-exported here.
from openheap.storage.upkeep import CheckResult, RepairResult, check, repair  # noqa: E402,F401
