"""The queue between the applier and a projection of the log (the durable
store's writer, the vector index's writer): per partition, the ranges of events
the applier applied, in order, bounded in size.

The applier offers each batch it applied (the offset the range starts at, the
records, and optionally each event's outcome); the writer takes the first range
of a partition merged with the ranges that continue it, and forgets ranges once
its projection reflects them. Beyond ``max_queued`` events the oldest ranges
are dropped: the writer reads them from the log again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from agentmem.eventlog.ports import LogRecord


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
