"""The key hash: which partition an agent's keys live in.

``partition = XXH3_64(utf8(tenant) + b"/" + utf8(agent_id), seed=0) mod P``

XXH3 (64-bit) is fast, well distributed and implemented in every common
language, so other clients compute the same partition. This function is part of
the wire contract: it never changes once released. ``docs/partitioning.md``
documents it with test vectors that ``tests/unit/test_hashing.py`` checks.
All keys of one agent share the routing key, so they live on one shard.
"""

from __future__ import annotations

from typing import Final

import xxhash

HASH_NAME: Final = "xxh3_64(tenant/agent_id) mod partitions"
SEPARATOR: Final = b"/"

_xxh3_64 = xxhash.xxh3_64_intdigest


def routing_key(tenant: str, agent_id: str) -> bytes:
    """The bytes that are hashed: tenant and agent id joined by ``/``.

    Neither may contain ``/`` (the node's name validation rejects it), so the
    join is unambiguous.
    """
    return tenant.encode() + SEPARATOR + agent_id.encode()


def partition_for(tenant: str, agent_id: str, partitions: int) -> int:
    """The partition in ``[0, partitions)`` that owns an agent's keys."""
    return _xxh3_64(tenant.encode() + SEPARATOR + agent_id.encode()) % partitions
