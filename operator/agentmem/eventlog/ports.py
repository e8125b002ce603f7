"""The node's two ports: the event log and the state store.

Production adapters: Kafka (:mod:`agentmem.node.adapters.kafka_log`) and Redis
(:mod:`agentmem.node.adapters.redis_store`). Embedded adapters, for running
without servers: SQLite (:mod:`agentmem.node.adapters.sqlite_log`) and process
memory (:mod:`agentmem.node.adapters.memory_store`).

Log readers and the store's apply side are blocking and used from the single
applier thread; the store's read side is async and used by request handlers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agentmem.node.apply import Record


@dataclass(frozen=True)
class LogRecord:
    partition: int
    offset: int
    timestamp: int  # log append time, unix ms
    payload: bytes
    key: bytes = b""  # the event's path, tenant/agent/key


class LogUnavailableError(RuntimeError):
    """The log did not take a write in time; the write may be retried (503)."""


class StoreFullError(RuntimeError):
    """The state store refuses writes: it is out of memory."""


class StoreResetError(RuntimeError):
    """The state store lost its contents (flushed or replaced); the node must rebuild."""


class LogWriter(Protocol):
    async def append(self, partition: int, key: bytes, payload: bytes) -> int:
        """Append one event; return its offset once durable. Raises LogUnavailableError."""
        ...

    async def close(self) -> None: ...


class LogReader(Protocol):
    def assign(self, starts: dict[int, int]) -> None:
        """Read these partitions from these offsets (replacing any earlier assignment)."""
        ...

    def poll(self, max_records: int, timeout: float) -> list[LogRecord]: ...

    def high_watermarks(self, partitions: Sequence[int]) -> dict[int, int]:
        """The offset the next event of each partition will get."""
        ...

    def partition_count(self) -> int:
        """Partitions of the log (the topic), to check against the cluster's."""
        ...

    def scan(self, partition: int, start: int, end: int, max_records: int) -> list[LogRecord]:
        """Records of one partition with offsets in [start, end), oldest first."""
        ...

    def close(self) -> None: ...


class StateStore(Protocol):
    # applier thread
    def check(self) -> None: ...
    def claim(self, wipe: bool = False) -> None: ...
    def verify(self) -> None: ...
    def applied_offsets(self, partitions: Sequence[int]) -> dict[int, int]: ...
    def apply(self, partition: int, records: Sequence[LogRecord]) -> list[str | None]: ...
    def drop_partition(self, partition: int) -> None: ...
    def stored_partitions(self) -> list[int]: ...
    def log_times(self, partitions: Sequence[int]) -> dict[int, int]: ...
    def memory(self) -> tuple[int, int]: ...

    # request path
    async def get(self, path: str) -> Record | None: ...
    async def get_many(self, paths: Sequence[str]) -> list[Record | None]: ...
    async def keys(self, agent_path: str) -> list[str]: ...
    async def applied(self, partition: int) -> int: ...
    async def ping(self) -> bool: ...
    async def aclose(self) -> None: ...
