"""How far the node is in each partition, and the requests waiting for it.

Lives on the event loop; the applier and sampler report into it (through the
node). Every waiter is removed when it is served, times out or is cancelled,
so requests that wait for versions that never come cannot pile up.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agentmem.node.errors import ApplyTimeout, NotCaughtUp, Rebuilding

#: starting: not assigned yet; loading: taking the durable store's facts;
#: waiting: for the durable store to answer; gap: the log lacks what is needed;
#: serving: applying the log.
Phase = Literal["starting", "loading", "waiting", "gap", "serving"]

#: Outcomes kept for writers that ask after the applier already applied their event.
OUTCOMES_KEPT = 100_000
#: (time, high watermark) samples kept per partition while it is behind.
LAG_SAMPLES_KEPT = 10_000


@dataclass
class PartitionProgress:
    applied: int = -1
    low: int | None = None
    high: int | None = None
    phase: Phase = "starting"
    reason: str = ""
    #: After the state was emptied: reads wait until applied reaches this again.
    rebuild_to: int | None = None
    #: (sample time, high watermark) while behind, oldest first.
    behind: deque[tuple[float, int]] = field(default_factory=deque)

    @property
    def readable(self) -> bool:
        return self.phase == "serving" and (
            self.rebuild_to is None or self.applied >= self.rebuild_to
        )

    @property
    def caught_up(self) -> bool:
        return self.readable and self.high is not None and self.applied >= self.high - 1

    def lag(self, now: float) -> tuple[int, float]:
        """(events in the log not applied here, age in seconds of the oldest of them)."""
        if self.high is None:
            return 0, 0.0
        messages = max(0, self.high - 1 - self.applied)
        while self.behind and self.behind[0][1] <= self.applied + 1:
            self.behind.popleft()
        seconds = now - self.behind[0][0] if messages and self.behind else 0.0
        return messages, max(0.0, seconds)


class Progress:
    def __init__(self, wait_timeout: float) -> None:
        self.wait_timeout = wait_timeout
        self.partitions: dict[int, PartitionProgress] = {}
        self._applied_waiters: dict[int, list[tuple[int, asyncio.Future[None]]]] = {}
        self._outcome_waiters: dict[tuple[int, int], list[asyncio.Future[str]]] = {}
        self._outcomes: OrderedDict[tuple[int, int], str] = OrderedDict()

    def get(self, partition: int) -> PartitionProgress:
        found = self.partitions.get(partition)
        if found is None:
            found = self.partitions[partition] = PartitionProgress()
        return found

    # Reports -------------------------------------------------------------------

    def assigned(self, starts: dict[int, int], dropped: Iterable[int]) -> None:
        for p, offset in starts.items():
            self.get(p).applied = offset
        for p in dropped:
            self.partitions.pop(p, None)

    def phase(self, partition: int, phase: Phase, reason: str = "") -> None:
        progress = self.get(partition)
        progress.phase, progress.reason = phase, reason

    def reset(self, partitions: Iterable[int]) -> None:
        """The state was emptied: reads wait until the rebuild reaches where it was."""
        for p in partitions:
            progress = self.get(p)
            progress.rebuild_to = max(progress.applied, progress.rebuild_to or -1)
            progress.applied = -1
            progress.phase = "starting"

    def applied(self, partition: int, offsets: Sequence[int], codes: Sequence[str | None]) -> None:
        progress = self.get(partition)
        last = progress.applied
        for offset, code in zip(offsets, codes, strict=True):
            if code is None:
                continue
            key = (partition, offset)
            waiters = self._outcome_waiters.pop(key, None)
            if waiters:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(code)
            else:
                self._outcomes[key] = code
            last = max(last, offset)
        while len(self._outcomes) > OUTCOMES_KEPT:
            self._outcomes.popitem(last=False)
        progress.applied = last
        if progress.rebuild_to is not None and last >= progress.rebuild_to:
            progress.rebuild_to = None
        waiting = self._applied_waiters.get(partition)
        if waiting:
            still = []
            for target, reached in waiting:
                if target <= last:
                    if not reached.done():
                        reached.set_result(None)
                elif not reached.done():
                    still.append((target, reached))
            if still:
                self._applied_waiters[partition] = still
            else:
                del self._applied_waiters[partition]

    def watermarks(self, marks: dict[int, tuple[int, int]], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for p, (low, high) in marks.items():
            progress = self.partitions.get(p)
            if progress is None:
                continue
            progress.low, progress.high = low, high
            if high > progress.applied + 1 and (
                not progress.behind or progress.behind[-1][1] < high
            ):
                if len(progress.behind) >= LAG_SAMPLES_KEPT:
                    progress.behind.pop()
                progress.behind.append((now, high))

    # Questions ------------------------------------------------------------------

    def applied_offset(self, partition: int) -> int:
        found = self.partitions.get(partition)
        return found.applied if found is not None else -1

    def require_readable(self, partition: int) -> None:
        progress = self.partitions.get(partition)
        if progress is None or not progress.readable:
            why = progress.reason if progress is not None and progress.reason else ""
            raise Rebuilding(
                f"partition {partition} is being loaded or rebuilt on this node"
                + (f" ({why})" if why else "")
                + "; retry in a moment or read from another replica",
                retry_after=1,
            )

    def caught_up(self, partitions: Iterable[int]) -> bool:
        return all(self.get(p).caught_up for p in partitions)

    def waiting(self) -> int:
        """Requests waiting for an offset or an outcome (a gauge: must not grow)."""
        return sum(len(w) for w in self._applied_waiters.values()) + sum(
            len(w) for w in self._outcome_waiters.values()
        )

    # Waiting --------------------------------------------------------------------

    async def wait_applied(self, partition: int, offset: int, timeout: float | None = None) -> None:
        """Until this node applied ``offset`` of ``partition`` (and can read it)."""
        limit = self.wait_timeout if timeout is None else timeout
        progress = self.get(partition)
        if progress.applied >= offset and progress.readable:
            return
        deadline = time.monotonic() + limit
        if progress.applied < offset:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (offset, fut)
            self._applied_waiters.setdefault(partition, []).append(entry)
            try:
                await asyncio.wait_for(fut, limit)
            except TimeoutError:
                raise NotCaughtUp(
                    f"partition {partition} has not reached offset {offset} on this node within "
                    f"{limit}s; retry, or read from another replica",
                    retry_after=1,
                ) from None
            finally:
                self._discard_applied_waiter(partition, entry)
        while not self.get(partition).readable and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.require_readable(partition)

    def _discard_applied_waiter(
        self, partition: int, entry: tuple[int, asyncio.Future[None]]
    ) -> None:
        waiting = self._applied_waiters.get(partition)
        if waiting and entry in waiting:
            waiting.remove(entry)
            if not waiting:
                del self._applied_waiters[partition]

    async def outcome(self, partition: int, offset: int) -> str:
        """The outcome code of the event at ``partition:offset`` once applied here."""
        key = (partition, offset)
        code = self._outcomes.pop(key, None)
        if code is not None:
            return code
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._outcome_waiters.setdefault(key, []).append(fut)
        try:
            return await asyncio.wait_for(fut, self.wait_timeout)
        except TimeoutError:
            raise ApplyTimeout(
                f"the write is in the log at {partition}:{offset} but this node has not applied "
                "it yet; retry with the same request id to learn its outcome",
                retry_after=1,
            ) from None
        finally:
            waiters = self._outcome_waiters.get(key)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._outcome_waiters[key]


class HighWatermarks:
    """The log's high watermark of partitions, for strong reads, without a lock.

    Requests that arrive while a query runs are answered together by the next
    query, which starts after they arrived: every strong read sees a high
    watermark read after it began, and concurrent strong reads share queries.
    """

    def __init__(
        self,
        query: Callable[[list[int]], dict[int, int]],
        queried: Callable[[], None] = lambda: None,
    ) -> None:
        self._query = query
        self._queried = queried
        self._queued: dict[int, list[asyncio.Future[int]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, partition: int) -> int:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(partition, []).append(fut)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await fut

    async def _run(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, {}
            self._queried()
            try:
                marks = await asyncio.to_thread(self._query, sorted(batch))
            except Exception as exc:
                for futures in batch.values():
                    for fut in futures:
                        if not fut.done():
                            fut.set_exception(exc)
                continue
            for p, futures in batch.items():
                for fut in futures:
                    if not fut.done():
                        fut.set_result(marks[p])
