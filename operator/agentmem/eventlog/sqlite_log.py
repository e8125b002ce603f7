"""The embedded event log: one ordered SQLite table per partition.

Offsets are the rows' ids minus one, timestamps the append time (kept
non-decreasing per partition, like a broker's log append time). Several
processes may share one file (SQLite's locking serializes appends).
Truncation deletes the oldest rows; AUTOINCREMENT never reuses an id, so
offsets keep growing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from agentmem.eventlog.ports import LogGapError, LogRecord


class SqliteLog:
    """A connection to an embedded log file (one per thread)."""

    def __init__(self, path: str | Path, partitions: int) -> None:
        self.path = str(path)
        self.partitions = partitions
        self._local = threading.local()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE name = 'partitions'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('partitions', ?)", (str(partitions),))
                db.execute("INSERT INTO meta VALUES ('topic_id', ?)", (uuid.uuid4().hex,))
                for p in range(partitions):
                    db.execute(
                        f"CREATE TABLE IF NOT EXISTS p{p} "
                        "(id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER, key BLOB, payload BLOB)"
                    )
            db.execute("COMMIT")

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._local.db = db
        return db

    def _low_high(self, partition: int) -> tuple[int, int]:
        db = self._db()
        low = db.execute(f"SELECT MIN(id) FROM p{partition}").fetchone()[0]
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (f"p{partition}",))
        row = seq.fetchone()
        high = int(row[0]) if row else 0
        return (int(low) - 1 if low is not None else high), high

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class SqliteWriter(SqliteLog):
    """Appends to the embedded log."""

    def _append(self, partition: int, key: bytes, payload: bytes) -> int:
        db = self._db()
        now = int(time.time() * 1000)
        db.execute("BEGIN IMMEDIATE")
        try:
            last = db.execute(f"SELECT MAX(ts) FROM p{partition}").fetchone()[0]
            cursor = db.execute(
                f"INSERT INTO p{partition} (ts, key, payload) VALUES (?, ?, ?)",
                (max(now, last or 0), key, payload),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(cursor.lastrowid or 0) - 1

    async def append(self, partition: int, key: bytes, payload: bytes) -> int:
        return await asyncio.to_thread(self._append, partition, key, payload)

    async def close(self) -> None:  # type: ignore[override]
        SqliteLog.close(self)


class SqliteReader(SqliteLog):
    """Reads the embedded log."""

    def __init__(self, path: str | Path, partitions: int) -> None:
        super().__init__(path, partitions)
        self._next: dict[int, int] = {}
        self._unchecked: set[int] = set()

    def assign(self, starts: dict[int, int]) -> None:
        self._next = {p: max(o, 0) for p, o in starts.items()}
        self._unchecked = set(self._next)

    def poll(self, max_records: int, timeout: float) -> list[LogRecord]:
        db = self._db()
        out: list[LogRecord] = []
        for partition, start in sorted(self._next.items()):
            rows = db.execute(
                f"SELECT id, ts, payload, key FROM p{partition} WHERE id > ? ORDER BY id LIMIT ?",
                (start, max_records - len(out)),
            ).fetchall()
            if partition in self._unchecked or (rows and rows[0][0] - 1 > start):
                # A jump in the ids: rows were truncated away under this reader.
                self._unchecked.discard(partition)
                low, _ = self._low_high(partition)
                if low > start:
                    raise LogGapError(partition, start, low)
            for row_id, ts, payload, key in rows:
                out.append(LogRecord(partition, row_id - 1, ts, bytes(payload), bytes(key)))
            if rows:
                self._next[partition] = rows[-1][0]
            if len(out) >= max_records:
                break
        if not out:
            time.sleep(min(timeout, 0.01))
        return out


class SqliteAdmin(SqliteLog):
    """Watermarks, times, identity and truncation of the embedded log."""

    def topic_id(self) -> str:
        row = self._db().execute("SELECT value FROM meta WHERE name = 'topic_id'").fetchone()
        return str(row[0])

    def partition_count(self) -> int:
        row = self._db().execute("SELECT value FROM meta WHERE name = 'partitions'").fetchone()
        return int(row[0])

    def watermarks(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        return {p: self._low_high(p) for p in partitions}

    def high_watermarks(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: self._low_high(p)[1] for p in partitions}

    def offset_for_time(self, partition: int, timestamp_ms: int) -> int:
        row = (
            self._db()
            .execute(f"SELECT MIN(id) FROM p{partition} WHERE ts >= ?", (timestamp_ms,))
            .fetchone()
        )
        if row[0] is None:
            return self._low_high(partition)[1]
        return int(row[0]) - 1

    def truncate(self, partition: int, before: int) -> None:
        self._db().execute(f"DELETE FROM p{partition} WHERE id <= ?", (before,))
