"""The event log's ports: appending, reading in order, and administering partitions.

Production adapters are Kafka (:mod:`agentmem.eventlog.kafka_log`); the
embedded ones SQLite (:mod:`agentmem.eventlog.sqlite_log`). Offsets are
per partition and start at 0; a partition's *low watermark* is its first
offset still in the log, its *high watermark* the offset the next event gets.

Readers are blocking and belong to one thread each; the admin side is safe to
call from any thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LogRecord:
    partition: int
    offset: int
    timestamp: int  # log append time, unix ms
    payload: bytes
    key: bytes = b""  # the event's path, tenant/agent/key


class LogUnavailableError(RuntimeError):
    """The log could not be reached or did not take a write in time; retry (503)."""


class LogGapError(RuntimeError):
    """The log no longer holds an offset that a reader needs.

    The events before ``start`` were removed (agentmem truncates only what the
    durable store reflects, so this means the state to continue from is gone).
    """

    def __init__(self, partition: int, wanted: int, start: int) -> None:
        super().__init__(
            f"partition {partition} of the event log starts at offset {start}, but offset "
            f"{wanted} is needed: events {wanted}..{start - 1} are gone"
        )
        self.partition = partition
        self.wanted = wanted
        self.start = start


class LogWriter(Protocol):
    async def append(self, partition: int, key: bytes, payload: bytes) -> int:
        """Append one event; return its offset once durable. Raises LogUnavailableError."""
        ...

    async def close(self) -> None: ...


class LogReader(Protocol):
    def assign(self, starts: dict[int, int]) -> None:
        """Read these partitions from these offsets (replacing any earlier assignment).

        A start below the partition's low watermark makes :meth:`poll` raise
        :class:`LogGapError`: a reader never skips an event silently.
        """
        ...

    def poll(self, max_records: int, timeout: float) -> list[LogRecord]:
        """Records of the assigned partitions, each partition's in offset order."""
        ...

    def close(self) -> None: ...


class LogAdmin(Protocol):
    def topic_id(self) -> str:
        """The identity of this log: a re-created topic gets a new one."""
        ...

    def partition_count(self) -> int: ...

    def watermarks(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(low, high) watermark of each partition."""
        ...

    def high_watermarks(self, partitions: Sequence[int]) -> dict[int, int]:
        """The offset the next event of each partition will get."""
        ...

    def offset_for_time(self, partition: int, timestamp_ms: int) -> int:
        """The first offset whose log time is at or after ``timestamp_ms`` (else the high)."""
        ...

    def truncate(self, partition: int, before: int) -> None:
        """Remove the events of a partition with offsets below ``before``."""
        ...

    def close(self) -> None: ...


def read_range(
    reader: LogReader, partition: int, start: int, end: int, max_records: int, idle: float = 5
) -> list[LogRecord]:
    """Up to ``max_records`` records of one partition with offsets in [start, end), in order.

    The reader must be assigned to ``partition`` at ``start``. Gives up after
    ``idle`` seconds without a record (``end`` should be at most the high
    watermark). Records read past ``end`` are dropped: assign again to go on.
    """
    out: list[LogRecord] = []
    if start >= end:
        return out
    deadline = time.monotonic() + idle
    while len(out) < max_records:
        batch = reader.poll(max_records - len(out), 0.1)
        if batch:
            deadline = time.monotonic() + idle
        elif time.monotonic() > deadline:
            break
        for record in batch:
            if record.partition != partition or record.offset < start:
                continue
            if record.offset >= end:
                return out
            out.append(record)
            if record.offset == end - 1:
                return out
    return out
