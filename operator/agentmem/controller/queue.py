"""The work queue: which clusters to reconcile, by how many threads, and when again.

- A cluster is in the queue at most once, however often it is added (a burst
  of watch events is one reconcile).
- A cluster is reconciled by one thread at a time; one added while its
  reconcile runs is reconciled once more right after (so no change is missed).
- ``add(key, delay)`` asks for a reconcile later (a rebalance in progress, a
  cluster not ready yet); an earlier request wins.
- A reconcile that raises is retried with exponential back-off (1 s doubling
  to 5 min), reset by the next success; other clusters do not wait for it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

from agentmem.controller._kube import KubeError
from agentmem.controller.metrics import METRICS

log = logging.getLogger(__name__)

#: Back-off of a failing reconcile: the first retry, and the longest wait.
RETRY_SECONDS = (1.0, 300.0)

Process = Callable[[Hashable], float | None]


class WorkQueue:
    def __init__(
        self, process: Process, workers: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if workers < 1:
            raise ValueError("a work queue needs at least one worker")
        self._process = process
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: deque[Hashable] = deque()
        self._queued: dict[Hashable, float] = {}  # key: when it was queued
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._later: list[tuple[float, int, Hashable]] = []
        self._later_at: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._stop = False
        self._started = False
        self._threads = [
            threading.Thread(target=self._work, name=f"agentmem-worker-{i}", daemon=True)
            for i in range(workers)
        ]

    # Control -----------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=timeout)

    def alive(self) -> bool:
        """True unless a started worker died (before start: nothing to have died)."""
        return not self._started or all(t.is_alive() for t in self._threads)

    def waiting(self) -> int:
        """Keys queued or waiting for their time (for tests and the metric)."""
        with self._cond:
            return len(self._ready) + len(self._later_at)

    # Adding ------------------------------------------------------------------

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        with self._cond:
            if delay > 0:
                at = self._clock() + delay
                if key in self._queued or self._later_at.get(key, float("inf")) <= at:
                    return
                self._later_at[key] = at
                heapq.heappush(self._later, (at, next(self._seq), key))
            else:
                self._later_at.pop(key, None)  # its entry in the heap is skipped
                self._enqueue(key)
            self._cond.notify()

    def _enqueue(self, key: Hashable) -> None:
        """Under the lock: queue ``key`` now, or mark it for after its running reconcile."""
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued[key] = self._clock()
            self._ready.append(key)
            METRICS.queue_depth.set(len(self._ready))

    def _promote(self) -> float | None:
        """Under the lock: queue what is due; the seconds until the next is."""
        now = self._clock()
        while self._later:
            at, _, key = self._later[0]
            if self._later_at.get(key) != at:
                heapq.heappop(self._later)  # replaced or already queued
                continue
            if at > now:
                return at - now
            heapq.heappop(self._later)
            del self._later_at[key]
            self._enqueue(key)
        return None

    # Working -----------------------------------------------------------------

    def _next(self) -> Hashable | None:
        with self._cond:
            while not self._stop:
                wait = self._promote()
                if self._ready:
                    key = self._ready.popleft()
                    queued_at = self._queued.pop(key)
                    self._processing.add(key)
                    METRICS.queue_depth.set(len(self._ready))
                    METRICS.queue_wait_seconds.observe(self._clock() - queued_at)
                    return key
                self._cond.wait(timeout=wait)
        return None

    def _work(self) -> None:
        while (key := self._next()) is not None:
            again: float | None
            try:
                again = self._process(key)
                self._failures.pop(key, None)
            except Exception as exc:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                again = min(RETRY_SECONDS[0] * 2 ** (failures - 1), RETRY_SECONDS[1])
                log.warning(
                    "reconcile of %s failed (%s); retrying in %.0fs", key, exc, again,
                    exc_info=not isinstance(exc, KubeError),  # an API error says it all
                )  # fmt: skip
            with self._cond:
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self._enqueue(key)
                    self._cond.notify()
            if again is not None:
                self.add(key, again)
