"""Fuzz the node's API from its own OpenAPI document: no input makes it fail with a 5xx.

The node has semantic memory (Milvus Lite, vectors of 4 dimensions), so writes
with texts and vectors and searches with filters are fuzzed too."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from agentmem.eventlog.kafka import TopicSpec, ensure_topic
from tests.controlplane.conftest import free_port
from tests.kafka.conftest import PARTITIONS, Broker, NodeProcess, RedisServer
from tests.milvus import MilvusLite


@pytest.fixture(scope="module")
def fuzzed_node(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    workdir = tmp_path_factory.mktemp("fuzz")
    topic = "agentmem.test.fuzz.events"
    ensure_topic(kafka.settings(), TopicSpec(topic, PARTITIONS, 1, {"min.insync.replicas": "1"}))
    server = RedisServer(free_port(), workdir).start()
    milvus = MilvusLite(workdir / "milvus").start()
    semantic = {"uri": milvus.uri, "dimensions": 4, "collection": "fuzz", "writer": "true",
                "embedder": {"kind": "hashing"}}  # fmt: skip
    node = NodeProcess(
        kafka, topic, server.url, workdir / "node.log", max_value_bytes="65536",
        semantic=json.dumps(semantic),
    )  # fmt: skip
    node.start()
    yield node
    node.kill(signal.SIGTERM)
    milvus.stop()
    server.stop()


@pytest.fixture(scope="module")
def api(fuzzed_node: NodeProcess) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{fuzzed_node.url}/openapi.json")
    # The watch stream never ends by itself; it is tested on its own.
    return schema.exclude(path_regex=r".*/watch$")


def test_no_input_gives_a_server_error(
    api: schemathesis.BaseSchema, fuzzed_node: NodeProcess
) -> None:
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:
            response = case.call(base_url=fuzzed_node.url, timeout=30)
            statuses[response.status_code] += 1
            assert response.status_code < 500 or response.status_code in (503, 504), (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:500]}"
            )
            if (response.status_code >= 400 and response.status_code != 404) or (
                response.status_code == 404 and "/keys/" in case.formatted_path
            ):
                body = response.json()
                assert body["error"] and body["message"], body

        call()
    # Both valid and invalid requests were generated and answered.
    assert statuses[200] > 20 and statuses[400] > 20, statuses
    assert not [status for status in statuses if status >= 500 and status not in (503, 504)]
