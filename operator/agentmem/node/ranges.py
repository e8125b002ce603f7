"""The queue between the applier and a projection of the log (the durable
store's writer, the vector index's writer): per partition, the ranges of events
the applier applied, in order, bounded in size; and the writer thread's loop
the two share.

The applier offers each batch it applied (the offset the range starts at, the
records, and optionally each event's outcome); the writer takes the first range
of a partition merged with the ranges that continue it, and forgets ranges once
its projection reflects them. Beyond ``max_queued`` events the oldest ranges
are dropped: the writer reads them from the log again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agentmem.eventlog.ports import LogReader, LogRecord

log = logging.getLogger(__name__)


@dataclass
class Range:
    start: int  # the range covers start..records[-1].offset of the log
    records: list[LogRecord]
    #: the apply function's outcome of each record (None: not known)
    codes: list[str | None] | None = None
    arrived: float = field(default_factory=time.monotonic)

    @property
    def end(self) -> int:
        return self.records[-1].offset


class RangeQueues:
    def __init__(self, max_queued: int, max_batch: int) -> None:
        self.max_queued = max_queued
        self.max_batch = max_batch
        self._queues: dict[int, deque[Range]] = {}
        self._queued = 0
        self._lock = threading.Lock()
        #: set on every offer: the writer's thread waits on it when idle
        self.wake = threading.Event()
        #: partition -> the last offset offered
        self.offered: dict[int, int] = {}

    def offer(
        self,
        partition: int,
        start: int,
        records: list[LogRecord],
        codes: list[str | None] | None = None,
    ) -> None:
        with self._lock:
            queue = self._queues.setdefault(partition, deque())
            queue.append(Range(start, records, codes))
            self._queued += len(records)
            self.offered[partition] = records[-1].offset
            while self._queued > self.max_queued:
                largest = max(self._queues.values(), key=len)
                self._queued -= len(largest.popleft().records)
        self.wake.set()

    def forget(self, partition: int) -> None:
        with self._lock:
            queue = self._queues.pop(partition, None)
            if queue:
                self._queued -= sum(len(r.records) for r in queue)
            self.offered.pop(partition, None)

    def waiting(self) -> list[int]:
        """Partitions with queued ranges."""
        with self._lock:
            return [p for p, q in self._queues.items() if q]

    def next(self, partition: int) -> Range | None:
        """The first queued range, merged with the ones that continue it."""
        with self._lock:
            queue = self._queues.get(partition)
            if not queue:
                return None
            first = queue[0]
            codes = None if first.codes is None else list(first.codes)
            merged = Range(first.start, list(first.records), codes, first.arrived)
            for nxt in list(queue)[1:]:
                if len(merged.records) >= self.max_batch or nxt.start != merged.end + 1:
                    break
                merged.records += nxt.records
                if merged.codes is not None and nxt.codes is not None:
                    merged.codes += nxt.codes
                else:
                    merged.codes = None
            return merged

    def pop_until(self, partition: int, offset: int) -> None:
        """Forget the queued ranges that end at or before ``offset``."""
        with self._lock:
            queue = self._queues.get(partition)
            while queue and queue[0].end <= offset:
                self._queued -= len(queue.popleft().records)

    def lag(self, reflected: dict[int, int]) -> tuple[int, float]:
        """(events offered that the projection does not reflect, age in seconds of the
        oldest of them), given what it reflects per partition."""
        now = time.time()
        messages, seconds = 0, 0.0
        with self._lock:
            for p, queue in self._queues.items():
                done = reflected.get(p, -1)
                messages += max(0, self.offered.get(p, done) - done)
                for r in queue:
                    first = next((x for x in r.records if x.offset > done), None)
                    if first is not None:
                        seconds = max(seconds, now - first.timestamp / 1000)
                        break
        return messages, seconds

    def partitions(self) -> Iterable[int]:
        with self._lock:
            return list(self._queues)


#: (the error to report, seconds to wait before the next step; None: back off)
Failure = tuple[str, float | None]


class ProjectionWriter(threading.Thread):
    """The thread that keeps one projection of the log (the durable store, the
    vector index) up with the applier: it steps while there is work, waits for an
    offer when idle, and on a failure reports it (once, until it changes) and
    waits: as ``failure`` says, or backing off from 0.5 s to 10 s."""

    #: Seconds to wait for an offer when a step found nothing to do.
    IDLE_WAIT = 0.1
    #: What it is called in its errors.
    WHAT = "projection writer"

    def __init__(
        self,
        name: str,
        queues: RangeQueues,
        reader: Callable[[], LogReader],
        report: Callable[[str | None], None],
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.queues = queues
        self._make_reader = reader
        self._reader: LogReader | None = None
        self.report = report
        self._stop_flag = threading.Event()
        self.error: str | None = None

    def stop(self) -> None:
        self._stop_flag.set()
        self.queues.wake.set()

    def reader(self) -> LogReader:
        """A reader of the log for reading events again (made on first use)."""
        if self._reader is None:
            self._reader = self._make_reader()
        return self._reader

    # What each projection does ---------------------------------------------------

    def _starting(self) -> None:
        """Before the first step."""

    def _step(self) -> bool:
        """Work on what is offered; False when there was nothing to do."""
        raise NotImplementedError

    def _failure(self, exc: Exception) -> Failure | None:
        """What a failure means (None: unforeseen, logged with its traceback)."""
        return None

    def _finished(self) -> None:
        """After the last step."""

    # The loop ---------------------------------------------------------------------

    def run(self) -> None:
        self._starting()
        backoff = 0.5
        while not self._stop_flag.is_set():
            try:
                busy = self._step()
                self._set_error(None)
                backoff = 0.5
                if not busy:
                    self.queues.wake.wait(self.IDLE_WAIT)
                    self.queues.wake.clear()
            except Exception as exc:
                failure = self._failure(exc)
                if failure is None:
                    log.exception("%s error; retrying", self.WHAT)
                    failure = (f"{self.WHAT} error: {exc}", None)
                message, wait = failure
                self._set_error(message)
                if wait is None:
                    wait, backoff = backoff, min(backoff * 2, 10.0)
                self._stop_flag.wait(wait)
        if self._reader is not None:
            self._reader.close()
        self._finished()

    def _set_error(self, message: str | None) -> None:
        if message != self.error:
            if message:
                log.warning("%s", message)
            self.error = message
            self.report(message)
