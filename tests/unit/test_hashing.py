"""The key hash is a wire contract: these vectors must never change."""

from __future__ import annotations

from collections import Counter

import pytest
import xxhash

from agentmem.directory import partition_for, routing_key

# (tenant, agent id, XXH3-64 of the routing key, partition of 64, partition of 1000)
VECTORS = [
    ("acme", "agent-1", 0x4909A4A93B4955F6, 54, 398),
    ("acme", "agent-2", 0x07FEB46A65791E11, 17, 601),
    ("default", "robot-42", 0x8D3C4530DD208414, 20, 788),
    ("t", "a", 0x8C8A06A09565E3C6, 6, 214),
    ("tenant-ü", "agent-日本", 0xC3548A7AB357D988, 8, 808),
]


@pytest.mark.parametrize(("tenant", "agent", "digest", "p64", "p1000"), VECTORS)
def test_vectors(tenant: str, agent: str, digest: int, p64: int, p1000: int) -> None:
    assert xxhash.xxh3_64_intdigest(routing_key(tenant, agent)) == digest
    assert partition_for(tenant, agent, 64) == p64
    assert partition_for(tenant, agent, 1000) == p1000


def test_routing_key_is_tenant_slash_agent() -> None:
    assert routing_key("acme", "agent-1") == b"acme/agent-1"
    assert routing_key("tenant-ü", "a") == "tenant-ü/a".encode()


def test_tenant_is_part_of_the_key() -> None:
    spread = {partition_for(f"tenant-{i}", "same-agent", 4096) for i in range(50)}
    assert len(spread) > 40


def test_sequential_ids_spread_evenly() -> None:
    n, partitions = 64_000, 64
    counts = Counter(partition_for("acme", f"agent-{i}", partitions) for i in range(n))
    assert len(counts) == partitions
    mean = n / partitions
    assert max(counts.values()) / mean < 1.1
    assert min(counts.values()) / mean > 0.9
