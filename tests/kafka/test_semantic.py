"""Semantic memory on real Kafka and Redis, with Milvus Lite's server as the
shared vector index: replicas of one shard, a partition moved between shards,
and the log kept until the index reflects it."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agentmem.directory import Directory, ShardEntry, partition_for
from tests.kafka.conftest import PARTITIONS, Broker, Client, NodeProcess, RedisServer, run
from tests.kafka.test_durability import watermarks
from tests.milvus import MilvusLite
from tests.net import free_port

NodeFactory = Callable[..., NodeProcess]
RedisFactory = Callable[..., RedisServer]
DIMENSIONS = 32


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MilvusLite(tmp_path_factory.mktemp("milvus")).start()
    yield server.uri
    server.stop()


def semantic(uri: str, collection: str, writer: bool) -> str:
    return json.dumps(
        {"uri": uri, "dimensions": DIMENSIONS, "collection": collection,
         "writer": "true" if writer else "false", "embedder": {"kind": "hashing"}}
    )  # fmt: skip


def collection() -> str:
    return f"test_{uuid.uuid4().hex[:10]}"


async def remember(c: Client, key: str, text: str) -> str:
    async with c.session.put(
        f"{c.prefix}/keys/{key}", params={"embed": "text"}, json={"text": text},
    ) as r:  # fmt: skip
        body = await r.json()
        assert r.status == 200, body
        return str(body["version"])


async def search(base: str, session: aiohttp.ClientSession, path: str, **body: Any) -> Any:
    async with session.post(f"{base}{path}", json=body) as r:
        data = await r.json()
        assert r.status == 200, data
        return data


def test_a_replica_that_does_not_write_the_index_finds_a_write_by_its_version(
    topic: str, milvus: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    name = collection()
    writer = node_factory(topic, redis_factory().url, semantic=semantic(milvus, name, True))
    reader = node_factory(topic, redis_factory().url, semantic=semantic(milvus, name, False))
    path = "/v1/tenants/acme/agents/bot-1/search"

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            w, r = Client(s, writer.url), Client(s, reader.url)
            for i in range(10):
                await remember(w, f"n{i}", f"rocks and dust sample {i}")
            version = await remember(w, "dock", "the battery charges at dock three")
            found = await search(reader.url, s, path, query="battery dock", k=1,
                                 min_version=version)  # fmt: skip
            assert found["items"][0]["key"] == "dock"
            # written on the reader (accepted there, indexed by the writer)
            version = await remember(r, "dock", "the dock moved to the north crater")
            for base in (reader.url, writer.url):
                found = await search(base, s, path, query="dock", k=20, min_version=version)
                docks = [i for i in found["items"] if i["key"] == "dock"]
                assert [d["text"] for d in docks] == ["the dock moved to the north crater"]
            status, body = await w.delete("dock")
            assert status == 200
            found = await search(reader.url, s, path, query="dock crater", k=20,
                                 min_version=body["version"])  # fmt: skip
            assert "dock" not in {i["key"] for i in found["items"]}
            # the non-writing replica reports no index lag of its own, and the
            # writer's status shows what the index reflects
            _, status_body = writer.get_json("/v1/status")
            p = partition_for("acme", "bot-1", PARTITIONS)
            assert status_body["semantic"]["writer"] is True
            assert status_body["semantic"]["indexed"][str(p)] >= int(body["version"].split(":")[1])

    run(scenario())


def test_a_partition_moved_to_another_shard_keeps_its_search_results(
    kafka: Broker,
    topic: str,
    milvus: str,
    redis_factory: RedisFactory,
    tmp_path: Path,
) -> None:
    name, path = collection(), tmp_path / "directory.json"
    ports = [free_port(), free_port()]
    shards = tuple(ShardEntry(i, f"s{i}", f"127.0.0.1:{ports[i]}") for i in range(2))
    table = tuple(p % 2 for p in range(PARTITIONS))
    path.write_text(Directory("demo", "ns", topic, 1, table, shards).to_json())
    nodes = []
    for shard in range(2):
        node = NodeProcess(
            kafka, topic, redis_factory().url,
            tmp_path / f"n{shard}.log", shard=str(shard), directory_file=str(path),
            semantic=semantic(milvus, name, True), handoff_seconds="1",
        )  # fmt: skip
        node.port = ports[shard]
        nodes.append(node.start())
    agents = [f"agent-{i}" for i in range(24)]
    moved = [a for a in agents if partition_for("acme", a, PARTITIONS) % 2 == 0]
    try:

        async def write() -> dict[str, str]:
            versions = {}
            async with aiohttp.ClientSession() as s:
                for agent in agents:
                    owner = nodes[partition_for("acme", agent, PARTITIONS) % 2]
                    c = Client(s, owner.url, agent=agent)
                    versions[agent] = await remember(c, "m", f"memory of {agent} on the ridge")
            return versions

        versions = run(write())
        # every partition moves to shard 1 (epoch 2)
        path.write_text(Directory("demo", "ns", topic, 2, (1,) * PARTITIONS, shards).to_json())

        async def after_the_move() -> None:
            async with aiohttp.ClientSession() as s:
                deadline = time.monotonic() + 60
                while True:
                    status, body = nodes[1].get_json("/readyz")
                    if status == 200 and body.get("epoch") == 2:
                        break
                    assert time.monotonic() < deadline, body
                    await asyncio.sleep(0.2)
                tokens = {}
                for version in versions.values():
                    p, offset = version.split(":")
                    tokens[p] = max(tokens.get(p, 0), int(offset))
                found = await search(
                    nodes[1].url, s, "/v1/tenants/acme/search", query="memory on the ridge",
                    k=50, min_versions=tokens,
                )  # fmt: skip
                assert {i["agent"] for i in found["items"]} == set(agents)
                # the new owner goes on indexing the moved partitions where the old one stopped
                agent = moved[0]
                version = await remember(
                    Client(s, nodes[1].url, agent=agent), "m", "a new memory after the move"
                )
                found = await search(
                    nodes[1].url, s, f"/v1/tenants/acme/agents/{agent}/search",
                    query="new memory after the move", k=5, min_version=version,
                )  # fmt: skip
                assert [i["text"] for i in found["items"]][:1] == ["a new memory after the move"]

        run(after_the_move())
    finally:
        for node in nodes:
            node.kill(signal.SIGTERM)


def test_the_log_is_kept_until_the_index_reflects_it(
    topic: str,
    milvus: str,
    redis_factory: RedisFactory,
    node_factory: NodeFactory,
    kafka: Broker,
    tmp_path: Path,
) -> None:
    """A node that does not write the index, with a store and truncation forced
    small: the log stays whole (nobody indexed it); a writer that starts later
    indexes all of it from the log, and then truncation goes on."""
    name, store = collection(), f"sqlite:{tmp_path / 'store.db'}"
    options = {"store": store, "audit_window_seconds": "1", "truncate_interval_seconds": "0.5"}
    first = node_factory(
        topic, redis_factory().url, semantic=semantic(milvus, name, False), **options
    )
    p = partition_for("acme", "bot-1", PARTITIONS)

    async def write(n: int) -> str:
        async with aiohttp.ClientSession() as s:
            c = Client(s, first.url)
            version = ""
            for i in range(n):
                version = await remember(c, f"k{i}", f"kept in the log {i}")
            return version

    version = run(write(15))
    time.sleep(4)  # eight truncation rounds, and the audit window long passed
    _, status = first.get_json("/v1/status")
    assert status["partitions"][str(p)]["stored"] >= 14, status["partitions"][str(p)]
    assert watermarks(kafka, topic)[p][0] == 0, "the log was truncated past the index"

    writer = node_factory(topic, redis_factory().url, semantic=semantic(milvus, name, True),
                          **options)  # fmt: skip

    async def find() -> None:
        async with aiohttp.ClientSession() as s:
            found = await search(
                writer.url, s, "/v1/tenants/acme/agents/bot-1/search", query="kept in the log",
                k=20, min_version=version,
            )  # fmt: skip
            assert len(found["items"]) == 15

    run(find())
    deadline = time.monotonic() + 30
    while watermarks(kafka, topic)[p][0] == 0:
        assert time.monotonic() < deadline, "truncation did not go on once the index caught up"
        time.sleep(0.5)
