"""The event topic: its Kafka configuration and, in strimzi mode, the KafkaTopic."""

from __future__ import annotations

from typing import Any

from agentmem.eventlog.config import FIXED_TOPIC_CONFIG
from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources._meta import metadata

_HOUR_MS = 3_600_000


def topic_config(cluster: AgentMemoryCluster) -> dict[str, str]:
    """Kafka configuration of the event topic, for Strimzi and the admin API alike.

    Always compacted: the newest event per key stays forever, the full history
    for the audit window (``min.compaction.lag.ms``); timestamps are the
    broker's append time (see :data:`FIXED_TOPIC_CONFIG`).
    """
    kafka = cluster.spec.event_log.kafka
    config = kafka.config
    return {
        **config.extra,
        **FIXED_TOPIC_CONFIG,
        "min.compaction.lag.ms": str(config.audit_window_hours * _HOUR_MS),
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
