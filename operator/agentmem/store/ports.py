"""The durable store's port, and the facts it holds.

The durable store is a write-behind projection of the event log: for every
partition it holds the resolved facts (each live key's value, version and
expiry, and the request ids of the dedup window) as of one log offset, stored
in a per-partition offset row. Replicas compute the facts with the apply
function and hand them over through :meth:`DurableStore.write`, which commits
them only if they continue exactly where the stored offset ends.

Adapters: PostgreSQL (:mod:`agentmem.store.postgres`, also meant for
CockroachDB) and SQLite for the embedded mode (:mod:`agentmem.store.sqlite`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass
class Record:
    """A stored value: JSON text, the offset of the event that set it, its expiry."""

    value: str
    version: int
    expires_at: int | None
    updated: int

    def live(self, now_ms: int) -> bool:
        return self.expires_at is None or self.expires_at > now_ms


@dataclass(frozen=True)
class RequestRecord:
    """The first outcome of a request id, and the log time it was decided at."""

    code: str
    log_time: int


@dataclass(frozen=True)
class Stored:
    """Where a partition's facts stand: the highest offset they reflect, and its log time."""

    offset: int = -1
    log_time: int = 0


@dataclass
class Snapshot:
    """Every fact of one partition as of ``stored.offset``, read in one transaction."""

    partition: int
    stored: Stored
    records: dict[str, Record] = field(default_factory=dict)
    request_ids: dict[str, RequestRecord] = field(default_factory=dict)


@dataclass
class Changes:
    """What the apply function made of one range of a partition's events."""

    offset: int  # the last offset of the range
    log_time: int  # its log time
    upserts: dict[str, Record] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    request_ids: dict[str, RequestRecord] = field(default_factory=dict)
    #: Request ids decided at or before this log time left the dedup window.
    forget_request_ids_until: int | None = None


class BatchView(Protocol):
    """The stored facts a computation may read, inside the write's transaction."""

    def records(self, paths: Iterable[str]) -> dict[str, Record]: ...
    def request_ids(self, keys: Iterable[str]) -> dict[str, RequestRecord]: ...


#: Computes the changes of the events after ``Stored.offset`` from the stored facts.
Compute = Callable[[Stored, BatchView], Changes]


@dataclass(frozen=True)
class WriteResult:
    """``written``: committed up to ``stored``; ``stale``: the store already reflects the
    range; ``gap``: the store stops before the range starts (read the log from
    ``stored.offset + 1``)."""

    status: Literal["written", "stale", "gap"]
    stored: Stored


@dataclass(frozen=True)
class AuditCheckpoint:
    """A signed link of a partition's hash chain: the events ``first..last``.

    ``digests`` holds the digest of each event in log order (hex, 32 characters
    each); ``prev_head`` is the chain's head before ``first``, ``head`` after
    ``last``. The signature (by ``kid``) covers all of it.
    """

    partition: int
    first: int
    last: int
    prev_head: str
    head: str
    digests: str
    kid: str
    signature: str
    signed_at: int  # unix ms


class StoreUnavailableError(RuntimeError):
    """The durable store cannot be reached or failed; retry later."""


class StoreIdentityError(RuntimeError):
    """The store holds another cluster's or another topic's facts; it must not be used."""


class DurableStore(Protocol):
    def open(self, cluster_uid: str, topic_id: str) -> None:
        """Create or migrate the schema and check that it belongs to this cluster and log."""
        ...

    def offsets(self, partitions: Iterable[int]) -> dict[int, Stored]: ...

    def write(self, partition: int, start: int, end: int, compute: Compute) -> WriteResult:
        """Commit the facts of the events ``start..end`` (inclusive) of a partition.

        In one transaction: lock the partition's offset row; if it reflects
        ``end`` already, write nothing (stale); if it stops before ``start - 1``,
        write nothing (gap); else call ``compute`` for the events after the
        stored offset, write its changes and raise the offset row to ``end``.
        Serialization failures are retried.
        """
        ...

    def snapshot(self, partition: int) -> Snapshot:
        """Every fact of a partition and its offset, read in one transaction."""
        ...

    def tenant_bytes(self) -> dict[str, int]:
        """The bytes of the live values of each tenant, over every partition."""
        ...

    def open_audit(self, cluster_uid: str) -> None:
        """Open to read a cluster's checkpoints only (whatever topic its facts follow)."""
        ...

    def save_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Keep a signed checkpoint (one that exists already is kept as it is)."""
        ...

    def checkpoints(self, partition: int, start: int, end: int) -> list[AuditCheckpoint]:
        """The checkpoints of a partition that cover any of ``start..end``, in order."""
        ...

    def last_checkpoint(self, partition: int) -> AuditCheckpoint | None: ...

    def close(self) -> None: ...
