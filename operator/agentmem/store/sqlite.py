"""The durable store of the embedded mode: an SQLite file (one per cluster)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agentmem.store.ports import StoreUnavailableError
from agentmem.store.sql import RetryableTransactionError, Session, SqlStore


class SqliteStore(SqlStore):
    param = "?"
    tenant_of_path = "substr(path, 1, instr(path, '/') - 1)"
    value_bytes = "length(CAST(value AS BLOB))"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self.name = f"the durable store ({self.path})"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
            with self._guard:
                self._all.append(db)
        return db

    @contextlib.contextmanager
    def _session(self, write: bool) -> Iterator[Session]:
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"{self.name}: {exc}") from exc
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise RetryableTransactionError(str(exc)) from exc
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailableError(f"{self.name}: {exc}") from exc
            raise

    def _create_schema(self) -> None:
        return None  # one file per cluster

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def close(self) -> None:
        with self._guard:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()
