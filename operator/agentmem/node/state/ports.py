"""The state port: where a node materializes the partitions it serves.

Production: the co-located Redis (:mod:`.redis`); embedded: process memory
(:mod:`.memory`). The apply side runs on the node's applier thread, sampling
on its sampler thread, reads on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agentmem.eventlog.ports import LogRecord
from agentmem.store.ports import Record, Snapshot


class StateFullError(RuntimeError):
    """The state refuses writes: it is out of memory."""


class StateUnavailableError(RuntimeError):
    """The state cannot be reached now (a restarting Redis); retry."""


class StateResetError(RuntimeError):
    """The state lost its contents (flushed or replaced); the node must rebuild."""


@dataclass(frozen=True)
class PartitionSample:
    """What the node's ticker and metrics need to know of one partition's state."""

    log_time: int | None = None
    next_expiry: int | None = None  # the earliest expires_at of its records
    oldest_request_id: int | None = None  # log time of its oldest remembered request id
    request_ids: int = 0


class StateStore(Protocol):
    # applier thread
    def check(self) -> None:
        """Fail early, saying what to change, when the state is unusable."""
        ...

    def claim(self, wipe: bool = False) -> None:
        """Adopt the contents (or, with ``wipe``, erase them and start over)."""
        ...

    def verify(self) -> None:
        """Raise StateResetError when the contents this node built are gone."""
        ...

    def serve_current(self) -> None:
        """After ``claim(wipe=True)``: reads may see the new contents (called on the
        event loop once the node knows the partitions are rebuilding)."""
        ...

    def applied_offsets(self, partitions: Sequence[int]) -> dict[int, int]: ...
    def apply(self, partition: int, records: Sequence[LogRecord]) -> list[str | None]: ...

    def clean(self, partition: int) -> None:
        """Free what the apply rules already treat as absent (works when full)."""
        ...

    def load(self, snapshot: Snapshot) -> None:
        """Replace a partition's contents with the durable store's facts."""
        ...

    def drop_partition(self, partition: int) -> None: ...
    def stored_partitions(self) -> list[int]: ...

    # sampler thread
    def sample(self, partitions: Sequence[int]) -> dict[int, PartitionSample]: ...
    def memory(self) -> tuple[int, int]:
        """(used bytes, limit in bytes; 0 = no limit)."""
        ...

    # request path
    async def get_many(self, paths: Sequence[str]) -> list[Record | None]:
        """Records, read in the same step as a check that the contents are intact
        (StateResetError otherwise)."""
        ...

    async def keys(self, agent_path: str) -> list[str]: ...
    async def agents(self, tenant: str, partitions: Sequence[int]) -> list[str]:
        """The tenant's agents that have at least one key in these partitions."""
        ...

    async def aclose(self) -> None: ...
