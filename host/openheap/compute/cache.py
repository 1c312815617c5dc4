"""The results cache: a job run again computes nothing it computed before.

A result is stored under ``(code id, function name, CBOR of the arguments)``
in SQLite at ``<home>/compute/results.db``; the code id is the SHA-256 of the
module's bytecode-only ``.mpy`` (:attr:`openheap.compute.code.Code.code_id`),
so editing the module starts afresh. Values are kept as CBOR, errors as
``[type, message]``. Only answers that are the function's own are kept: a
value, or an exception the function raised; a lost board, a timeout, a
MemoryError or a forbidden import can be different next time and are not.
Writes are batched (one transaction per ``FLUSH_EVERY`` results or on
:meth:`ResultCache.flush`/:meth:`ResultCache.close`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import cbor2

from openheap.errors import ConfigError

__all__ = ["ResultCache", "cache_path", "CACHEABLE_ERRORS_EXCLUDED"]

FLUSH_EVERY = 200
#: Error types that say something about the board or the moment, not the function.
CACHEABLE_ERRORS_EXCLUDED = frozenset({"MemoryError", "Watchdog", "Timeout", "Lost", "Cancelled"})


def cache_path(home) -> Path:
    """``<home>/compute/results.db``."""
    from openheap.sim import resolve_home

    return resolve_home(home) / "compute" / "results.db"


class ResultCache:
    """Results by (code id, function, CBOR args); safe to use from one thread at a time."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS results (code BLOB NOT NULL, func TEXT NOT NULL, "
                             "args BLOB NOT NULL, ok INTEGER NOT NULL, value BLOB, error TEXT, at REAL NOT NULL, "
                             "PRIMARY KEY (code, func, args))")
            self._db.commit()
        except (OSError, sqlite3.Error) as e:
            raise ConfigError("cannot open the results cache %s: %s" % (self.path, e)) from None
        self._pending: list[tuple] = []
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, code_id: bytes, func: str, args_cbor: bytes):
        """``("ok", value)``, ``("error", (type, message))`` or None."""
        with self._lock:
            for row in reversed(self._pending):
                if row[:3] == (code_id, func, args_cbor):
                    self.hits += 1
                    return self._decode(row[3], row[4], row[5])
            cur = self._db.execute("SELECT ok, value, error FROM results WHERE code=? AND func=? AND args=?",
                                   (code_id, func, args_cbor))
            row = cur.fetchone()
        if row is None:
            return None
        self.hits += 1
        return self._decode(*row)

    @staticmethod
    def _decode(ok, value, error):
        if ok:
            return "ok", cbor2.loads(value)
        return "error", tuple(json.loads(error))

    def put_value(self, code_id: bytes, func: str, args_cbor: bytes, value_cbor: bytes) -> None:
        """Remember a value (its CBOR bytes, as the board sent it)."""
        self._add((code_id, func, args_cbor, 1, value_cbor, None, time.time()))

    def put_error(self, code_id: bytes, func: str, args_cbor: bytes, error: tuple[str, str]) -> None:
        """Remember an exception the function raised (unless it is one that
        says more about the board than the function)."""
        if error[0] in CACHEABLE_ERRORS_EXCLUDED:
            return
        self._add((code_id, func, args_cbor, 0, None, json.dumps(list(error)), time.time()))

    def _add(self, row) -> None:
        with self._lock:
            self._pending.append(row)
            full = len(self._pending) >= FLUSH_EVERY
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the batched results."""
        with self._lock:
            rows, self._pending = self._pending, []
            if not rows:
                return
            try:
                self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.commit()
            except sqlite3.Error as e:
                raise ConfigError("cannot write the results cache %s: %s" % (self.path, e)) from None

    def clear(self) -> int:
        """Forget every result; returns how many there were."""
        with self._lock:
            self._pending = []
            n = self._db.execute("DELETE FROM results").rowcount
            self._db.commit()
            return n

    def close(self) -> None:
        """Flush and close."""
        try:
            self.flush()
        finally:
            self._db.close()
