"""The applier: one thread that follows the log into the state; and the sampler.

The applier reads the partitions it is given (owned and warming), applies each
batch to the state with the apply function, hands the batch to the store
writer, and reports to the node through :class:`ApplierEvents` (on the event
loop). Before it reads a partition it decides where to start:

- from the state's own applied offset, when the log still holds what follows;
- from the durable store's facts (loaded into the state) when the state is
  empty or behind the store, so a new replica warms up in time proportional
  to the partition's state, not its history;
- not at all while the store does not answer (``waiting``) or when the log
  lacks the events after both (``gap``, naming them): it never skips an event.

It never stops on an error: it reports it, waits and starts again from what
the state has applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from agentmem.eventlog.ports import (
    LogAdmin,
    LogGapError,
    LogReader,
    LogRecord,
    LogUnavailableError,
)
from agentmem.node.indexer import IndexWriter
from agentmem.node.metrics import NodeMetrics
from agentmem.node.progress import Phase
from agentmem.node.state.ports import (
    PartitionSample,
    StateFullError,
    StateResetError,
    StateStore,
)
from agentmem.node.writebehind import StoreHandle, StoreWriter
from agentmem.store.ports import StoreIdentityError, StoreUnavailableError

log = logging.getLogger(__name__)

#: A state this many events behind the store is loaded from the store rather
#: than replayed from the log.
REPLAY_LIMIT = 10_000


class ApplierEvents(Protocol):
    """What the applier and sampler report; called on the event loop."""

    def assigned(self, starts: dict[int, int], dropped: list[int]) -> None: ...
    def applied(
        self, partition: int, records: Sequence[LogRecord], codes: Sequence[str | None]
    ) -> None: ...
    def phase(self, partition: int, phase: Phase, reason: str) -> None: ...
    def reset(self, partitions: list[int]) -> None: ...
    def failed(self, source: str, message: str | None) -> None: ...
    def watermarks(self, marks: dict[int, tuple[int, int]]) -> None: ...
    def sampled(self, samples: dict[int, PartitionSample], memory: tuple[int, int]) -> None: ...


Post = Callable[..., None]


class Applier(threading.Thread):
    BATCH = 2000

    def __init__(
        self,
        state: StateStore,
        reader: LogReader,
        admin: LogAdmin,
        store: StoreHandle | None,
        writer: StoreWriter | None,
        events: ApplierEvents,
        post: Post,
        metrics: NodeMetrics,
        partitions: Sequence[int],
        index: IndexWriter | None = None,
    ) -> None:
        super().__init__(name="agentmem-applier", daemon=True)
        self.state = state
        self.reader = reader
        self.admin = admin
        self.store = store
        self.writer = writer
        self.index = index
        self.events = events
        self.post = post
        self.metrics = metrics
        self._lock = threading.Lock()
        self._target: list[int] = list(partitions)
        self._pending: list[int] | None = list(partitions)
        self._held: set[int] = set()  # partitions whose state this node holds
        self._next: dict[int, int] = {}  # partitions being read -> next offset
        self._waiting: set[int] = set()  # partitions that cannot start yet
        self._last_try = 0.0
        self._claimed = False
        self._errored: str | None = None
        self._stop_flag = threading.Event()
        self._check = threading.Event()

    @property
    def partitions(self) -> list[int]:
        return list(self._target)

    def reassign(self, partitions: Sequence[int]) -> None:
        with self._lock:
            self._target = list(partitions)
            self._pending = list(partitions)

    def check_state(self) -> None:
        """Verify the state at the next step (it is rebuilt if it was emptied)."""
        self._check.set()

    def stop(self) -> None:
        self._stop_flag.set()

    # Assignment ------------------------------------------------------------------

    def _assign(self, partitions: list[int]) -> None:
        previous = set(self._held)
        if not self._claimed:
            self.state.claim()
            self._claimed = True
            # A state that outlived the node (persistence) may hold partitions
            # that moved away while the node was down.
            previous |= set(self.state.stored_partitions())
        dropped = sorted(previous - set(partitions))
        for p in dropped:
            self.state.drop_partition(p)
            if self.writer is not None:
                self.writer.forget(p)
            if self.index is not None:
                self.index.forget(p)
            log.info("dropped partition %s: it moved to another shard", p)
        self._held = set(partitions)
        self._next = {}
        self._waiting = set(partitions)
        self.post(self.events.assigned, {}, dropped)
        self._start_waiting()

    def _start_waiting(self) -> None:
        """Start every waiting partition that can start now."""
        self._last_try = time.monotonic()
        starts: dict[int, int] = {}
        for p in sorted(self._waiting):
            start = self._start(p)
            if start is not None:
                starts[p] = start
        if not starts:
            return
        self._waiting -= set(starts)
        self._next.update(starts)
        self.reader.assign(dict(self._next))
        self.post(self.events.assigned, {p: o - 1 for p, o in starts.items()}, [])
        for p in starts:
            self.post(self.events.phase, p, "serving", "")

    def _start(self, p: int) -> int | None:
        """The next offset to read for ``p``, or None when it cannot start yet."""
        applied = self.state.applied_offsets([p])[p]
        if self.store is not None:
            try:
                store = self.store.get()
                stored = store.offsets([p])[p]
            except StoreIdentityError as exc:
                self.post(self.events.phase, p, "waiting", str(exc))
                return None
            except StoreUnavailableError as exc:
                if applied < 0:
                    self.post(
                        self.events.phase, p, "waiting",
                        f"waiting for the durable store to load partition {p}: {exc}",
                    )  # fmt: skip
                    return None
                stored = None  # the state goes on from its own offset
            if stored is not None and stored.offset > applied:
                low = self.admin.watermarks([p])[p][0]
                if applied < 0 or low > applied + 1 or stored.offset - applied > REPLAY_LIMIT:
                    self.post(self.events.phase, p, "loading", "loading from the durable store")
                    started = time.monotonic()
                    try:
                        snapshot = store.snapshot(p)
                    except StoreUnavailableError as exc:
                        self.post(self.events.phase, p, "waiting", str(exc))
                        return None
                    if low > snapshot.stored.offset + 1:
                        gap = LogGapError(p, snapshot.stored.offset + 1, low)
                        self.post(
                            self.events.phase, p, "gap",
                            f"{gap}; the durable store reflects up to offset "
                            f"{snapshot.stored.offset}: restore the store from a backup",
                        )  # fmt: skip
                        return None
                    self.state.load(snapshot)
                    applied = snapshot.stored.offset
                    self.metrics.loads.inc()
                    self.metrics.load_seconds.observe(time.monotonic() - started)
                    log.info(
                        "partition %s loaded from the durable store: %s keys at offset %s",
                        p, len(snapshot.records), applied,
                    )  # fmt: skip
        low = self.admin.watermarks([p])[p][0]
        if low > applied + 1:
            gap = LogGapError(p, applied + 1, low)
            self.post(
                self.events.phase, p, "gap",
                f"{gap}; " + (
                    "the durable store does not reflect them either"
                    if self.store is not None else
                    "without a durable store they cannot be recovered"
                ),
            )  # fmt: skip
            return None
        return applied + 1

    # The loop ----------------------------------------------------------------------

    def _step(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            try:
                self._assign(pending)
            except Exception:
                with self._lock:  # try the same target again, not the old one
                    if self._pending is None:
                        self._pending = pending
                raise
        if self._waiting and time.monotonic() - self._last_try >= 1.0:
            self._start_waiting()
        if not self._next:
            self._stop_flag.wait(0.05)
            records: list[LogRecord] = []
        else:
            try:
                records = self.reader.poll(self.BATCH, 0.05)
            except LogGapError as gap:
                self._hold_back(gap.partition)
                records = []
        if records:
            by_partition: dict[int, list[LogRecord]] = defaultdict(list)
            for record in records:
                by_partition[record.partition].append(record)
            for p, batch in by_partition.items():
                start = self._next.get(p)
                if start is None:
                    continue
                codes = self.state.apply(p, batch)
                self._next[p] = batch[-1].offset + 1
                self.post(self.events.applied, p, batch, codes)
                if self.writer is not None:
                    self.writer.offer(p, start, batch)
                if self.index is not None:
                    self.index.offer(p, start, batch, codes)
                self.metrics.events_applied.inc(len(batch))
        if self._check.is_set():
            self._check.clear()
            self.state.verify()

    def _hold_back(self, partition: int) -> None:
        """The log lost events ``partition`` needs: start it again (from the store)."""
        self._next.pop(partition, None)
        self._waiting.add(partition)
        self.reader.assign(dict(self._next))
        self._last_try = 0.0

    def run(self) -> None:
        while not self._stop_flag.is_set():
            try:
                self._step()
                if self._errored is not None:
                    self._errored = None
                    self.post(self.events.failed, "applier", None)
            except Exception as exc:
                try:
                    self._handle(exc)
                except Exception:
                    log.exception("recovering from an applier error failed; retrying")
                self._recover()

    def _report(self, message: str) -> None:
        self._errored = message
        self.post(self.events.failed, "applier", message)

    def _handle(self, exc: Exception) -> None:
        if isinstance(exc, StateResetError):
            log.warning("%s: rebuilding every partition", exc)
            self.state.claim(wipe=True)
            self._held = set()
            self.post(self.events.reset, list(self._target))
            self.metrics.state_resets.inc()
        elif isinstance(exc, LogUnavailableError):
            log.warning("%s; retrying", exc)
            self._report(f"{exc}; writes are refused until it is back")
        elif isinstance(exc, StateFullError):
            self._report(f"{exc}; the node stopped applying events until it has room")
            for p in self._target:
                try:
                    self.state.clean(p)
                except Exception as clean_exc:
                    log.warning("cleaning partition %s failed: %s", p, clean_exc)
        else:
            log.error("applier error; reading again from the state's offsets", exc_info=exc)
            self._report(f"applier error: {exc}")

    def _recover(self) -> None:
        """After a failure, read again from what the state has applied (never skip)."""
        if self._errored is not None:
            self._stop_flag.wait(1.0)
        with self._lock:
            if self._pending is None:
                self._pending = list(self._target)


class Sampler(threading.Thread):
    """Samples the log's watermarks and the state twice a second; asks the applier to
    verify the state. Uses the log admin, so the applier never pauses for it."""

    def __init__(
        self, applier: Applier, admin: LogAdmin, state: StateStore, events: ApplierEvents,
        post: Post, interval: float = 0.5,
    ) -> None:  # fmt: skip
        super().__init__(name="agentmem-sampler", daemon=True)
        self.applier = applier
        self.admin = admin
        self.state = state
        self.events = events
        self.post = post
        self.interval = interval
        self._stop_flag = threading.Event()
        self._failing: str | None = None

    def stop(self) -> None:
        self._stop_flag.set()

    def run(self) -> None:
        while not self._stop_flag.wait(self.interval):
            partitions = self.applier.partitions
            try:
                # The log first: a stalled state must not hide how far behind it is.
                marks = self.admin.watermarks(partitions) if partitions else {}
                self.post(self.events.watermarks, marks)
                samples = self.state.sample(partitions) if partitions else {}
                memory = self.state.memory()
            except LogUnavailableError as exc:
                self._fail(f"{exc}; writes are refused until it is back")
                continue
            except Exception as exc:
                self._fail(f"sampling failed: {exc}")
                continue
            self.post(self.events.sampled, samples, memory)
            self._fail(None)
            self.applier.check_state()

    def _fail(self, message: str | None) -> None:
        if message != self._failing:
            self._failing = message
            if message:
                log.warning("%s", message)
            self.post(self.events.failed, "sampler", message)


def poster(loop: Any) -> Post:
    """Calls onto the event loop from another thread (dropped once it is closed)."""

    def post(fn: Callable[..., None], *args: Any) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    return post
