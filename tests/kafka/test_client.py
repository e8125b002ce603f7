"""The SDK against memory nodes on a real Kafka broker and Redis (``agentmem up
--kafka --redis``): read-your-writes across two shards, a write retried across
a node kill, and a watch that resumes after it."""

from __future__ import annotations

import asyncio
import io
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentmem.client import AsyncMemory
from agentmem.directory import Directory, partition_for
from agentmem.local import LocalCluster
from tests.kafka.conftest import Broker, RedisServer
from tests.net import free_port_run


@pytest.fixture
def cluster(
    kafka: Broker, redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> Iterator[LocalCluster]:
    redis = redis_factory()
    local = LocalCluster(
        data=tmp_path / "data", shards=2, port=free_port_run(3), kafka=kafka.bootstrap,
        redis=redis.url.rsplit("/", 1)[0], topic=f"agentmem.test.{uuid.uuid4().hex[:8]}.events",
    )  # fmt: skip
    local.prepare()
    local.ensure_topic()
    try:
        local.start(io.StringIO())
        yield local
    finally:
        local.stop()


def test_sdk_on_kafka_and_redis_nodes(cluster: LocalCluster) -> None:
    directory = Directory.from_json((cluster.data / "directory.json").read_text())
    by_shard: dict[int, str] = {}
    i = 0
    while len(by_shard) < 2:
        agent = f"bot-{i}"
        by_shard.setdefault(directory.owner(partition_for("acme", agent, 16)).id, agent)
        i += 1
    a, b = by_shard[0], by_shard[1]

    async def scenario() -> list[int]:
        async with AsyncMemory(
            cluster.router_url, tenant="acme", routing="direct", token_file=cluster.token_file
        ) as mem:
            seen: list[int] = []

            async def watch() -> None:
                async for change in mem.watch(a):
                    seen.append(change.value)
                    if len(seen) == 40:
                        return

            task = asyncio.create_task(watch())
            await asyncio.sleep(0.5)
            for i in range(20):
                await mem.put(a, "n", i)
                await mem.put(b, "n", i)
                ia, ib = await mem.get(a, "n"), await mem.get(b, "n")
                assert ia is not None and ia.value == i
                assert ib is not None and ib.value == i
            # Shard 0's node dies and comes back: the write in between is retried
            # with its request id, the watch resumes where it was.
            cluster.processes["node-0"].send_signal(signal.SIGKILL)
            cluster.processes["node-0"].wait()
            threading.Timer(1.0, cluster.spawn_node, args=(0,)).start()
            for i in range(20, 40):
                await mem.put(a, "n", i)
            item = await mem.get(a, "n")
            assert item is not None and item.value == 39
            await asyncio.wait_for(task, 60)
            return seen

    assert asyncio.run(scenario()) == list(range(40))
