"""The shard directory: its first table, shard entries and ConfigMap."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agentmem.directory import Directory, ShardEntry, ShardSlot, assign
from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources._meta import metadata


def shard_zone(cluster: AgentMemoryCluster, shard: int) -> str:
    """A shard's home zone: the listed zones taken in turn ("" when none are listed)."""
    zones = cluster.spec.placement.zones
    return zones[shard % len(zones)] if zones else ""


def shard_slots(cluster: AgentMemoryCluster, shards: Iterable[int]) -> list[ShardSlot]:
    return [ShardSlot(id=i, zone=shard_zone(cluster, i)) for i in shards]


def shard_entries(cluster: AgentMemoryCluster, shards: Iterable[int]) -> tuple[ShardEntry, ...]:
    entries = []
    for i in sorted(shards):
        name = naming.shard_name(cluster.name, i)
        entries.append(
            ShardEntry(
                id=i,
                name=name,
                endpoint=f"{name}.{cluster.namespace}.svc:{naming.NODE_PORT}",
                zone=shard_zone(cluster, i),
            )
        )
    return tuple(entries)


def initial_directory(cluster: AgentMemoryCluster) -> Directory:
    """Epoch 1: the partitions spread over ``spec.shards`` shards."""
    shards = range(cluster.spec.shards)
    return Directory(
        cluster=cluster.name,
        namespace=cluster.namespace,
        topic=cluster.topic,
        epoch=1,
        table=assign(cluster.spec.partitions, shard_slots(cluster, shards)),
        shards=shard_entries(cluster, shards),
    )


def directory_configmap(cluster: AgentMemoryCluster, directory: Directory) -> dict[str, Any]:
    meta = metadata(cluster, naming.directory_name(cluster.name), naming.COMPONENT_DIRECTORY)
    meta["annotations"] = {f"{naming.GROUP}/epoch": str(directory.epoch)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {naming.DIRECTORY_KEY: directory.to_json()},
    }


def directory_from_configmap(configmap: dict[str, Any]) -> Directory:
    """Parse the directory out of its ConfigMap (as returned by the API)."""
    return Directory.from_json((configmap.get("data") or {})[naming.DIRECTORY_KEY])
