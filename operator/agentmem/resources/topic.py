"""The event topic: its Kafka configuration and, in strimzi mode, the KafkaTopic."""

from __future__ import annotations

from typing import Any

from agentmem.eventlog.config import FIXED_TOPIC_CONFIG
from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources._meta import metadata

_HOUR_MS = 3_600_000


def topic_config(cluster: AgentMemoryCluster) -> dict[str, str]:
    """Kafka configuration of the event topic, for Strimzi and the admin API alike.

    Never compacted (see :data:`FIXED_TOPIC_CONFIG`). With a durable store the
    nodes truncate the log behind it and the broker's retention is a distant
    backstop; without one the log is the state and the broker keeps every event.
    """
    kafka = cluster.spec.event_log.kafka
    config = kafka.config
    retention = (
        str(config.retention_backstop_hours * _HOUR_MS) if cluster.spec.store is not None else "-1"
    )
    return {
        **config.extra,
        **FIXED_TOPIC_CONFIG,
        "retention.ms": retention,
        "retention.bytes": "-1",
        "segment.ms": str(config.segment_hours * _HOUR_MS),
        "max.message.bytes": str(config.max_message_bytes),
        "min.insync.replicas": str(kafka.min_in_sync_replicas),
    }


def kafka_topic(cluster: AgentMemoryCluster) -> dict[str, Any]:
    """A Strimzi KafkaTopic (kafka.strimzi.io, v1beta2 or v1)."""
    kafka = cluster.spec.event_log.kafka
    topic = cluster.topic
    resource_name = naming.kafka_topic_resource_name(topic)
    meta = metadata(cluster, resource_name, naming.COMPONENT_EVENT_LOG)
    meta["labels"][naming.STRIMZI_CLUSTER_LABEL] = kafka.strimzi.cluster_name or ""
    spec: dict[str, Any] = {
        "partitions": cluster.spec.partitions,
        "replicas": kafka.replicas,
        "config": topic_config(cluster),
    }
    if resource_name != topic:
        spec["topicName"] = topic
    return {
        "apiVersion": f"kafka.strimzi.io/{kafka.strimzi.api_version}",
        "kind": "KafkaTopic",
        "metadata": meta,
        "spec": spec,
    }
