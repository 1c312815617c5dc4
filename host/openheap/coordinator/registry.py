"""The coordinator's memory: nodes, the file catalog and share locations.

One SQLite database, ``<home>/coordinator/grid.db`` (stdlib :mod:`sqlite3`,
WAL mode), used through one connection guarded by a lock, so that the
asyncio loop and worker threads (``asyncio.to_thread``) may share a
:class:`Registry`. Every call is one short transaction.

Tables (schema version in ``PRAGMA user_version``, see ``SCHEMA_VERSION``):

``nodes``   one row per node that ever registered: what it said about itself
            (board, firmware, filesystem, limits, zone), where it is (the
            source address of its last registration), its registration id
            and lifetime, when it was first and last seen, and its state.
``files``   the catalog: optional name -> capability, with size, k, n,
            happy, creation time and whether the key was random.
``shares``  share locations: (storage index, share number, node) with the
            share's size and lease expiry.

Node states (``NODE_STATES``): ``registered`` while the node refreshes its
registration within its lifetime plus a grace period, ``unreachable`` after
that. A node is never deleted for being silent: only :meth:`Registry.remove_node`
removes it ("gone"). State is computed from the clock whenever a node is
read, and :meth:`Registry.sweep` records the transitions (``state_since``).
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from openheap.errors import ConfigError, UsageError

__all__ = [
    "Registry",
    "NodeInfo",
    "NodeRecord",
    "FileRecord",
    "ShareRecord",
    "SCHEMA_VERSION",
    "REGISTERED",
    "UNREACHABLE",
    "NODE_STATES",
    "DEFAULT_GRACE",
    "NAME_RE",
    "iso",
    "db_path",
]

SCHEMA_VERSION = 1
REGISTERED = "registered"
UNREACHABLE = "unreachable"
NODE_STATES = (REGISTERED, UNREACHABLE)
DEFAULT_GRACE = 10.0  # seconds past a node's lifetime before it counts as unreachable
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # as openheap.sim.fleet's board names
TEXT_MAX = 64  # board, firmware and zone labels
INT_MAX = (1 << 63) - 1  # SQLite's INTEGER

_SCHEMA = {
    1: [
        """CREATE TABLE nodes (
            name        TEXT PRIMARY KEY,
            board       TEXT NOT NULL,
            host        TEXT NOT NULL,
            port        INTEGER NOT NULL,
            zone        TEXT,
            fs_total    INTEGER NOT NULL,
            fs_free     INTEGER NOT NULL,
            max_share   INTEGER NOT NULL,
            shares_held INTEGER NOT NULL,
            heap_total  INTEGER,
            firmware    TEXT NOT NULL,
            first_seen  REAL NOT NULL,
            last_seen   REAL NOT NULL,
            reg_id      TEXT NOT NULL UNIQUE,
            lifetime    INTEGER NOT NULL,
            state       TEXT NOT NULL,
            state_since REAL NOT NULL
        )""",
        """CREATE TABLE files (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            name        TEXT UNIQUE,
            cap         TEXT NOT NULL,
            si          BLOB,
            size        INTEGER NOT NULL,
            k           INTEGER NOT NULL,
            n           INTEGER NOT NULL,
            happy       INTEGER NOT NULL,
            created     REAL NOT NULL,
            random_key  INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX files_cap ON files(cap)",
        "CREATE INDEX files_si ON files(si)",
        """CREATE TABLE shares (
            si           BLOB NOT NULL,
            shnum        INTEGER NOT NULL,
            node         TEXT NOT NULL,
            size         INTEGER NOT NULL,
            lease_expiry REAL,
            PRIMARY KEY (si, shnum, node)
        )""",
        "CREATE INDEX shares_node ON shares(node)",
    ],
}


