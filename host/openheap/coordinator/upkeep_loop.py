"""Keeping the catalog's files alive, in the background of the coordinator.

Two loops run in the coordinator's event loop once it serves files:

**Lease renewal.** Every share a node holds has a lease; the node deletes
the shares whose lease ran out (protocols/RESOURCES.md "Leases"). Every
``renew_every`` seconds the coordinator renews, with ``POST /s/<si>?l=``,
the leases of the files in its catalog that have less than half of
``lease`` seconds left, on the registered nodes holding them, and records
the new expiry in the registry. Shares of files no longer in the catalog
are not renewed, so they disappear by themselves: that is how ``rm`` of a
catalog name, or a file stored and forgotten, frees space on the boards.

**Repair scheduler.** Every ``repair_every`` seconds it looks at every
catalogued file from the registry alone (no traffic): a share counts as
held while its node is registered, *and* while it has been unreachable for
less than ``repair_grace`` seconds (a board rebooting, out of Wi-Fi for a
while). Only shares on nodes unreachable for longer are counted as lost.
Files with fewer than n shares on n distinct nodes are due; at most
``repair_files`` of them are checked and repaired per run (the ones with
fewest shares first), onto registered nodes, and after each repair the
scheduler waits ``bytes sent / repair_rate`` seconds (``repair_rate`` 0: no
wait). So a board that goes away causes no repair at all during the grace
period, and then a steady trickle instead of a storm.

Both loops log what they do (logger ``openheap.coordinator.upkeep``) and
keep a summary, :meth:`Upkeep.status`, served as ``GET /v1/upkeep`` and
shown by ``openheap status``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import asdict, dataclass

from ohproto import const as P
from openheap.errors import OpenheapError, UsageError
from openheap.storage import engine
from openheap.storage.caps import ReadCap, VerifyCap, parse_cap
from openheap.storage.placement import happiness

from .registry import REGISTERED, iso

__all__ = ["UpkeepConfig", "Upkeep", "DEFAULT_RENEW_EVERY", "DEFAULT_REPAIR_GRACE", "DEFAULT_REPAIR_EVERY",
           "DEFAULT_REPAIR_FILES"]

log = logging.getLogger("openheap.coordinator.upkeep")

DEFAULT_RENEW_EVERY = 3600.0  # seconds between lease renewal passes (at most a quarter of the lease)
DEFAULT_REPAIR_GRACE = 3600.0  # seconds a node may be unreachable before its shares count as lost
DEFAULT_REPAIR_EVERY = 300.0  # seconds between repair scheduler runs
DEFAULT_REPAIR_FILES = 4  # files repaired at most per run
RENEW_WHEN_LEFT = 0.5  # renew a lease once less than this part of it is left
HISTORY = 50  # repairs remembered for the status

LIVE, WAITING, LOST = "live", "waiting", "lost"


@dataclass
class UpkeepConfig:
    """How the coordinator keeps files alive (``openheap serve`` options).

    ``lease``: seconds a share lease lasts (given to boards as their default
    and on every renewal); ``renew_every``: seconds between renewal passes
    (None: a quarter of the lease, at most an hour; 0: no renewal);
    ``repair_grace``: seconds a node may be unreachable before its shares
    count as lost; ``repair_every``: seconds between repair runs (0: no
    scheduled repair); ``repair_files``: files repaired at most per run;
    ``repair_rate``: bytes per second the repairs may send on average (0:
    unlimited).
    """

    lease: int = P.LEASE_DEFAULT
    renew_every: float | None = None
    repair_grace: float = DEFAULT_REPAIR_GRACE
    repair_every: float = DEFAULT_REPAIR_EVERY
    repair_files: int = DEFAULT_REPAIR_FILES
    repair_rate: float = 0.0

    def validate(self) -> "UpkeepConfig":
        """Raise UsageError (one sentence) for impossible values; fill in
        ``renew_every``; return self."""
        if isinstance(self.lease, bool) or not isinstance(self.lease, int) or not 1 <= self.lease <= P.LEASE_MAX:
            raise UsageError("the lease must be 1 to %d seconds, not %r" % (P.LEASE_MAX, self.lease))
        if self.renew_every is None:
            self.renew_every = min(DEFAULT_RENEW_EVERY, self.lease / 4.0)
        for key in ("renew_every", "repair_grace", "repair_every", "repair_rate"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UsageError("%s must be a number of at least 0, not %r" % (key.replace("_", "-"), value))
        if 0 < self.lease * RENEW_WHEN_LEFT <= self.renew_every:
            raise UsageError("renewing every %g s cannot keep %d-second leases alive: renew at least every %g s"
                             % (self.renew_every, self.lease, self.lease * RENEW_WHEN_LEFT / 2))
        if isinstance(self.repair_files, bool) or not isinstance(self.repair_files, int) or self.repair_files < 1:
            raise UsageError("repair-files must be a whole number of at least 1, not %r" % (self.repair_files,))
        return self


class Upkeep:
    """The lease renewal and repair loops of one coordinator (see the module
    docstring). ``files`` is its :class:`openheap.coordinator.files.GridFiles`."""

    def __init__(self, coordinator, files, config: UpkeepConfig):
        self.coordinator = coordinator
        self.files = files
        self.config = config.validate()
        self.clock = coordinator.clock
        self._tasks: list[asyncio.Task] = []
        self._repairing = asyncio.Lock()
        self.renewal = {"runs": 0, "last_run": None, "next_run": None, "renewed": 0, "failed": 0, "dropped": 0,
                        "total_renewed": 0, "last_error": None}
        self.repair = {"runs": 0, "last_run": None, "next_run": None, "last": [], "waiting": [], "stuck": [],
                       "due": 0, "queued": 0, "total_repaired": 0, "total_bytes": 0, "last_error": None}
        self.history: deque = deque(maxlen=HISTORY)
        self.node_classes: dict[str, str] = {}
        self._picture: tuple = (frozenset(), frozenset())  # (waiting files, lost nodes) last logged
        self._stuck: dict[bytes, tuple] = {}  # si -> the survey signature at a repair that rebuilt nothing

    @property
    def registry(self):
        return self.coordinator.registry

    # -- start and stop

    def start(self) -> None:
        """Start the loops that are enabled (an interval of 0 disables one)."""
        loop = asyncio.get_running_loop()
        if self.config.renew_every > 0:
            self._tasks.append(loop.create_task(self._every(self.config.renew_every, self.renew_once,
                                                            self.renewal, "lease renewal")))
        if self.config.repair_every > 0:
            self._tasks.append(loop.create_task(self._every(self.config.repair_every, self.repair_once,
                                                            self.repair, "repair scheduler")))
        log.info("upkeep: leases of %d s renewed every %s; repair every %s after a grace of %g s, at most %d "
                 "file%s per run%s", self.config.lease,
                 "%g s" % self.config.renew_every if self.config.renew_every else "(never)",
                 "%g s" % self.config.repair_every if self.config.repair_every else "(never)",
                 self.config.repair_grace, self.config.repair_files, "" if self.config.repair_files == 1 else "s",
                 ", %g bytes/s" % self.config.repair_rate if self.config.repair_rate else "")

    async def stop(self) -> None:
        """Cancel the loops and wait for them."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []

    async def _every(self, interval: float, job, stats: dict, what: str) -> None:
        while True:
            stats["next_run"] = self.clock() + interval
            await asyncio.sleep(interval)
            try:
                await job()
                stats["last_error"] = None
            except asyncio.CancelledError:
                raise
            except Exception as e:
                stats["last_error"] = "%s: %s" % (type(e).__name__, e)
                log.exception("the %s failed", what)

    # -- lease renewal

    async def renew_once(self) -> dict:
        """One renewal pass (see the module docstring); returns its figures."""
        now = self.clock()
        lease = self.config.lease
        catalogued = {f.si for f in self.registry.files() if f.si is not None}
        live = {nd.name for nd in self.registry.nodes(state=REGISTERED, now=now)}
        due: dict[bytes, set[str]] = {}
        for sh in self.registry.shares():
            if sh.si in catalogued and sh.node in live and (
                    sh.lease_expiry is None or sh.lease_expiry - now < lease * RENEW_WHEN_LEFT):
                due.setdefault(bytes(sh.si), set()).add(sh.node)
        renewed = failed = dropped = 0
        if due:
            nodes = set().union(*due.values())
            async with self.files.grid(self.files.peers(True, nodes)) as grid:
                for si, holders in due.items():
                    before = {sh.node for sh in self.registry.shares(si)}
                    got = await self.files.renew(grid, si, holders)
                    gone = len(holders & (before - {sh.node for sh in self.registry.shares(si)}))
                    renewed += len(got)
                    dropped += gone  # answered 4.04: the node no longer holds the file
                    failed += len(holders) - len(got) - gone
        self.renewal.update(runs=self.renewal["runs"] + 1, last_run=now, renewed=renewed, failed=failed,
                            dropped=dropped, total_renewed=self.renewal["total_renewed"] + renewed)
        if due:
            log.info("lease renewal: %d lease%s renewed for %d s on %d file%s%s%s", renewed,
                     "" if renewed == 1 else "s", lease, len(due), "" if len(due) == 1 else "s",
                     ", %d failed" % failed if failed else "",
                     ", %d no longer held" % dropped if dropped else "")
        return {"renewed": renewed, "failed": failed, "dropped": dropped, "files": len(due)}

    # -- repair scheduler

    def classify(self, now: float | None = None) -> dict[str, str]:
        """``{node: "live" | "waiting" | "lost"}`` for every node in the registry:
        live while registered, waiting while unreachable for less than the
        grace period, lost after."""
        now = self.clock() if now is None else now
        out = {}
        for nd in self.registry.nodes(now=now):
            if nd.state == REGISTERED:
                out[nd.name] = LIVE
            else:
                out[nd.name] = WAITING if now - nd.state_since < self.config.repair_grace else LOST
        return out

    def survey(self, now: float | None = None) -> tuple[list[dict], list[dict]]:
        """From the registry alone: ``(due, waiting)``. ``due`` are the
        catalogued files needing repair even when shares on waiting nodes
        count (fewest shares first); ``waiting`` those that are whole only
        thanks to such shares, with when their wait ends."""
        now = self.clock() if now is None else now
        classes = self.classify(now)
        self.node_classes = classes
        since = {nd.name: nd.state_since for nd in self.registry.nodes(now=now)}
        due, waiting, stuck, seen = [], [], [], set()
        for f in self.registry.files():
            if f.si is None or f.si in seen:
                continue
            seen.add(f.si)
            counted: dict[int, list[str]] = {}
            live: dict[int, list[str]] = {}
            for sh in self.registry.shares(f.si):
                cls = classes.get(sh.node, LOST)
                if cls != LOST and sh.shnum < f.n:
                    counted.setdefault(sh.shnum, []).append(sh.node)
                if cls == LIVE and sh.shnum < f.n:
                    live.setdefault(sh.shnum, []).append(sh.node)
            entry = {"cap": f.cap, "name": f.name, "si": f.si, "n": f.n, "k": f.k, "shares": len(counted),
                     "live": len(live)}
            if len(counted) < f.n or happiness(counted) < f.n:
                # the same picture as at a repair that could do nothing: nothing new to try
                entry["signature"] = (frozenset((s, nd) for s, nds in counted.items() for nd in nds),
                                      frozenset(nd for nd, c in classes.items() if c == LIVE))
                if self._stuck.get(f.si) == entry["signature"]:
                    stuck.append(entry)
                else:
                    due.append(entry)
            elif len(live) < f.n or happiness(live) < f.n:
                held_by = sorted({nd for nds in counted.values() for nd in nds if classes.get(nd) == WAITING})
                entry["nodes"] = held_by
                entry["due"] = min(since[nd] for nd in held_by) + self.config.repair_grace
                waiting.append(entry)
        due.sort(key=lambda e: (e["shares"] - e["k"], e["shares"]))
        self.repair["stuck"] = [_public(e) for e in stuck]
        return due, waiting

    async def repair_once(self) -> list[dict]:
        """One scheduler run: survey, then check and repair at most
        ``repair_files`` due files; returns what was done per file."""
        now = self.clock()
        due, waiting = self.survey(now)
        self.repair.update(waiting=[_public(e) for e in waiting], due=len(due))
        batch = due[:self.config.repair_files]
        self.repair["queued"] = len(due) - len(batch)
        picture = (frozenset(e["si"] for e in waiting), frozenset(nd for nd, c in self.node_classes.items()
                                                                  if c == LOST))
        if picture != self._picture:  # log changes only, not every run
            self._picture = picture
            if waiting:
                log.info("repair scheduler: %d file%s missing shares on unreachable nodes (%s), within the grace "
                         "period of %g s", len(waiting), "" if len(waiting) == 1 else "s",
                         ", ".join(sorted({nd for e in waiting for nd in e["nodes"]})), self.config.repair_grace)
            if picture[1]:
                log.warning("repair scheduler: nodes unreachable for longer than %g s, their shares count as "
                            "lost: %s", self.config.repair_grace, ", ".join(sorted(picture[1])))
        done = []
        for entry in batch:
            async with self._repairing:
                result = await self.repair_file(entry)
            if result.get("rebuilt"):
                self._stuck.pop(entry["si"], None)
            else:  # not again until a node comes, goes or changes state
                self._stuck[entry["si"]] = entry["signature"]
            done.append(result)
            self.history.append(result)
            if result.get("rebuilt"):
                self.repair["total_repaired"] += 1
            self.repair["total_bytes"] += result.get("bytes_sent", 0)
            if self.config.repair_rate and result.get("bytes_sent"):
                await asyncio.sleep(result["bytes_sent"] / self.config.repair_rate)
        if len(due) > len(batch):
            log.info("repair scheduler: %d more file%s due, left for the next runs (at most %d per run)",
                     len(due) - len(batch), "" if len(due) - len(batch) == 1 else "s", self.config.repair_files)
        self.repair.update(runs=self.repair["runs"] + 1, last_run=now, last=done)
        return done

    async def repair_file(self, entry: dict) -> dict:
        """Check one file on the registered nodes and rebuild the shares that
        are neither there nor on a node still within its grace period."""
        started = self.clock()
        out = {"cap": entry["cap"], "name": entry["name"], "at": started, "rebuilt": {}, "bytes_sent": 0,
               "error": None}
        try:
            cap = parse_cap(entry["cap"], accept=(ReadCap, VerifyCap))
        except OpenheapError as e:
            out["error"] = str(e)
            return out
        si = cap.storage_index
        classes = self.classify()
        live_peers = self.files.peers(True)
        async with self.files.grid(live_peers) as grid:
            checked = await engine.check(grid, cap)
            self.files.record_check(si, checked, set(grid.clients))
            presumed: dict[int, list[str]] = {}
            for sh in self.registry.shares(si):
                if classes.get(sh.node) == WAITING and sh.shnum not in checked.good:
                    presumed.setdefault(sh.shnum, []).append(sh.node)
            out.update(shares_before=checked.shares, presumed={str(s): nds for s, nds in sorted(presumed.items())})
            held = dict(checked.good)
            for s, nds in presumed.items():
                held.setdefault(s, nds)
            if len(held) >= cap.n and happiness(held) >= cap.n:
                out["note"] = "nothing to rebuild"
                log.info("repair scheduler: %s (%s) needs nothing rebuilt after all", _short(entry), out["cap"][:24])
                return out
            peers = [p for p in live_peers if p.name not in set(checked.unreachable)]
            rep = await engine.repair(grid, cap, checked, peers=peers, presumed=presumed)
            self.files.record_repair(si, checked, rep)
            if rep.rebuilt:
                # the copies on lost nodes are replaced: stop renewing them
                for sh in self.registry.shares(si):
                    if classes.get(sh.node, LOST) == LOST and sh.shnum in rep.rebuilt:
                        self.registry.remove_share(si, sh.shnum, sh.node)
            out.update(rebuilt={str(s): nd for s, nd in sorted(rep.rebuilt.items())},
                       failed={str(s): why for s, why in sorted(rep.failed.items())},
                       bytes_sent=rep.bytes_sent, error=rep.error)
            after = await engine.check(grid, cap)
            out.update(shares_after=after.shares, healthy=after.healthy)
        if rep.error or rep.failed:
            log.warning("repair scheduler: %s (%s): rebuilt %s; %s", _short(entry), out["cap"][:24],
                        ", ".join("share %s to %s" % kv for kv in out["rebuilt"].items()) or "nothing",
                        rep.error or "failed: %s" % "; ".join("share %s: %s" % kv for kv in out["failed"].items()))
        else:
            log.info("repair scheduler: repaired %s (%s): %s (%d bytes sent), now %d of %d shares", _short(entry),
                     out["cap"][:24], ", ".join("share %s to %s" % kv for kv in out["rebuilt"].items()),
                     rep.bytes_sent, after.shares, cap.n)
        return out

    # -- what it shows

    def status(self) -> dict:
        """The loops' settings and latest figures (``GET /v1/upkeep``)."""
        classes = self.classify()
        cfg = asdict(self.config)
        return {
            "config": cfg,
            "leases": _times(self.renewal),
            "repair": dict(_times(self.repair), last=[_result(r) for r in self.repair["last"]],
                           history=[_result(r) for r in self.history]),
            "nodes": {cls: sorted(nd for nd, c in classes.items() if c == cls) for cls in (LIVE, WAITING, LOST)},
        }


def _short(entry: dict) -> str:
    return entry.get("name") or "file"


def _public(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k not in ("si", "signature")}
    if "due" in out:
        out["due"] = iso(out["due"])
    return out


def _times(stats: dict) -> dict:
    out = dict(stats)
    for key in ("last_run", "next_run"):
        out[key] = iso(out.get(key))
    return out


def _result(r: dict) -> dict:
    out = dict(r)
    out["at"] = iso(out.get("at"))
    return out
