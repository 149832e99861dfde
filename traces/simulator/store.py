"""A real versioned key-value store on one SQLite file, shared by processes.

Every row carries a version that the store assigns: a monotonic counter per
key (the previous version + 1, inside one write transaction), so every write
that takes effect produces a fresh version, whether it was a compare-and-set
or a blind write. Reads return (value, version). A dedup table records
idempotent actions, and side_effects records every action actually performed.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup (
    key TEXT PRIMARY KEY,
    agent TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS side_effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    agent TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class BlindWrite:
    version: int  # the version this write produced
    overwritten: int  # the version that was current when it was applied


@dataclass(frozen=True, slots=True)
class ActionResult:
    executed: bool  # this call performed the side effect
    duplicate: bool  # the side effect had already been performed before


class VersionedStore:
    """One SQLite file; one connection per thread; writes in BEGIN IMMEDIATE."""

    def __init__(self, path: str, *, busy_timeout_s: float = 30.0):
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def initialise(self, keys: list[str]) -> None:
        """Create the tables and seed `keys` at version 0 (written by nobody)."""
        conn = self._conn()
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR IGNORE INTO kv (key, value, version) VALUES (?, '0', 0)", [(k,) for k in keys])
        conn.execute("COMMIT")

    def read(self, key: str) -> tuple[str | None, int]:
        """(value, version); a key never written reads as (None, 0)."""
        row = self._conn().execute("SELECT value, version FROM kv WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else (None, 0)

    def write_cas(self, key: str, value: str, *, base_version: int) -> int | None:
        """Compare-and-set: the new version, or None when `key` moved past `base_version`."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "UPDATE kv SET value = ?, version = version + 1 WHERE key = ? AND version = ?",
                (value, key, base_version),
            )
            if cur.rowcount == 1:
                new_version = base_version + 1
            elif base_version == 0:
                cur = conn.execute("INSERT OR IGNORE INTO kv (key, value, version) VALUES (?, ?, 1)", (key, value))
                new_version = 1 if cur.rowcount == 1 else None
            else:
                new_version = None
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new_version

    def write_blind(self, key: str, value: str) -> BlindWrite:
        """Write without any check; still gets a fresh version from the counter."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT version FROM kv WHERE key = ?", (key,)).fetchone()
            current = row[0] if row else 0
            conn.execute(
                "INSERT INTO kv (key, value, version) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version",
                (key, value, current + 1),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return BlindWrite(version=current + 1, overwritten=current)

    def perform_action(self, key: str, *, agent: str, dedup: bool = True) -> ActionResult:
        """Perform the side effect named `key` once (dedup) or unconditionally (bypass)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute("INSERT OR IGNORE INTO dedup (key, agent) VALUES (?, ?)", (key, agent))
            first = cur.rowcount == 1
            executed = first or not dedup
            if executed:
                conn.execute("INSERT INTO side_effects (key, agent) VALUES (?, ?)", (key, agent))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return ActionResult(executed=executed, duplicate=executed and not first)

    def side_effect_counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT key, COUNT(*) FROM side_effects GROUP BY key").fetchall()
        return dict(rows)
