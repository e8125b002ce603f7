"""What the PostgreSQL and SQLite stores share: the schema, its migrations, the
statements and the write protocol. Each adapter supplies connections,
transactions, its placeholder style and its error classes.

The statements keep to SQL that PostgreSQL, CockroachDB and SQLite all accept:
no extensions, no advisory locks, ``INSERT .. ON CONFLICT .. DO UPDATE`` for
upserts, one conditional update of the offset row as the only coordination.

Tables (in the cluster's schema; SQLite has one file per cluster instead):

- ``schema_migrations(version, name, applied_at)``: migrations applied;
- ``log_offsets(cluster_uid, topic_id, partition, log_offset, log_time)``: the
  highest offset each partition's facts reflect, and its log time;
- ``records(partition, path, value, version, expires_at, updated)``: live keys;
- ``request_ids(partition, rid_key, outcome, log_time)``: the dedup window;
- ``audit_checkpoints(cluster_uid, partition, first_offset, last_offset, ...)``:
  the signed links of each partition's hash chain (see agentmem.runtime.audit).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, Protocol

from agentmem.store.ports import (
    AuditCheckpoint,
    Changes,
    Compute,
    Record,
    RequestRecord,
    Snapshot,
    Stored,
    StoreIdentityError,
    StoreUnavailableError,
    WriteResult,
)

log = logging.getLogger(__name__)

#: Versioned migrations: (version, name, statements). ``{t}`` is the table prefix.
#: Statements are idempotent, so a migration interrupted halfway is run again.
MIGRATIONS: Final[tuple[tuple[int, str, tuple[str, ...]], ...]] = (
    (
        1,
        "offsets, records and request ids",
        (
            "CREATE TABLE IF NOT EXISTS {t}log_offsets ("
            " cluster_uid TEXT NOT NULL, topic_id TEXT NOT NULL, partition INT NOT NULL,"
            " log_offset BIGINT NOT NULL, log_time BIGINT NOT NULL,"
            " PRIMARY KEY (cluster_uid, topic_id, partition))",
            "CREATE TABLE IF NOT EXISTS {t}records ("
            " partition INT NOT NULL, path TEXT NOT NULL, value TEXT NOT NULL,"
            " version BIGINT NOT NULL, expires_at BIGINT, updated BIGINT NOT NULL,"
            " PRIMARY KEY (partition, path))",
            "CREATE INDEX IF NOT EXISTS records_expiry ON {t}records (partition, expires_at)",
            "CREATE TABLE IF NOT EXISTS {t}request_ids ("
            " partition INT NOT NULL, rid_key TEXT NOT NULL, outcome TEXT NOT NULL,"
            " log_time BIGINT NOT NULL, PRIMARY KEY (partition, rid_key))",
            "CREATE INDEX IF NOT EXISTS request_ids_time ON {t}request_ids (partition, log_time)",
        ),
    ),
    (
        2,
        "signed checkpoints of the audit chain",
        (
            "CREATE TABLE IF NOT EXISTS {t}audit_checkpoints ("
            " cluster_uid TEXT NOT NULL, partition INT NOT NULL,"
            " first_offset BIGINT NOT NULL, last_offset BIGINT NOT NULL,"
            " prev_head TEXT NOT NULL, head TEXT NOT NULL, digests TEXT NOT NULL,"
            " kid TEXT NOT NULL, signature TEXT NOT NULL, signed_at BIGINT NOT NULL,"
            " PRIMARY KEY (cluster_uid, partition, last_offset))",
        ),
    ),
)

_CHECKPOINT_COLUMNS = (
    "partition, first_offset, last_offset, prev_head, head, digests, kid, signature, signed_at"
)

#: Attempts of a write whose transaction failed to serialize.
SERIALIZATION_ATTEMPTS: Final = 20


class Session(Protocol):
    """The part of a DB-API connection the shared code uses."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any: ...


class RetryableTransactionError(Exception):
    """Raised by an adapter for a transaction that may succeed when run again."""


