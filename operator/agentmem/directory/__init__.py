"""The partition directory: key hash, assignment, the directory document and plans."""

from agentmem.directory.assignment import ShardSlot, Table, assign, loads, moved
from agentmem.directory.document import (
    SCHEMA_VERSION,
    Directory,
    DirectoryError,
    Move,
    Pending,
    Replica,
    ShardEntry,
)
from agentmem.directory.hashing import HASH_NAME, partition_for, routing_key
from agentmem.directory.plan import moves_between, steps

__all__ = [
    "HASH_NAME",
    "SCHEMA_VERSION",
    "Directory",
    "DirectoryError",
    "Move",
    "Pending",
    "Replica",
    "ShardEntry",
    "ShardSlot",
    "Table",
    "assign",
    "loads",
    "moved",
    "moves_between",
    "partition_for",
    "routing_key",
    "steps",
]
