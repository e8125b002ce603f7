"""The signed audit chain on a real Kafka topic: ``agentmem audit verify`` passes
the topic as written and names the first bad event in copies of it produced
with one event altered, removed, or two swapped."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from agentmem.client import Memory
from agentmem.directory import partition_for
from agentmem.eventlog.kafka import TopicSpec, ensure_topic
from agentmem.eventlog.kafka_log import KafkaReader
from agentmem.eventlog.ports import LogRecord, read_range
from agentmem.local import LocalCluster
from agentmem.node.auditcli import VerifyRequest, verify_log
from tests.controlplane.conftest import wait_until
from tests.kafka.conftest import Broker, RedisServer
from tests.net import free_port_run

PARTITIONS = 16


@pytest.fixture
def cluster(
    kafka: Broker, redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> Iterator[LocalCluster]:
    local = LocalCluster(
        data=tmp_path / "data", shards=2, port=free_port_run(3), kafka=kafka.bootstrap,
        redis=redis_factory().url.rsplit("/", 1)[0], audit_interval=0.5,
        topic=f"agentmem.test.{uuid.uuid4().hex[:8]}.events",
    )  # fmt: skip
    local.prepare()
    local.ensure_topic()
    try:
        local.start(io.StringIO())
        yield local
    finally:
        local.stop()


def verify(cluster: LocalCluster, topic: str, partition: int) -> tuple[int, str]:
    settings = cluster.audit_settings()
    settings = type(settings)(**{**settings.__dict__, "topic": topic})
    out = io.StringIO()
    code = verify_log(VerifyRequest(settings, [cluster.audit_key().public_pem()], [partition]), out)
    return code, out.getvalue()


def copy_topic(kafka: Broker, partition: int, records: list[LogRecord]) -> str:
    """A new topic whose ``partition`` holds ``records`` (key and payload), in order."""
    name = f"agentmem.copy.{uuid.uuid4().hex[:8]}.events"
    ensure_topic(kafka.settings(), TopicSpec(name, PARTITIONS, 1, {}))
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    for r in records:
        producer.produce(name, r.payload, r.key, partition=partition, timestamp=r.timestamp)
    assert producer.flush(30) == 0
    return name


def test_verify_names_the_first_altered_removed_or_reordered_event(
    kafka: Broker, cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTMEM_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap)
    with Memory(cluster.router_url, tenant="acme", token_file=cluster.token_file) as mem:
        for i in range(60):
            mem.put("auditor", f"k{i % 7}", {"i": i})
    partition = partition_for("acme", "auditor", PARTITIONS)

    def signed() -> str | None:
        code, text = verify(cluster, cluster.topic, partition)
        return text if code == 0 and "ok, 60 events" in text else None

    text = wait_until("every event signed", signed, timeout=60)
    assert "not covered" not in text

    reader = KafkaReader(kafka.settings(), cluster.topic)
    try:
        reader.assign({partition: 0})
        records = read_range(reader, partition, 0, 60, 60)
    finally:
        reader.close()
    assert len(records) == 60
    altered = list(records)
    value = json.loads(altered[17].payload)
    forged = json.dumps(value).replace('"i": 17', '"i": 999').encode()
    altered[17] = LogRecord(partition, 17, altered[17].timestamp, forged, altered[17].key)
    assert forged != records[17].payload
    removed = records[:23] + records[24:]
    swapped = [*records[:40], records[41], records[40], *records[42:]]

    for copy, offset, what in (
        (altered, 17, "altered"),
        (removed, 23, "removed"),
        (swapped, 40, "reordered"),
    ):
        code, text = verify(cluster, copy_topic(kafka, partition, copy), partition)
        assert code == 1, text
        assert f"the event at offset {offset} was {what}" in text, text
        assert f"{offset} events before it match" in text, text
    # The topic as written still verifies.
    assert verify(cluster, cluster.topic, partition)[0] == 0
