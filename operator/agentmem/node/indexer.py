"""The vector index as one more projection of the log (like the durable store).

The applier hands every batch it applied, with the apply function's outcome of
each event, to the :class:`IndexWriter` of the node that writes the index
(replica 0 of each shard by default: one writer per partition, named by the
directory). Per batch the writer finds each key's newest applied event; it
removes the key's older rows, adds a row for the newest event if that event
carries a vector, and then records the batch's end as the partition's indexed
offset in the index itself. A delete, or a write without a vector, leaves the
key without rows; an expired key's rows are removed by log time.

A writer that starts (or finds a gap between what the index reflects and what
the applier offers) reads the missing events from the log again; their
outcomes are gone, so it asks the state which version of each touched key is
current (the state reflects at least those events). The log is not truncated
past what the index reflects, so these events are always there.

Every node (writer or not) knows the indexed offsets of its partitions
(:class:`IndexOffsets`): a search that carries a version token waits until the
index reflects it, as a session read waits for the applier.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agentmem.eventlog.events import Event
from agentmem.eventlog.ports import (
    LogGapError,
    LogReader,
    LogRecord,
    LogUnavailableError,
    read_range,
)
from agentmem.node import errors
from agentmem.node.apply import decode
from agentmem.node.metrics import NodeMetrics
from agentmem.node.ranges import Failure, ProjectionWriter, RangeQueues
from agentmem.node.state.ports import StateResetError, StateUnavailableError
from agentmem.semantic import SemanticConfig
from agentmem.semantic.filters import value_of
from agentmem.semantic.milvus import (
    Change,
    IndexConfigError,
    IndexRow,
    IndexUnavailableError,
    MilvusIndex,
)
from agentmem.semantic.vectors import unpack
from agentmem.store.ports import Record

log = logging.getLogger(__name__)

#: Events handled in one step of a partition at most.
MAX_BATCH = 2000
#: Events queued at most; beyond, the oldest are dropped and read from the log again.
MAX_QUEUED = 100_000
#: How often expired rows are removed from the index.
SWEEP_SECONDS = 10.0
NEVER = 2**62

Lookup = Callable[[Sequence[str]], list[Record | None]]
Report = Callable[[str | None], None]


@dataclass
class _Write:
    change: Change
    log_time: int  # of the change's last event


def _newest_by_outcome(
    records: Sequence[LogRecord], codes: Sequence[str | None]
) -> dict[str, tuple[int, Event | None]]:
    """Each key's newest applied event in ``records`` (None: the key was deleted)."""
    newest: dict[str, tuple[int, Event | None]] = {}
    for record, code in zip(records, codes, strict=True):
        if code is None or not code.startswith("a"):
            continue  # a conflict, a duplicate, a tick or an undecodable event
        event = decode(record.payload)
        if event is None:
            continue
        newest[event.path] = (record.offset, None if event.op == "delete" else event)
    return newest


def _newest_by_state(
    records: Sequence[LogRecord], lookup: Lookup
) -> dict[str, tuple[int, Event | None]]:
    """The same, for events read again: the state says which version is current."""
    events: dict[int, Event] = {}
    for record in records:
        event = decode(record.payload)
        if event is not None and event.op != "tick":
            events[record.offset] = event
    paths = sorted({e.path for e in events.values()})
    if not paths:
        return {}
    start, end = records[0].offset, records[-1].offset
    newest: dict[str, tuple[int, Event | None]] = {}
    for path, current in zip(paths, lookup(paths), strict=True):
        if current is None:
            newest[path] = (end, None)
        elif start <= current.version <= end:
            event = events.get(current.version)
            newest[path] = (current.version, event if event and event.op != "delete" else None)
        # else: the current version is older (every event here lost its condition)
        # or newer (a later range adds it).
    return newest


def index_rows(
    partition: int, newest: dict[str, tuple[int, Event | None]], value_bytes: int
) -> list[IndexRow]:
    rows = []
    for offset, event in newest.values():
        if event is None or event.vector is None:
            continue
        rows.append(
            IndexRow(
                event.tenant,
                event.agent,
                event.key,
                partition,
                offset,
                event.expires_at,
                event.text or "",
                value_of(event.value, value_bytes),
                unpack(event.vector),
            )
        )
    return rows


