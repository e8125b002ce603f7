"""The embedded state store: :class:`MemoryState` in process memory."""

from __future__ import annotations

from collections.abc import Sequence

from agentmem.node.apply import MemoryState, Record
from agentmem.node.ports import LogRecord


class MemoryStore:
    def __init__(self) -> None:
        self.state = MemoryState()

    def check(self) -> None:
        return None

    def verify(self) -> None:
        return None

    def claim(self, wipe: bool = False) -> None:
        if wipe:
            self.state = MemoryState()

    def applied_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        with self.state.lock:
            return {p: self.state.applied.get(p, -1) for p in partitions}

    def apply(self, partition: int, records: Sequence[LogRecord]) -> list[str | None]:
        return self.state.apply_batch(
            partition, ((r.offset, r.timestamp, r.payload) for r in records)
        )

    def drop_partition(self, partition: int) -> None:
        self.state.drop_partition(partition)

    def stored_partitions(self) -> list[int]:
        with self.state.lock:
            return sorted(self.state.applied)

    def log_times(self, partitions: Sequence[int]) -> dict[int, int]:
        with self.state.lock:
            return {p: t for p in partitions if (t := self.state.log_time.get(p)) is not None}

    def memory(self) -> tuple[int, int]:
        return 0, 0

    async def get(self, path: str) -> Record | None:
        with self.state.lock:
            return self.state.records.get(path)

    async def get_many(self, paths: Sequence[str]) -> list[Record | None]:
        with self.state.lock:
            return [self.state.records.get(p) for p in paths]

    async def keys(self, agent_path: str) -> list[str]:
        with self.state.lock:
            return sorted(self.state.index.get(agent_path, ()))

    async def applied(self, partition: int) -> int:
        with self.state.lock:
            return self.state.applied.get(partition, -1)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
