"""topicManagement direct and external: the operator and a real Kafka broker."""

from __future__ import annotations

from typing import Any

from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from agentmem.eventlog.kafka import TopicSpec, ensure_topic
from tests.controlplane.conftest import ControlPlane, Operator, wait_until
from tests.controlplane.test_operator import cluster, wait_ready
from tests.kafka.conftest import Broker, kafka  # noqa: F401 - the broker fixture


def kafka_spec(broker: Broker, mode: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrapServers": broker.bootstrap,
        "topicManagement": mode,
        "replicas": 1,
        "minInSyncReplicas": 1,
        **extra,
    }


def test_direct_mode_creates_the_topic(
    controlplane: ControlPlane,
    operator: Operator,
    kafka: Broker,  # noqa: F811
) -> None:
    kubectl, ns = controlplane.kubectl, operator.namespace
    doc = cluster(partitions=12, eventLog={"kafka": kafka_spec(kafka, "direct")})
    kubectl.apply(doc, ns)
    obj = wait_ready(kubectl, ns)
    topic = obj["status"]["topic"]
    assert topic == f"agentmem.{ns}.demo.events"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 12
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["cleanup.policy"].value == "delete"
    assert configs["retention.ms"].value == "-1"  # no durable store: the log is the state
    assert obj["status"]["durability"] == "LogOnly"
    assert kubectl.get("kafkatopic", topic, ns) is None  # no KafkaTopic in direct mode


def test_external_topic_with_other_partitions_is_reported(
    controlplane: ControlPlane,
    operator: Operator,
    kafka: Broker,  # noqa: F811
) -> None:
    kubectl, ns = controlplane.kubectl, operator.namespace
    name = f"agentmem.external.{ns}"
    ensure_topic(kafka.settings(), TopicSpec(name, 4, 1, {}))
    spec = kafka_spec(kafka, "external", topicName=name)
    kubectl.apply(cluster(partitions=64, eventLog={"kafka": spec}), ns)

    def degraded() -> str | None:
        obj = kubectl.get("amc", "demo", ns) or {}
        for c in (obj.get("status") or {}).get("conditions", []):
            if c["type"] == "Degraded" and c["status"] == "True":
                return str(c["reason"]) + ": " + str(c["message"])
        return None

    message = wait_until("Degraded", degraded, timeout=60)
    assert message.startswith("TopicMismatch: topic agentmem.external.")
    assert "has 4 partitions but the cluster has 64" in message