class IndexWriter(ProjectionWriter):
    IDLE_WAIT = 0.05
    WHAT = "index writer"

    def __init__(
        self,
        index: MilvusIndex,
        config: SemanticConfig,
        reader: Callable[[], LogReader],
        lookup: Lookup,
        metrics: NodeMetrics,
        report: Report,
        applied: Callable[[], dict[int, int]],
    ) -> None:
        super().__init__(
            "agentmem-index-writer", RangeQueues(MAX_QUEUED, MAX_BATCH), reader, report
        )
        self.index = index
        self.config = config
        self.lookup = lookup
        #: partition -> the offset the state reflects, for every partition this node
        #: applies (a state loaded from the store was never offered event by event)
        self.applied = applied
        self.metrics = metrics
        #: partition -> the offset the index reflects (what this writer knows)
        self.indexed: dict[int, int] = {}
        self.log_time: dict[int, int] = {}
        #: partition -> the earliest expiry of the rows written since its last sweep
        #: (absent: not known, so the first sweep looks)
        self.expiring: dict[int, int] = {}
        self._unsealed = 0  # rows written since the index was last sealed (flush_rows)
        self._swept = time.monotonic()
        self.changed = threading.Condition()

    # Applier thread ------------------------------------------------------------

    def offer(
        self, partition: int, start: int, records: list[LogRecord], codes: list[str | None]
    ) -> None:
        self.queues.offer(partition, start, records, codes)

    def forget(self, partition: int) -> None:
        self.queues.forget(partition)
        with self.changed:
            self.indexed.pop(partition, None)
            self.log_time.pop(partition, None)
            self.expiring.pop(partition, None)

    # Writer thread ---------------------------------------------------------------

    def _starting(self) -> None:
        try:
            self.index.open()  # the collections made (or checked) before the first write
        except (IndexUnavailableError, IndexConfigError) as exc:
            self._set_error(str(exc))

    def _failure(self, exc: Exception) -> Failure | None:
        if isinstance(exc, IndexConfigError):
            return str(exc), 30.0
        if isinstance(exc, IndexUnavailableError | LogUnavailableError | StateUnavailableError):
            return f"{exc}; the vector index falls behind until it is back", None
        if isinstance(exc, StateResetError):
            return "the state is being rebuilt; the vector index waits for it", 1.0
        if isinstance(exc, LogGapError):
            return f"the vector index cannot catch up: {exc}", 30.0
        return None

    def _finished(self) -> None:
        self.index.close()

    def _step(self) -> bool:
        applied = self.applied()
        queued = set(self.queues.waiting())
        missing = [p for p in queued | set(applied) if p not in self.indexed]
        if missing:
            self.indexed.update(self.index.offsets(missing))
        behind = {p for p, offset in applied.items() if offset > self.indexed.get(p, -1)}
        partitions = sorted(queued | behind)
        writes = [w for p in partitions if (w := self._plan(p)) is not None]
        if writes:
            self._commit(writes)
        self._observe_lag()
        if time.monotonic() - self._swept >= SWEEP_SECONDS:
            self._swept = time.monotonic()
            # Only partitions that may hold expired rows: those this writer gave rows
            # with an expiry that has passed, and at first every one it writes (rows
            # of an earlier writer).
            due = {p: t for p, t in self.log_time.items() if self.expiring.get(p, 0) <= t}
            if due:
                self.index.sweep(due)
                for p in due:
                    self.expiring[p] = NEVER
        return bool(writes)

    def _plan(self, p: int) -> _Write | None:
        """The partition's next change: its queued events, or those read again from
        the log (a gap before them, or a state loaded from the store)."""
        indexed = self.indexed.get(p, -1)
        self.queues.pop_until(p, indexed)
        batch = self.queues.next(p)
        if batch is None:
            target = self.applied().get(p, -1)
            if target <= indexed:
                return None
            records, codes = self._read_again(p, indexed + 1, target + 1), None
        elif batch.start > indexed + 1:
            records, codes = self._read_again(p, indexed + 1, batch.start), None
        else:
            records = [r for r in batch.records if r.offset > indexed]
            codes = None
            if batch.codes is not None and None not in batch.codes:
                codes = batch.codes[len(batch.records) - len(records) :]
        if codes is not None:
            newest = _newest_by_outcome(records, codes)
        else:
            newest = _newest_by_state(records, self.lookup)
        rows = index_rows(p, newest, self.config.value_bytes)
        change = Change(p, sorted(newest), records[-1].offset, rows)
        return _Write(change, records[-1].timestamp)

    def _read_again(self, p: int, start: int, until: int) -> list[LogRecord]:
        reader = self.reader()
        reader.assign({p: start})
        records = read_range(reader, p, start, until, MAX_BATCH)
        if not records:
            raise LogUnavailableError(
                f"partition {p}: events {start}..{until - 1} could not be read for the index"
            )
        if records[0].offset != start:
            raise LogGapError(p, start, records[0].offset)
        self.metrics.index_catch_up_events.inc(len(records))
        return records

    def _commit(self, writes: list[_Write]) -> None:
        """Every planned change in one round: one delete, an upsert per partition,
        then the offsets (so an offset never runs ahead of its rows)."""
        self.index.write([w.change for w in writes if w.change.replaced or w.change.rows])
        self.index.set_offsets([(w.change.partition, w.change.upto, w.log_time) for w in writes])
        now = time.time()
        with self.changed:
            for w in writes:
                p = w.change.partition
                self.indexed[p] = w.change.upto
                self.log_time[p] = w.log_time
                expiries = [r.expires_at for r in w.change.rows if r.expires_at]
                if expiries:
                    self.expiring[p] = min(self.expiring.get(p, NEVER), *expiries)
                self.metrics.index_delay.observe(max(0.0, now - w.log_time / 1000))
            self.changed.notify_all()
        self.metrics.index_writes.inc()
        if self.config.flush_rows:
            self._unsealed += sum(len(w.change.rows) + len(w.change.replaced) for w in writes)
            if self._unsealed >= self.config.flush_rows:
                self.index.flush()
                self._unsealed = 0

    def _observe_lag(self) -> None:
        messages, seconds = self.queues.lag(self.indexed)
        self.metrics.index_lag_messages.set(messages)
        self.metrics.index_lag_seconds.set(seconds)


