"""Where a node materializes its partitions: Redis, or process memory embedded."""

from agentmem.node.state.ports import (
    PartitionSample,
    StateFullError,
    StateResetError,
    StateStore,
    StateUnavailableError,
)

__all__ = [
    "PartitionSample",
    "StateFullError",
    "StateResetError",
    "StateStore",
    "StateUnavailableError",
]
