"""Kafka client settings and the event topic's administration.

``ensure_topic`` serves ``topicManagement: direct`` (create the topic with the
cluster's partitions and configuration) and ``external`` (check an existing
topic). A topic whose partition count differs from the cluster's is reported,
never used: the partition of every key depends on it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
    OffsetSpec,
)

from agentmem.eventlog.config import FIXED_TOPIC_CONFIG


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the brokers."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> KafkaSettings:
        """From the ``AGENTMEM_KAFKA_*`` variables the operator sets on the pods."""
        e = os.environ if env is None else env
        bootstrap = e.get("AGENTMEM_KAFKA_BOOTSTRAP_SERVERS", "")
        if not bootstrap:
            raise ValueError(
                "AGENTMEM_KAFKA_BOOTSTRAP_SERVERS is not set: give the Kafka bootstrap servers "
                "(host:port,...)"
            )
        return cls(
            bootstrap_servers=bootstrap,
            security_protocol=e.get("AGENTMEM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            ssl_ca_location=e.get("AGENTMEM_KAFKA_SSL_CA_LOCATION"),
            ssl_certificate_location=e.get("AGENTMEM_KAFKA_SSL_CERTIFICATE_LOCATION"),
            ssl_key_location=e.get("AGENTMEM_KAFKA_SSL_KEY_LOCATION"),
            sasl_mechanism=e.get("AGENTMEM_KAFKA_SASL_MECHANISM"),
            sasl_username=e.get("AGENTMEM_KAFKA_SASL_USERNAME"),
            sasl_password=e.get("AGENTMEM_KAFKA_SASL_PASSWORD"),
        )

    def client_config(self) -> dict[str, Any]:
        """librdkafka configuration common to producers, consumers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
        }
        config.update({k: v for k, v in optional.items() if v})
        return config


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replicas: int
    config: dict[str, str]


class TopicMismatchError(RuntimeError):
    """An existing topic that cannot serve the cluster; the message says what differs."""


def describe_topic(admin: AdminClient, name: str, timeout: float = 10) -> int | None:
    """The partition count of a topic, or None when it does not exist."""
    metadata = admin.list_topics(topic=name, timeout=timeout)
    topic = metadata.topics.get(name)
    if topic is None or (
        topic.error is not None and (topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART)
    ):
        return None
    if topic.error is not None:
        raise KafkaException(topic.error)
    return len(topic.partitions)


def _wait_for_leaders(admin: AdminClient, name: str, timeout: float) -> None:
    """A new topic is usable once every partition's leader answers offset requests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
        if topic is not None and topic.partitions:
            request = {
                TopicPartition(name, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
                for p in topic.partitions
            }
            try:
                for future in admin.list_offsets(request, request_timeout=timeout).values():
                    future.result(timeout)
            except KafkaException:
                pass
            else:
                return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has partitions without a leader after {timeout}s")


def ensure_topic(
    settings: KafkaSettings, spec: TopicSpec, create: bool = True, timeout: float = 30
) -> str:
    """Make sure the event topic exists as the cluster needs it.

    Returns "created" or "exists". Raises :class:`TopicMismatchError` for a topic
    with another partition count, or a missing topic when ``create`` is false.
    """
    admin = AdminClient(settings.client_config())
    partitions = describe_topic(admin, spec.name, timeout)
    if partitions is None:
        if not create:
            raise TopicMismatchError(
                f"topic {spec.name} does not exist; create it with {spec.partitions} partitions "
                "and cleanup.policy=compact, or use topicManagement: direct"
            )
        config = {**spec.config, **FIXED_TOPIC_CONFIG}
        futures = admin.create_topics(
            [NewTopic(spec.name, spec.partitions, spec.replicas, config=config)],
            operation_timeout=timeout,
        )
        try:
            futures[spec.name].result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        else:
            _wait_for_leaders(admin, spec.name, timeout)
            return "created"
        partitions = describe_topic(admin, spec.name, timeout)
    if partitions != spec.partitions:
        raise TopicMismatchError(
            f"topic {spec.name} has {partitions} partitions but the cluster has "
            f"{spec.partitions}; the partition of every key depends on this number. Use a "
            "topic with the same count (spec.eventLog.kafka.topicName), or recreate the cluster"
        )
    return "exists"