class IndexOffsets:
    """What the index reflects, per partition, as this node knows it: its own
    writer's progress, or the offsets the writers record in the index."""

    POLL = 0.02

    def __init__(self, index: MilvusIndex, writer: IndexWriter | None) -> None:
        self.index = index
        self.writer = writer
        self.known: dict[int, int] = {}
        self._refreshing: asyncio.Task[None] | None = None

    def get(self, partition: int) -> int:
        known = self.known.get(partition, -1)
        if self.writer is not None:
            known = max(known, self.writer.indexed.get(partition, -1))
        return known

    async def refresh(self, partitions: Iterable[int]) -> None:
        found = await asyncio.to_thread(self.index.offsets, partitions)
        for p, offset in found.items():
            self.known[p] = max(self.known.get(p, -1), offset)

    async def wait(self, needed: dict[int, int], timeout: float) -> None:
        """Until the index reflects ``needed`` (partition -> offset); 503 if it does not
        within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            behind = {p: o for p, o in needed.items() if self.get(p) < o}
            if not behind:
                return
            if self.writer is not None and self.writer.error:
                raise errors.Unavailable(
                    f"the vector index is behind: {self.writer.error}; retry the search in a "
                    "moment, or search with consistency=eventual",
                    code="index_unavailable",
                    retry_after=1,
                )
            if time.monotonic() >= deadline:
                worst = max(behind, key=lambda p: behind[p] - self.get(p))
                raise errors.Unavailable(
                    f"the vector index reflects partition {worst} up to offset "
                    f"{self.get(worst)}, not yet {behind[worst]}; retry in a moment, or search "
                    "with consistency=eventual",
                    code="index_behind",
                    retry_after=1,
                )
            if self.writer is None or any(p not in self.writer.indexed for p in behind):
                try:
                    await self.refresh(behind)
                except IndexUnavailableError as exc:
                    raise errors.Unavailable(
                        f"{exc}; retry the search in a moment", code="index_unavailable",
                        retry_after=1,
                    ) from exc  # fmt: skip
                if all(self.get(p) >= o for p, o in behind.items()):
                    return
            await asyncio.sleep(self.POLL)
