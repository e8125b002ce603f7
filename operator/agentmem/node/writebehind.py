"""Write-behind to the durable store, and truncation of the log behind it.

The applier hands every batch it applied to the :class:`StoreWriter` (with the
offset the batch's range starts at). The writer computes the batch's facts
with the apply function, onto the store's own rows, and commits them with the
store's conditional offset update: a range that the store already reflects
(another replica wrote it) is skipped, and a range that starts after the
stored offset is preceded by the events in between, read from the log. So the
store never skips a range, whichever replica writes, and a store that was
down catches up when it returns while writes go on being acknowledged (the
log decides them).

Behind the store, the writer truncates the log of the partitions its shard
owns: up to the smallest of the stored offset + 1, the indexed offset + 1 (when
there is a vector index) and the first offset inside the audit window.
Nothing the store or the index does not reflect is ever deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from agentmem.eventlog.ports import (
    LogAdmin,
    LogGapError,
    LogReader,
    LogRecord,
    LogUnavailableError,
    read_range,
)
from agentmem.node.apply import MemoryState, decode
from agentmem.node.metrics import NodeMetrics
from agentmem.node.ranges import Failure, ProjectionWriter, RangeQueues
from agentmem.semantic.milvus import IndexUnavailableError
from agentmem.store.ports import (
    BatchView,
    Changes,
    Compute,
    DurableStore,
    Snapshot,
    Stored,
    StoreIdentityError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

#: Events written in one transaction at most.
MAX_TRANSACTION = 5000
#: Events queued for the store at most; beyond, the oldest are dropped and read
#: from the log again when the store is back.
MAX_QUEUED = 200_000


def changes_of(partition: int, records: Sequence[LogRecord], window_ms: int) -> Compute:
    """The apply function's output for ``records``, computed on the store's rows."""

    def compute(stored: Stored, view: BatchView) -> Changes:
        todo = [(r, decode(r.payload)) for r in records if r.offset > stored.offset]
        paths = {e.path for _, e in todo if e is not None and e.op != "tick"}
        rid_keys = {e.rid_key for _, e in todo if e is not None and e.rid}
        before = view.records(paths)
        rids_before = view.request_ids(rid_keys)
        state = MemoryState(window_ms)
        state.load(Snapshot(partition, stored, dict(before), dict(rids_before)))
        for log_record, event in todo:
            state.apply_event(partition, log_record.offset, log_record.timestamp, event)
        log_time = state.log_time.get(partition, stored.log_time)
        changes = Changes(offset=todo[-1][0].offset, log_time=log_time)
        for path in paths:
            now = state.records.get(path)
            if now is not None:
                if now != before.get(path):
                    changes.upserts[path] = now
            elif path in before:
                changes.deletes.add(path)
        rids = state.rids[partition]
        for key in rid_keys:
            if key in rids and rids[key] != rids_before.get(key):
                changes.request_ids[key] = rids[key]
        changes.forget_request_ids_until = log_time - window_ms
        return changes

    return compute


class StoreHandle:
    """The durable store, opened (migrated, identity checked) on first use."""

    def __init__(self, store: DurableStore, cluster_uid: str, topic_id: Callable[[], str]) -> None:
        self.store = store
        self.cluster_uid = cluster_uid
        self._topic_id = topic_id
        self._opened = False
        self._lock = threading.Lock()
        self.refused: str | None = None

    def get(self) -> DurableStore:
        """The store, ready to use; StoreUnavailableError or StoreIdentityError if not."""
        if self._opened:
            return self.store
        with self._lock:
            if not self._opened:
                if self.refused:
                    raise StoreIdentityError(self.refused)
                try:
                    topic_id = self._topic_id()
                except LogUnavailableError as exc:
                    raise StoreUnavailableError(f"cannot identify the event log: {exc}") from exc
                try:
                    self.store.open(self.cluster_uid, topic_id)
                except StoreIdentityError as exc:
                    self.refused = str(exc)
                    raise
                self._opened = True
        return self.store


Report = Callable[[str | None], None]


class StoreWriter(ProjectionWriter):
    WHAT = "store writer"

    def __init__(
        self,
        handle: StoreHandle,
        admin: LogAdmin,
        reader: Callable[[], LogReader],
        window_ms: int,
        metrics: NodeMetrics,
        report: Report,
        owned: Callable[[], Iterable[int]],
        audit_window_ms: int,
        truncate_every: float = 60.0,
        floor: Callable[[list[int]], dict[int, int]] | None = None,
    ) -> None:
        super().__init__(
            "agentmem-store-writer", RangeQueues(MAX_QUEUED, MAX_TRANSACTION), reader, report
        )
        self.handle = handle
        self.admin = admin
        self.window_ms = window_ms
        self.metrics = metrics
        self.owned = owned
        self.audit_window_ms = audit_window_ms
        self.truncate_every = truncate_every
        #: What other projections reflect (the vector index): never truncated past.
        self.floor = floor
        self.stored: dict[int, Stored] = {}
        self._last_truncate = time.monotonic()
        self.truncate_error: str | None = None

    # Applier thread ------------------------------------------------------------

    def offer(self, partition: int, start: int, records: list[LogRecord]) -> None:
        """A range the applier applied: ``start`` .. ``records[-1].offset``."""
        self.queues.offer(partition, start, records)

    def forget(self, partition: int) -> None:
        """The node no longer reads this partition."""
        self.queues.forget(partition)
        self.stored.pop(partition, None)

    # Writer thread -------------------------------------------------------------

    def _failure(self, exc: Exception) -> Failure | None:
        if isinstance(exc, StoreIdentityError):
            return str(exc), 30.0
        if isinstance(exc, StoreUnavailableError | LogUnavailableError):
            return f"{exc}; the durable store falls behind until it is back", None
        if isinstance(exc, LogGapError):
            return f"the durable store cannot catch up: {exc}", 30.0
        return None

    def _step(self) -> bool:
        store = self.handle.get()
        partitions = self.queues.waiting()
        for p in partitions:
            self._drain(store, p)
        self._observe_lag()
        if time.monotonic() - self._last_truncate >= self.truncate_every:
            self._last_truncate = time.monotonic()
            try:
                self._truncate(store)
                self.truncate_error = None
            except (LogUnavailableError, IndexUnavailableError) as exc:
                # Truncation can wait (the broker's retention is a distant backstop);
                # it never holds up the store's writes.
                if str(exc) != self.truncate_error:
                    log.warning("%s; truncation is tried again later", exc)
                self.truncate_error = str(exc)
        return bool(partitions)

    def _drain(self, store: DurableStore, p: int) -> None:
        stored = self.stored.get(p)
        if stored is None:
            stored = self.stored[p] = store.offsets([p])[p]
        while not self._stop_flag.is_set():
            self.queues.pop_until(p, stored.offset)
            batch = self.queues.next(p)
            if batch is None:
                return
            if batch.start > stored.offset + 1:
                stored = self._catch_up(store, p, stored, batch.start)
                continue
            result = store.write(
                p, batch.start, batch.end, changes_of(p, batch.records, self.window_ms)
            )
            if result.status == "written":
                delay = time.time() - batch.records[0].timestamp / 1000
                self.metrics.store_write_delay.observe(max(0.0, delay))
                self.metrics.store_writes.inc()
            stored = self.stored[p] = result.stored

    def _catch_up(self, store: DurableStore, p: int, stored: Stored, until: int) -> Stored:
        """Write the events between the stored offset and ``until`` from the log."""
        reader = self.reader()
        start = stored.offset + 1
        reader.assign({p: start})
        records = read_range(reader, p, start, until, MAX_TRANSACTION)
        if not records:
            raise LogUnavailableError(
                f"partition {p}: events {start}..{until - 1} could not be read for the store"
            )
        result = store.write(p, start, records[-1].offset, changes_of(p, records, self.window_ms))
        self.metrics.store_catch_up_events.inc(len(records))
        self.stored[p] = result.stored
        return result.stored

    def _observe_lag(self) -> None:
        messages, seconds = self.queues.lag({p: s.offset for p, s in self.stored.items()})
        self.metrics.store_lag_messages.set(messages)
        self.metrics.store_lag_seconds.set(seconds)

    def _truncate(self, store: DurableStore) -> None:
        """Remove what the store reflects and the audit window no longer needs."""
        owned = sorted(self.owned())
        if not owned:
            return
        horizon = int(time.time() * 1000) - self.audit_window_ms
        stored = store.offsets(owned)
        marks = self.admin.watermarks(owned)
        floors = self.floor(owned) if self.floor is not None else {}
        for p in owned:
            before = min(stored[p].offset + 1, self.admin.offset_for_time(p, horizon))
            if p in floors:
                before = min(before, floors[p] + 1)
            if before > marks[p][0]:
                self.admin.truncate(p, before)
                self.metrics.log_truncations.inc()
                log.info("partition %s: log truncated before offset %s", p, before)
