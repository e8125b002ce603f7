"""Every child of a cluster, in apply order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agentmem.directory import Directory
from agentmem.model import AgentMemoryCluster
from agentmem.resources.access import (
    client_service,
    network_policy,
    router_deployment,
    router_network_policy,
    router_service,
    service_account,
)
from agentmem.resources.directory import directory_configmap, initial_directory
from agentmem.resources.monitoring import prometheus_rule, service_monitor
from agentmem.resources.shard import shard_pdb, shard_service, shard_statefulset
from agentmem.resources.topic import kafka_topic


def shard_children(cluster: AgentMemoryCluster, shard: int) -> list[dict[str, Any]]:
    return [
        shard_service(cluster, shard),
        shard_pdb(cluster, shard),
        shard_statefulset(cluster, shard),
    ]


def children(
    cluster: AgentMemoryCluster,
    directory: Directory | None = None,
    shards: Iterable[int] | None = None,
    monitoring_api: bool = True,
) -> list[dict[str, Any]]:
    """Every child manifest, in the order they should be applied.

    ``shards`` are the shards that exist (by default ``range(spec.shards)``);
    during a rebalance the operator passes the union of old and new shards.
    ``monitoring_api`` says whether the monitoring.coreos.com API is served.
    """
    directory = directory or initial_directory(cluster)
    shard_ids = sorted(range(cluster.spec.shards) if shards is None else set(shards))
    spec = cluster.spec
    out: list[dict[str, Any]] = [
        service_account(cluster),
        directory_configmap(cluster, directory),
    ]
    if spec.event_log.kafka.topic_management == "strimzi":
        out.append(kafka_topic(cluster))
    out.append(client_service(cluster))
    for shard in shard_ids:
        out.extend(shard_children(cluster, shard))
    if spec.router.replicas > 0:
        out += [router_service(cluster), router_deployment(cluster)]
    out.append(network_policy(cluster))
    out.append(router_network_policy(cluster))
    if monitoring_api and spec.monitoring.service_monitor.enabled:
        out.append(service_monitor(cluster))
    if monitoring_api and spec.monitoring.prometheus_rule.enabled:
        out.append(prometheus_rule(cluster))
    return out
