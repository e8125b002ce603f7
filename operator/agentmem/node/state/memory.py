"""The embedded state: :class:`MemoryState` in process memory."""

from __future__ import annotations

from collections.abc import Sequence

from agentmem.eventlog.ports import LogRecord
from agentmem.node.apply import DEFAULT_DEDUP_WINDOW_MS, MemoryState
from agentmem.node.state.ports import PartitionSample
from agentmem.store.ports import Record, Snapshot


class MemoryStateStore:
    def __init__(self, window_ms: int = DEFAULT_DEDUP_WINDOW_MS) -> None:
        self.window_ms = window_ms
        self.state = MemoryState(window_ms)

    def check(self) -> None:
        return None

    def verify(self) -> None:
        return None

    def claim(self, wipe: bool = False) -> None:
        if wipe:
            self.state = MemoryState(self.window_ms)

    def serve_current(self) -> None:
        return None

    def applied_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        with self.state.lock:
            return {p: self.state.applied.get(p, -1) for p in partitions}

    def apply(self, partition: int, records: Sequence[LogRecord]) -> list[str | None]:
        return self.state.apply_batch(
            partition, ((r.offset, r.timestamp, r.payload) for r in records)
        )

    def clean(self, partition: int) -> None:
        with self.state.lock:
            self.state.sweep(partition)

    def load(self, snapshot: Snapshot) -> None:
        self.state.load(snapshot)

    def drop_partition(self, partition: int) -> None:
        self.state.drop_partition(partition)

    def stored_partitions(self) -> list[int]:
        with self.state.lock:
            return sorted(self.state.applied)

    def sample(self, partitions: Sequence[int]) -> dict[int, PartitionSample]:
        state = self.state
        out = {}
        with state.lock:
            for p in partitions:
                expiring = state.expiring.get(p) or {}
                rids = state.rids.get(p) or {}
                out[p] = PartitionSample(
                    log_time=state.log_time.get(p),
                    next_expiry=min(expiring.values(), default=None),
                    oldest_request_id=min((r.log_time for r in rids.values()), default=None),
                    request_ids=len(rids),
                )
        return out

    def memory(self) -> tuple[int, int]:
        return 0, 0

    async def get_many(self, paths: Sequence[str]) -> list[Record | None]:
        with self.state.lock:
            return [self.state.records.get(p) for p in paths]

    async def keys(self, agent_path: str) -> list[str]:
        with self.state.lock:
            return sorted(self.state.index.get(agent_path, ()))

    async def agents(self, tenant: str, partitions: Sequence[int]) -> list[str]:
        prefix = f"{tenant}/"
        with self.state.lock:
            return sorted(
                path[len(prefix) :]
                for p in partitions
                for path in self.state.agents.get(p, ())
                if path.startswith(prefix) and self.state.index.get(path)
            )

    async def aclose(self) -> None:
        return None
