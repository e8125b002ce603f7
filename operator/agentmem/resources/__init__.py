"""Pure builders of every child of an AgentMemoryCluster.

Each builder takes the typed cluster and returns a manifest as a dict. None of
them does I/O; the controller adopts and applies what they return.
"""

from agentmem.resources.access import (
    client_service,
    network_policy,
    router_deployment,
    router_network_policy,
    router_service,
    service_account,
)
from agentmem.resources.directory import (
    directory_configmap,
    directory_from_configmap,
    initial_directory,
    shard_entries,
    shard_slots,
    shard_zone,
)
from agentmem.resources.monitoring import prometheus_rule, service_monitor
from agentmem.resources.render import children, shard_children
from agentmem.resources.shard import (
    redis_maxmemory,
    shard_pdb,
    shard_service,
    shard_statefulset,
)
from agentmem.resources.topic import kafka_topic, topic_config

__all__ = [
    "children",
    "client_service",
    "directory_configmap",
    "directory_from_configmap",
    "initial_directory",
    "kafka_topic",
    "network_policy",
    "prometheus_rule",
    "redis_maxmemory",
    "router_deployment",
    "router_network_policy",
    "router_service",
    "service_account",
    "service_monitor",
    "shard_children",
    "shard_entries",
    "shard_pdb",
    "shard_service",
    "shard_slots",
    "shard_statefulset",
    "shard_zone",
    "topic_config",
]