def iso(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC, e.g. ``2025-01-31T12:00:00Z``."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def db_path(home) -> Path:
    """``<home>/coordinator/grid.db``."""
    return Path(home) / "coordinator" / "grid.db"


@dataclass
class NodeInfo:
    """What a node says about itself when it registers (the CBOR payload)."""

    name: str
    board: str
    firmware: str
    fs_total: int
    fs_free: int
    max_share: int
    shares_held: int
    zone: str | None = None
    heap_total: int | None = None

    def validate(self) -> "NodeInfo":
        """Raise UsageError (one sentence) unless every field is sane; return self."""
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise UsageError("node name %r is not 1-64 letters, digits, '_', '.' or '-'" % (self.name,))
        for key in ("board", "firmware"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value or len(value) > TEXT_MAX:
                raise UsageError("%s must be a text of 1-%d characters, not %r" % (key, TEXT_MAX, value))
        if self.zone is not None and (not isinstance(self.zone, str) or not self.zone or len(self.zone) > TEXT_MAX):
            raise UsageError("zone must be a text of 1-%d characters, not %r" % (TEXT_MAX, self.zone))
        for key in ("fs_total", "fs_free", "max_share", "shares_held", "heap_total"):
            value = getattr(self, key)
            if value is None and key == "heap_total":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT_MAX:
                raise UsageError("%s must be an unsigned integer, not %r" % (key, value))
        if self.fs_free > self.fs_total:
            raise UsageError("fs_free %d is larger than fs_total %d" % (self.fs_free, self.fs_total))
        return self


@dataclass
class NodeRecord(NodeInfo):
    """A node as the registry knows it."""

    host: str = ""
    port: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    reg_id: str = ""
    lifetime: int = 0
    state: str = REGISTERED
    state_since: float = 0.0

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)

    @property
    def expires(self) -> float:
        """When the registration runs out (before the grace period)."""
        return self.last_seen + self.lifetime

    def to_json(self, now: float | None = None) -> dict:
        """The node as ``GET /v1/nodes`` and ``openheap nodes --json`` show it."""
        now = time.time() if now is None else now
        return {
            "name": self.name,
            "board": self.board,
            "address": self.address,
            "host": self.host,
            "port": self.port,
            "state": self.state,
            "shares": self.shares_held,
            "free": self.fs_free,
            "total": self.fs_total,
            "max_share": self.max_share,
            "heap_total": self.heap_total,
            "firmware": self.firmware,
            "zone": self.zone,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "last_seen_ago": round(max(0.0, now - self.last_seen), 1),
            "lifetime": self.lifetime,
            "expires": iso(self.expires),
            "state_since": iso(self.state_since),
        }


@dataclass
class FileRecord:
    """One catalog entry."""

    id: int
    name: str | None
    cap: str
    si: bytes | None
    size: int
    k: int
    n: int
    happy: int
    created: float
    random_key: bool = False

    def to_json(self) -> dict:
        d = asdict(self)
        d["si"] = self.si.hex() if self.si is not None else None
        d["created"] = iso(self.created)
        return d


@dataclass
class ShareRecord:
    """Where one share lives."""

    si: bytes
    shnum: int
    node: str
    size: int
    lease_expiry: float | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["si"] = self.si.hex()
        d["lease_expiry"] = iso(self.lease_expiry)
        return d


_NODE_COLS = [f for f in NodeRecord.__dataclass_fields__]  # noqa: SIM118 -- declaration order
_FILE_COLS = [f for f in FileRecord.__dataclass_fields__]
_SHARE_COLS = [f for f in ShareRecord.__dataclass_fields__]


class Registry:
    """The coordinator's SQLite database (see the module docstring).

    ``grace`` is how long past its lifetime a node stays ``registered``;
    ``clock`` (default :func:`time.time`) is the time source, replaceable in tests.
    """

    def __init__(self, path, *, grace: float = DEFAULT_GRACE, clock=time.time):
        self.path = Path(path)
        self.grace = float(grace)
        self.clock = clock
        # callable(NodeRecord as last seen): a node found unreachable by a
        # registration of it before a sweep recorded it (the service logs it)
        self.on_missed_sweep = None
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        except (OSError, sqlite3.Error) as e:
            raise ConfigError("cannot open the grid database %s: %s" % (self.path, e)) from None
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise ConfigError(
                "the grid database %s is damaged (%s); move it away to start with an empty registry" % (self.path, e)
            ) from None
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    "the grid database %s has schema %d but this openheap knows only up to %d; upgrade openheap"
                    % (self.path, version, SCHEMA_VERSION)
                )
            while version < SCHEMA_VERSION:
                version += 1
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _SCHEMA[version]:
                        self._db.execute(stmt)
                    self._db.execute("PRAGMA user_version=%d" % version)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- helpers

    def _tx(self):
        return _Tx(self)

    def _query(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _effective(self, row, now: float) -> NodeRecord:
        rec = NodeRecord(**{k: row[k] for k in _NODE_COLS})
        if rec.state == REGISTERED and now > rec.last_seen + rec.lifetime + self.grace:
            rec.state = UNREACHABLE
            rec.state_since = rec.last_seen + rec.lifetime + self.grace
        return rec

    # -- nodes

    def register(self, info: NodeInfo, host: str, port: int, lifetime: int, now: float | None = None):
        """Record a (re)registration; return ``(NodeRecord, previous state or None)``.

        A new registration id is issued every time (the node's previous id
        becomes unknown). ``previous state`` is None for a node never seen.
        """
        info.validate()
        now = self.clock() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT * FROM nodes WHERE name=?", (info.name,)).fetchone()
            missed = None if row is None else self._missed(row, now)
            previous = None if row is None else self._effective(row, now).state
            reg_id = self._new_id(db)
            values = dict(asdict(info), host=host, port=int(port), last_seen=now, reg_id=reg_id,
                          lifetime=int(lifetime), state=REGISTERED)
            if row is None:
                values.update(first_seen=now, state_since=now)
                cols = list(values)
                db.execute("INSERT INTO nodes (%s) VALUES (%s)" % (",".join(cols), ",".join("?" * len(cols))),
                           [values[c] for c in cols])
            else:
                if previous != REGISTERED:
                    values["state_since"] = now
                cols = list(values)
                db.execute("UPDATE nodes SET %s WHERE name=?" % ",".join("%s=?" % c for c in cols),
                           [values[c] for c in cols] + [info.name])
            row = db.execute("SELECT * FROM nodes WHERE name=?", (info.name,)).fetchone()
        self._report_missed(missed)
        return self._effective(row, now), previous

    def refresh(self, reg_id: str, info: NodeInfo, host: str, port: int, lifetime: int | None = None,
                now: float | None = None):
        """Refresh registration ``reg_id``; return ``(NodeRecord, previous state)``,
        or None when the id is unknown (the node must register again).

        Raises UsageError if the id belongs to another node name.
        """
        info.validate()
        now = self.clock() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT * FROM nodes WHERE reg_id=?", (reg_id,)).fetchone()
            if row is None:
                return None
            if row["name"] != info.name:
                raise UsageError("registration %s belongs to node %s, not %s" % (reg_id, row["name"], info.name))
            missed = self._missed(row, now)
            previous = self._effective(row, now).state
            values = dict(asdict(info), host=host, port=int(port), last_seen=now, state=REGISTERED)
            if lifetime is not None:
                values["lifetime"] = int(lifetime)
            if previous != REGISTERED:
                values["state_since"] = now
            cols = list(values)
            db.execute("UPDATE nodes SET %s WHERE reg_id=?" % ",".join("%s=?" % c for c in cols),
                       [values[c] for c in cols] + [reg_id])
            row = db.execute("SELECT * FROM nodes WHERE reg_id=?", (reg_id,)).fetchone()
        self._report_missed(missed)
        return self._effective(row, now), previous

    def _missed(self, row, now: float) -> NodeRecord | None:
        # The node as last seen when its registration ran out (plus grace)
        # but no sweep has recorded it yet: its silence is reported all the
        # same, so the log shows every "unreachable" that GET /v1/nodes showed.
        rec = self._effective(row, now)
        return rec if row["state"] == REGISTERED and rec.state == UNREACHABLE else None

    def _report_missed(self, rec: NodeRecord | None) -> None:
        if rec is not None and self.on_missed_sweep is not None:
            self.on_missed_sweep(rec)

    @staticmethod
    def _new_id(db) -> str:
        while True:
            reg_id = secrets.token_urlsafe(6)  # 8 characters, 48 bits
            if db.execute("SELECT 1 FROM nodes WHERE reg_id=?", (reg_id,)).fetchone() is None:
                return reg_id

    def node(self, name: str, now: float | None = None) -> NodeRecord | None:
        """One node, or None."""
        now = self.clock() if now is None else now
        rows = self._query("SELECT * FROM nodes WHERE name=?", (name,))
        return self._effective(rows[0], now) if rows else None

    def node_by_id(self, reg_id: str, now: float | None = None) -> NodeRecord | None:
        now = self.clock() if now is None else now
        rows = self._query("SELECT * FROM nodes WHERE reg_id=?", (reg_id,))
        return self._effective(rows[0], now) if rows else None

    def nodes(self, state: str | None = None, now: float | None = None) -> list[NodeRecord]:
        """Every node (or those in ``state``), by name."""
        if state is not None and state not in NODE_STATES:
            raise UsageError("a node state is one of %s, not %r" % (", ".join(NODE_STATES), state))
        now = self.clock() if now is None else now
        recs = [self._effective(r, now) for r in self._query("SELECT * FROM nodes ORDER BY name")]
        return [r for r in recs if state is None or r.state == state]

    def counts(self, now: float | None = None) -> dict:
        """``{"registered": n, "unreachable": m, "total": n + m}``."""
        recs = self.nodes(now=now)
        out = {s: sum(1 for r in recs if r.state == s) for s in NODE_STATES}
        out["total"] = len(recs)
        return out

    def sweep(self, now: float | None = None) -> list[NodeRecord]:
        """Record nodes whose registration ran out (plus grace) as unreachable;
        return those that changed state now."""
        now = self.clock() if now is None else now
        changed = []
        with self._tx() as db:
            rows = db.execute("SELECT * FROM nodes WHERE state=? AND last_seen + lifetime + ? < ?",
                              (REGISTERED, self.grace, now)).fetchall()
            for row in rows:
                rec = self._effective(row, now)
                db.execute("UPDATE nodes SET state=?, state_since=? WHERE name=?",
                           (UNREACHABLE, rec.state_since, rec.name))
                changed.append(rec)
        return changed

    def remove_node(self, name: str) -> bool:
        """Forget a node and the share locations recorded on it ("gone"); True if it existed."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM nodes WHERE name=?", (name,))
            db.execute("DELETE FROM shares WHERE node=?", (name,))
            return cur.rowcount > 0

    # -- file catalog

    def add_file(self, cap: str, *, size: int, k: int, n: int, happy: int, name: str | None = None,
                 si: bytes | None = None, random_key: bool = False, created: float | None = None) -> FileRecord:
        """Add a catalog entry; a name already in the catalog now points at ``cap``."""
        if name is not None and (not isinstance(name, str) or not name or len(name) > 1024 or "\0" in name):
            raise UsageError("a catalog name is 1-1024 characters without NUL, not %r" % (name,))
        created = self.clock() if created is None else created
        with self._tx() as db:
            if name is not None:
                db.execute("DELETE FROM files WHERE name=?", (name,))
            cur = db.execute(
                "INSERT INTO files (name, cap, si, size, k, n, happy, created, random_key) VALUES (?,?,?,?,?,?,?,?,?)",
                (name, cap, None if si is None else bytes(si), int(size), int(k), int(n), int(happy), created,
                 int(bool(random_key))),
            )
            row = db.execute("SELECT * FROM files WHERE id=?", (cur.lastrowid,)).fetchone()
        return self._file(row)

    @staticmethod
    def _file(row) -> FileRecord:
        rec = FileRecord(**{k: row[k] for k in _FILE_COLS})
        rec.random_key = bool(rec.random_key)
        return rec

    def file(self, name: str) -> FileRecord | None:
        """The entry called ``name``, or None."""
        rows = self._query("SELECT * FROM files WHERE name=?", (name,))
        return self._file(rows[0]) if rows else None

    def files(self, cap: str | None = None, si: bytes | None = None) -> list[FileRecord]:
        """Catalog entries (all, or those of a capability or storage index), oldest first."""
        if cap is not None:
            rows = self._query("SELECT * FROM files WHERE cap=? ORDER BY id", (cap,))
        elif si is not None:
            rows = self._query("SELECT * FROM files WHERE si=? ORDER BY id", (bytes(si),))
        else:
            rows = self._query("SELECT * FROM files ORDER BY id")
        return [self._file(r) for r in rows]

    def remove_file(self, name: str) -> bool:
        """Remove the entry called ``name``; True if there was one."""
        with self._tx() as db:
            return db.execute("DELETE FROM files WHERE name=?", (name,)).rowcount > 0

    def remove_cap(self, cap: str) -> int:
        """Remove every entry pointing at ``cap``; return how many."""
        with self._tx() as db:
            return db.execute("DELETE FROM files WHERE cap=?", (cap,)).rowcount

    # -- share locations

    def add_share(self, si: bytes, shnum: int, node: str, size: int, lease_expiry: float | None = None) -> None:
        """Record (or update) that ``node`` holds share ``shnum`` of ``si``."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO shares (si, shnum, node, size, lease_expiry) VALUES (?,?,?,?,?) "
                "ON CONFLICT(si, shnum, node) DO UPDATE SET size=excluded.size, lease_expiry=excluded.lease_expiry",
                (bytes(si), int(shnum), node, int(size), lease_expiry),
            )

    def shares(self, si: bytes | None = None, node: str | None = None) -> list[ShareRecord]:
        """Share locations, filtered by storage index and/or node."""
        where, args = [], []
        if si is not None:
            where.append("si=?")
            args.append(bytes(si))
        if node is not None:
            where.append("node=?")
            args.append(node)
        sql = "SELECT * FROM shares" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY si, shnum, node"
        return [ShareRecord(**{k: r[k] for k in _SHARE_COLS}) for r in self._query(sql, args)]

    def remove_share(self, si: bytes, shnum: int, node: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM shares WHERE si=? AND shnum=? AND node=?",
                              (bytes(si), int(shnum), node)).rowcount > 0

    def remove_shares(self, si: bytes, node: str | None = None) -> int:
        """Forget every location of ``si`` (on ``node`` only, if given); return how many."""
        with self._tx() as db:
            if node is None:
                return db.execute("DELETE FROM shares WHERE si=?", (bytes(si),)).rowcount
            return db.execute("DELETE FROM shares WHERE si=? AND node=?", (bytes(si), node)).rowcount

    def renew_leases(self, si: bytes, lease_expiry: float, node: str | None = None) -> int:
        """Set the lease expiry of the shares of ``si`` (on ``node``); return how many."""
        with self._tx() as db:
            if node is None:
                return db.execute("UPDATE shares SET lease_expiry=? WHERE si=?", (lease_expiry, bytes(si))).rowcount
            return db.execute("UPDATE shares SET lease_expiry=? WHERE si=? AND node=?",
                              (lease_expiry, bytes(si), node)).rowcount

    def expiring_shares(self, before: float) -> list[ShareRecord]:
        """Shares whose lease ends before ``before`` (for lease renewal)."""
        rows = self._query("SELECT * FROM shares WHERE lease_expiry IS NOT NULL AND lease_expiry < ? "
                           "ORDER BY lease_expiry", (before,))
        return [ShareRecord(**{k: r[k] for k in _SHARE_COLS}) for r in rows]


class _Tx:
    """``with registry._tx() as db:`` one IMMEDIATE transaction under the lock."""

    def __init__(self, reg: Registry):
        self.reg = reg

    def __enter__(self):
        self.reg._lock.acquire()
        try:
            self.reg._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.reg._lock.release()
            raise
        return self.reg._db

    def __exit__(self, exc_type, exc, tb):
        try:
            self.reg._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.reg._lock.release()
        return False
