"""The durable store: the write-behind projection of the event log that makes
every acknowledged write survive the log's truncation (see :mod:`.ports`)."""

from agentmem.store.ports import (
    BatchView,
    Changes,
    Compute,
    DurableStore,
    Record,
    RequestRecord,
    Snapshot,
    Stored,
    StoreIdentityError,
    StoreUnavailableError,
    WriteResult,
)

__all__ = [
    "BatchView",
    "Changes",
    "Compute",
    "DurableStore",
    "Record",
    "RequestRecord",
    "Snapshot",
    "StoreIdentityError",
    "StoreUnavailableError",
    "Stored",
    "WriteResult",
]
