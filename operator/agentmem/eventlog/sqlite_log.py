"""The embedded event log: one ordered SQLite table per partition.

Offsets are the rows' ids minus one, timestamps the append time. Several
processes may share one file (SQLite's locking serializes appends).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from agentmem.node.ports import LogRecord


class SqliteLog:
    """A connection to an embedded log file (one per thread)."""

    def __init__(self, path: str | Path, partitions: int) -> None:
        self.path = str(path)
        self.partitions = partitions
        self._local = threading.local()
        self._starts: dict[int, int] = {}
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            row = db.execute("SELECT value FROM meta WHERE name = 'partitions'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('partitions', ?)", (str(partitions),))
                for p in range(partitions):
                    db.execute(
                        f"CREATE TABLE IF NOT EXISTS p{p} "
                        "(id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER, key BLOB, payload BLOB)"
                    )

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class SqliteWriter(SqliteLog):
    """Appends to the embedded log."""

    def _append(self, partition: int, key: bytes, payload: bytes) -> int:
        db = self._db()
        cursor = db.execute(
            f"INSERT INTO p{partition} (ts, key, payload) VALUES (?, ?, ?)",
            (int(time.time() * 1000), key, payload),
        )
        return int(cursor.lastrowid or 0) - 1

    async def append(self, partition: int, key: bytes, payload: bytes) -> int:
        return await asyncio.to_thread(self._append, partition, key, payload)

    async def close(self) -> None:  # type: ignore[override]
        SqliteLog.close(self)


class SqliteReader(SqliteLog):
    """Reads the embedded log."""

    def assign(self, starts: dict[int, int]) -> None:
        self._starts = dict(starts)

    def poll(self, max_records: int, timeout: float) -> list[LogRecord]:
        db = self._db()
        out: list[LogRecord] = []
        for partition, start in sorted(self._starts.items()):
            rows = db.execute(
                f"SELECT id, ts, payload, key FROM p{partition} WHERE id > ? ORDER BY id LIMIT ?",
                (start, max_records - len(out)),
            ).fetchall()
            for row_id, ts, payload, key in rows:
                out.append(LogRecord(partition, row_id - 1, ts, bytes(payload), bytes(key)))
            if rows:
                self._starts[partition] = rows[-1][0]
            if len(out) >= max_records:
                break
        if not out:
            time.sleep(min(timeout, 0.01))
        return out

    def high_watermarks(self, partitions: Sequence[int]) -> dict[int, int]:
        db = self._db()
        return {
            p: int(db.execute(f"SELECT COALESCE(MAX(id), 0) FROM p{p}").fetchone()[0])
            for p in partitions
        }

    def scan(self, partition: int, start: int, end: int, max_records: int) -> list[LogRecord]:
        rows = (
            self._db()
            .execute(
                f"SELECT id, ts, payload FROM p{partition} WHERE id > ? AND id <= ? "
                "ORDER BY id LIMIT ?",
                (max(start, 0), end, max_records),
            )
            .fetchall()
        )
        return [LogRecord(partition, i - 1, ts, bytes(payload)) for i, ts, payload in rows]

    def partition_count(self) -> int:
        row = self._db().execute("SELECT value FROM meta WHERE name = 'partitions'").fetchone()
        return int(row[0])