class SqlStore:
    """The write-behind protocol over an SQL database; adapters fill in the dialect."""

    #: Placeholder of a parameter: ``%s`` (psycopg) or ``?`` (sqlite3).
    param = "%s"
    #: Table prefix: ``"schema".`` or nothing.
    prefix = ""
    #: Appended to the offset row's SELECT to lock it (``FOR UPDATE``), if the
    #: dialect locks that way.
    lock_clause = ""
    #: How the store is named in messages.
    name = "the durable store"
    #: The tenant of a record's path (``tenant/agent/key``), and a value's size in bytes.
    tenant_of_path = "split_part(path, '/', 1)"
    value_bytes = "octet_length(value)"

    def __init__(self) -> None:
        self.cluster_uid = ""
        self.topic_id = ""
        #: Transactions that failed to serialize and were run again.
        self.retries = 0

    # Adapter hooks ------------------------------------------------------------

    def _session(self, write: bool) -> contextlib.AbstractContextManager[Session]:
        """A session inside one transaction (serializable; read-only unless ``write``)."""
        raise NotImplementedError

    def _create_schema(self) -> None:
        raise NotImplementedError

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column`` is one of ``values``: the SQL fragment and its parameters."""
        raise NotImplementedError

    # Statements ---------------------------------------------------------------

    def _sql(self, statement: str) -> str:
        return statement.replace("{t}", self.prefix).replace("{p}", self.param)

    def _run(self, session: Session, statement: str, params: Sequence[Any] = ()) -> Any:
        return session.execute(self._sql(statement), params)

    # Opening ------------------------------------------------------------------

    def open(self, cluster_uid: str, topic_id: str) -> None:
        self.cluster_uid, self.topic_id = cluster_uid, topic_id
        self._create_schema()
        self._migrate()
        with self._session(write=False) as s:
            rows = self._run(
                s, "SELECT DISTINCT cluster_uid, topic_id FROM {t}log_offsets"
            ).fetchall()
        others = sorted({(str(u), str(t)) for u, t in rows} - {(cluster_uid, topic_id)})
        if others:
            uid, topic = others[0]
            what = "another cluster" if uid != cluster_uid else "another event topic"
            raise StoreIdentityError(
                f"{self.name} holds the facts of {what} (cluster uid {uid}, topic id {topic}; "
                f"this node has cluster uid {cluster_uid}, topic id {topic_id}). A re-created "
                "topic starts again at offset 0, so these facts cannot continue it: point "
                "spec.store at a new schema, or drop the old one if its data is no longer wanted"
            )

    def open_audit(self, cluster_uid: str) -> None:
        self.cluster_uid = cluster_uid
        self._create_schema()
        self._migrate()

    def _migrate(self) -> None:
        with self._session(write=True) as s:
            self._run(
                s,
                "CREATE TABLE IF NOT EXISTS {t}schema_migrations (version INT PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
        with self._session(write=False) as s:
            rows = self._run(s, "SELECT version FROM {t}schema_migrations").fetchall()
        done = {int(r[0]) for r in rows}
        for version, name, statements in MIGRATIONS:
            if version in done:
                continue
            with self._session(write=True) as s:
                for statement in statements:
                    self._run(s, statement)
                self._run(
                    s,
                    "INSERT INTO {t}schema_migrations (version, name, applied_at)"
                    " VALUES ({p}, {p}, {p}) ON CONFLICT (version) DO NOTHING",
                    (version, name, int(time.time() * 1000)),
                )
            log.info("%s: migration %s (%s) applied", self.name, version, name)

    # Reading ------------------------------------------------------------------

    def offsets(self, partitions: Iterable[int]) -> dict[int, Stored]:
        wanted = sorted(set(partitions))
        out = {p: Stored() for p in wanted}
        if not wanted:
            return out
        where, params = self._in("partition", wanted)
        with self._session(write=False) as s:
            rows = self._run(
                s,
                "SELECT partition, log_offset, log_time FROM {t}log_offsets"
                " WHERE cluster_uid = {p} AND topic_id = {p} AND " + where,
                [self.cluster_uid, self.topic_id, *params],
            ).fetchall()
        for p, offset, log_time in rows:
            out[int(p)] = Stored(int(offset), int(log_time))
        return out

    def tenant_bytes(self) -> dict[str, int]:
        with self._session(write=False) as s:
            rows = self._run(
                s,
                f"SELECT {self.tenant_of_path}, SUM({self.value_bytes}) FROM {{t}}records"
                f" GROUP BY {self.tenant_of_path}",
            ).fetchall()
        return {str(tenant): int(total or 0) for tenant, total in rows}

    # The audit chain's checkpoints ---------------------------------------------

    def save_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        c = checkpoint
        with self._session(write=True) as s:
            self._run(
                s,
                "INSERT INTO {t}audit_checkpoints (cluster_uid, " + _CHECKPOINT_COLUMNS + ")"
                " VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
                " ON CONFLICT (cluster_uid, partition, last_offset) DO NOTHING",
                (self.cluster_uid, c.partition, c.first, c.last, c.prev_head, c.head, c.digests,
                 c.kid, c.signature, c.signed_at),
            )  # fmt: skip

    def checkpoints(self, partition: int, start: int, end: int) -> list[AuditCheckpoint]:
        with self._session(write=False) as s:
            rows = self._run(
                s,
                "SELECT " + _CHECKPOINT_COLUMNS + " FROM {t}audit_checkpoints"
                " WHERE cluster_uid = {p} AND partition = {p} AND last_offset >= {p}"
                " AND first_offset <= {p} ORDER BY last_offset",
                (self.cluster_uid, partition, start, end),
            ).fetchall()
        return [_checkpoint(row) for row in rows]

    def last_checkpoint(self, partition: int) -> AuditCheckpoint | None:
        with self._session(write=False) as s:
            row = self._run(
                s,
                "SELECT " + _CHECKPOINT_COLUMNS + " FROM {t}audit_checkpoints"
                " WHERE cluster_uid = {p} AND partition = {p}"
                " ORDER BY last_offset DESC LIMIT 1",
                (self.cluster_uid, partition),
            ).fetchone()
        return None if row is None else _checkpoint(row)

    def snapshot(self, partition: int) -> Snapshot:
        with self._session(write=False) as s:
            stored = self._stored(s, partition, lock=False)
            snap = Snapshot(partition, stored)
            for path, value, version, expires_at, updated in self._run(
                s,
                "SELECT path, value, version, expires_at, updated FROM {t}records"
                " WHERE partition = {p}",
                (partition,),
            ):
                snap.records[path] = Record(
                    value, int(version), None if expires_at is None else int(expires_at),
                    int(updated),
                )  # fmt: skip
            for key, outcome, log_time in self._run(
                s,
                "SELECT rid_key, outcome, log_time FROM {t}request_ids WHERE partition = {p}",
                (partition,),
            ):
                snap.request_ids[key] = RequestRecord(outcome, int(log_time))
        return snap

    def _stored(self, s: Session, partition: int, lock: bool) -> Stored:
        row = self._run(
            s,
            "SELECT log_offset, log_time FROM {t}log_offsets"
            " WHERE cluster_uid = {p} AND topic_id = {p} AND partition = {p}"
            + (self.lock_clause if lock else ""),
            (self.cluster_uid, self.topic_id, partition),
        ).fetchone()
        return Stored(int(row[0]), int(row[1])) if row is not None else Stored()

    # Writing ------------------------------------------------------------------

    def write(self, partition: int, start: int, end: int, compute: Compute) -> WriteResult:
        for attempt in range(SERIALIZATION_ATTEMPTS):
            try:
                return self._write_once(partition, start, end, compute)
            except RetryableTransactionError:
                self.retries += 1
                time.sleep(min(0.005 * 2**attempt, 0.5))
        raise StoreUnavailableError(
            f"{self.name}: the write of partition {partition} failed to serialize "
            f"{SERIALIZATION_ATTEMPTS} times; it is retried later"
        )

    def _write_once(self, partition: int, start: int, end: int, compute: Compute) -> WriteResult:
        with self._session(write=True) as s:
            self._run(
                s,
                "INSERT INTO {t}log_offsets (cluster_uid, topic_id, partition, log_offset,"
                " log_time) VALUES ({p}, {p}, {p}, -1, 0)"
                " ON CONFLICT (cluster_uid, topic_id, partition) DO NOTHING",
                (self.cluster_uid, self.topic_id, partition),
            )
            stored = self._stored(s, partition, lock=True)
            if stored.offset >= end:
                return WriteResult("stale", stored)
            if stored.offset < start - 1:
                return WriteResult("gap", stored)
            changes = compute(stored, _View(self, s, partition))
            self._persist(s, partition, changes)
            after = Stored(changes.offset, changes.log_time)
            self._run(
                s,
                "UPDATE {t}log_offsets SET log_offset = {p}, log_time = {p}"
                " WHERE cluster_uid = {p} AND topic_id = {p} AND partition = {p}",
                (after.offset, after.log_time, self.cluster_uid, self.topic_id, partition),
            )
            return WriteResult("written", after)

    def _persist(self, s: Session, partition: int, changes: Changes) -> None:
        if changes.upserts:
            s.executemany(
                self._sql(
                    "INSERT INTO {t}records (partition, path, value, version, expires_at,"
                    " updated) VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
                    " ON CONFLICT (partition, path) DO UPDATE SET value = excluded.value,"
                    " version = excluded.version, expires_at = excluded.expires_at,"
                    " updated = excluded.updated"
                ),
                [
                    (partition, path, r.value, r.version, r.expires_at, r.updated)
                    for path, r in changes.upserts.items()
                ],
            )
        if changes.deletes:
            where, params = self._in("path", sorted(changes.deletes))
            self._run(
                s,
                "DELETE FROM {t}records WHERE partition = {p} AND " + where,
                [partition, *params],
            )
        if changes.request_ids:
            s.executemany(
                self._sql(
                    "INSERT INTO {t}request_ids (partition, rid_key, outcome, log_time)"
                    " VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (partition, rid_key)"
                    " DO UPDATE SET outcome = excluded.outcome, log_time = excluded.log_time"
                ),
                [(partition, k, r.code, r.log_time) for k, r in changes.request_ids.items()],
            )
        # Physical clean-up by log time: expired records are already absent to the
        # apply function, and a request id out of the window no longer matches.
        self._run(
            s,
            "DELETE FROM {t}records WHERE partition = {p} AND expires_at <= {p}",
            (partition, changes.log_time),
        )
        if changes.forget_request_ids_until is not None:
            self._run(
                s,
                "DELETE FROM {t}request_ids WHERE partition = {p} AND log_time <= {p}",
                (partition, changes.forget_request_ids_until),
            )


class _View:
    """Stored facts read inside a write's transaction."""

    def __init__(self, store: SqlStore, session: Session, partition: int) -> None:
        self.store = store
        self.session = session
        self.partition = partition

    def _select(self, statement: str, column: str, values: Sequence[str]) -> Iterator[Any]:
        for i in range(0, len(values), 500):
            where, params = self.store._in(column, values[i : i + 500])
            yield from self.store._run(
                self.session, statement + where, [self.partition, *params]
            ).fetchall()

    def records(self, paths: Iterable[str]) -> dict[str, Record]:
        out = {}
        for path, value, version, expires_at, updated in self._select(
            "SELECT path, value, version, expires_at, updated FROM {t}records"
            " WHERE partition = {p} AND ",
            "path",
            sorted(set(paths)),
        ):
            out[path] = Record(
                value, int(version), None if expires_at is None else int(expires_at), int(updated)
            )
        return out

    def request_ids(self, keys: Iterable[str]) -> dict[str, RequestRecord]:
        return {
            key: RequestRecord(outcome, int(log_time))
            for key, outcome, log_time in self._select(
                "SELECT rid_key, outcome, log_time FROM {t}request_ids WHERE partition = {p} AND ",
                "rid_key",
                sorted(set(keys)),
            )
        }


def _checkpoint(row: Sequence[Any]) -> AuditCheckpoint:
    p, first, last, prev_head, head, digests, kid, signature, signed_at = row
    return AuditCheckpoint(
        int(p), int(first), int(last), str(prev_head), str(head), str(digests), str(kid),
        str(signature), int(signed_at),
    )  # fmt: skip
