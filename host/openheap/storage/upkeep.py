"""Keeping files alive: check (count and locate shares), verify (read and
hash every block of every share), and repair (rebuild missing or corrupt
shares from k good ones onto nodes that hold none of the file).

Works with a read-cap or a verify-cap: neither check nor repair decrypts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from openheap.errors import CoapError, NodeUnreachable
from openheap.storage.caps import ReadCap, VerifyCap
from openheap.storage.decoder import Decoder
from openheap.storage.engine import Grid, Peer, ShareUploads
from openheap.storage.errors import CorruptShare, NotEnoughShares, NotHappy, StorageError
from openheap.storage.layout import HEADER_SIZE, Params, segment_range, share_length, trailer_range
from openheap.storage.placement import Node as PlacementNode
from openheap.storage.placement import place
from openheap.storage.repair import Repairer

__all__ = ["CheckResult", "RepairResult", "check", "repair"]


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


async def repair(grid: Grid, cap, checked: CheckResult, *, peers: list[Peer] | None = None,
                 presumed: dict[int, list[str]] | None = None) -> RepairResult:
    """Rebuild every share number that ``checked`` found missing or corrupt
    from k good shares, store each on a node chosen by placement (nodes
    holding nothing of this file first), then delete the corrupt copies.

    ``peers`` are the nodes that may receive shares (default: the grid's
    nodes that answered). ``presumed`` (``{shnum: [node, ...]}``) are shares
    on nodes that cannot be asked now but still count as held, e.g. on a
    node unreachable for less than a grace period: they are neither rebuilt
    nor read. A rebuilt share's trailer (its last bytes) is sent only once
    the rebuilt hash trees verified against the capability, so a failed
    rebuild stores nothing.
    """
    if not isinstance(cap, (ReadCap, VerifyCap)):
        raise TypeError("repair needs a read or verify capability")
    res = RepairResult()
    p = _params_of(cap)
    slen = share_length(p)
    si = cap.storage_index
    held = {sh: list(nds) for sh, nds in checked.good.items()}
    for sh, nds in (presumed or {}).items():
        if 0 <= sh < cap.n and sh not in held and nds:
            held[sh] = list(nds)
    missing = sorted(set(range(cap.n)) - set(held))
    if missing and not checked.recoverable:
        res.error = "only %d good shares were found and %d are needed" % (checked.shares, cap.k)
        return res
    # Share numbers held only by nodes that hold other shares too (no matching
    # gives them a node of their own): rebuilt too when a node holding nothing
    # of this file can take them, so that n shares end up on n distinct nodes.
    matched = _matching(held)
    doubled = sorted(set(checked.good) - set(matched))
    busy = {nd for nds in held.values() for nd in nds}
    dead = set(checked.unreachable)
    if peers is None:
        peers = [pr for pr in grid.peers.values() if pr.name not in dead]
    nodes = [PlacementNode(pr.name, pr.free, pr.max_share, pr.zone) for pr in peers]
    plan: dict[int, str] = {}
    if missing or doubled:
        keep = {sh: nds for sh, nds in held.items() if sh in matched}
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
    up = ShareUploads(grid, si, slen, {s: plan[s] for s in rep_missing})
    try:
        await up.feed({s: repairer.header(s) for s in rep_missing})
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
            await up.feed(repairer.repair_segment(segnum, got))
        trailers = repairer.finish()  # raises IntegrityError: then nothing is completed
        await up.finish(trailers)
        res.rebuilt.update(up.sent)
        res.failed.update(up.failed)
        res.bytes_sent += up.bytes_sent
    except BaseException as e:
        await up.cancel()
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
