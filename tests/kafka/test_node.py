"""The memory node on a real Kafka broker and a real Redis."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis

from agentmem.directory import partition_for
from agentmem.eventlog.kafka import TopicMismatchError, TopicSpec, ensure_topic
from agentmem.node.state.redis import RedisState
from tests.kafka.conftest import PARTITIONS, Broker, Client, NodeProcess, RedisServer, run

NodeFactory = Callable[..., NodeProcess]
RedisFactory = Callable[..., RedisServer]


def log_end(broker: Broker, topic: str) -> int:
    """Events in the topic (all partitions)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


# 5.1 API semantics ------------------------------------------------------------


def test_api_semantics(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    node = node_factory(topic, redis_factory().url)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, node.url)
            status, body = await c.put("plan", {"goal": "explore", "steps": [1, 2]})
            assert status == 200 and body["duplicate"] is False
            v1 = body["version"]
            p = partition_for("acme", "bot-1", PARTITIONS)
            assert v1.startswith(f"{p}:")
            status, got = await c.get("plan")
            assert status == 200
            assert got["value"] == {"goal": "explore", "steps": [1, 2]}
            assert got["version"] == v1

            # merge patch
            status, body = await c.patch("plan", {"steps": None, "done": True})
            assert status == 200
            status, got = await c.get("plan", consistency="strong")
            assert got["value"] == {"goal": "explore", "done": True}

            # compare-and-set: stale version -> 409 with the current version
            status, body = await c.put("plan", 1, if_match=v1)
            assert status == 409 and body["current_version"] == got["version"]
            status, body = await c.put("plan", 2, if_match=got["version"])
            assert status == 200
            status, body = await c.put("plan", 3, if_none_match="*")
            assert status == 409
            status, body = await c.put("fresh", 3, if_none_match="*")
            assert status == 200

            # request ids make retries safe
            first = await c.put("counter", 1, request_id="req-42")
            again = await c.put("counter", 99, request_id="req-42")
            assert first[0] == again[0] == 200
            assert again[1]["version"] == first[1]["version"] and again[1]["duplicate"] is True
            assert (await c.get("counter"))[1]["value"] == 1

            # TTL
            status, _ = await c.put("ephemeral", "x", ttl="1")
            assert status == 200
            assert (await c.get("ephemeral"))[0] == 200
            await asyncio.sleep(1.2)
            assert (await c.get("ephemeral"))[0] == 404

            # delete, list, batch get
            assert (await c.delete("fresh"))[0] == 200
            assert (await c.get("fresh"))[0] == 404
            status, listing = await c.raw("GET", "/v1/tenants/acme/agents/bot-1/keys")
            assert listing["keys"] == ["counter", "plan"]
            status, batch = await c.raw(
                "POST",
                "/v1/tenants/acme/agents/bot-1/batch-get",
                json={"keys": ["plan", "nope", "counter"]},
            )
            assert status == 200
            assert [i and i["value"] for i in batch["items"]] == [2, None, 1]

            # tenants are isolated: same agent and key, other tenant
            other = Client(s, node.url, tenant="globex")
            assert (await other.get("plan"))[0] == 404
            await other.put("plan", "theirs")
            assert (await c.get("plan"))[1]["value"] == 2

            # history from the log, with outcomes
            status, hist = await c.raw("GET", "/v1/tenants/acme/agents/bot-1/history")
            ops = [(e["key"], e["op"], e["outcome"]) for e in hist["events"]]
            assert ops[:3] == [("plan", "put", "applied"), ("plan", "merge", "applied"),
                               ("plan", "put", "conflict")]  # fmt: skip
            assert ("counter", "put", "duplicate") in ops
            assert all(e["key"] != "plan" or e["value"] != "theirs" for e in hist["events"])

            # session read with a version token
            status, body = await c.put("plan", {"v": 3})
            status, got = await c.get("plan", consistency="session", min_version=body["version"])
            assert got["value"] == {"v": 3}

            # metrics
            status, text = await c.raw("GET", "/metrics")
            assert "memory_node_read_latency_seconds_bucket" in text
            assert "memory_node_write_latency_seconds_count" in text

    run(scenario())


def test_watch_stream_resumes_from_a_version(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    node = node_factory(topic, redis_factory().url)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, node.url)
            _, first = await c.put("a", 1)
            _, second = await c.put("b", 2)
            status, _ = await c.put("a", 3, if_match=second["version"])
            assert status == 409  # a conflict is not a change
            seen: list[tuple[str, Any]] = []

            async def reader() -> None:
                async with s.get(
                    f"{c.prefix}/watch", params={"after": first["version"]}
                ) as r:  # fmt: skip
                    assert r.status == 200
                    async for line in r.content:
                        if line.startswith(b"data: "):
                            entry = json.loads(line[6:])
                            seen.append((entry["key"], entry["value"]))
                            if len(seen) == 3:
                                return

            task = asyncio.create_task(reader())
            await asyncio.sleep(0.5)
            await c.put("c", 4)
            await c.delete("b")
            await asyncio.wait_for(task, 15)
            assert seen == [("b", 2), ("c", 4), ("b", None)]

    run(scenario())


# 3. bad input ---------------------------------------------------------------------


def put(data: str, content_type: str = "application/json", **headers: str) -> dict[str, Any]:
    """Keyword arguments for a request with a body."""
    extra = {k.replace("_", "-"): v for k, v in headers.items()}
    return {"data": data, "headers": {"Content-Type": content_type, **extra}}


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("PUT", "/keys/k", put("{"), 400, "invalid_json"),
    ("PUT", "/keys/k", put("1", "text/plain"), 415, "unsupported_media_type"),
    ("PUT", "/keys/k", put("[" + "1," * 40000 + "1]"), 413, "too_large"),
    ("PUT", "/keys/bad%20key", put("1"), 400, "invalid_name"),
    ("PUT", "/keys/" + "k" * 600, put("1"), 400, "invalid_name"),
    ("PUT", "/keys/k?ttl=-5", put("1"), 400, "invalid_ttl"),
    ("PUT", "/keys/k", put("1", If_Match="banana"), 400, "invalid_version"),
    ("PUT", "/keys/k", put("1", If_Match="999:1"), 400, "unknown_partition"),
    ("PUT", "/keys/k", put("1", X_Request_Id="no spaces"), 400, "invalid_request_id"),
    ("PUT", "/keys/k", put("1", X_Agentmem_Epoch="x"), 400, "invalid_epoch"),
    ("GET", "/keys/k?consistency=linear", {}, 400, "invalid_consistency"),
    ("GET", "/keys/k?min_version=9999:0", {}, 400, "unknown_partition"),
    ("PATCH", "/keys/k", put("{}", "text/plain"), 415, "unsupported_media_type"),
    ("POST", "/batch-get", {"json": {"keys": []}}, 400, "invalid_batch"),
]


def test_bad_input_gets_a_clear_4xx_and_appends_nothing(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    node = node_factory(topic, redis_factory().url, max_value_bytes="65536")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, node.url)
            base = "/v1/tenants/acme/agents/bot-1"
            for method, path, kwargs, status, code in BAD_REQUESTS:
                got, body = await c.raw(method, base + path, **kwargs)
                assert (got, body["error"]) == (status, code), (method, path, body)
                assert body["message"]
            got, body = await c.raw("GET", "/v1/tenants/ac!me/agents/bot-1/keys/k")
            assert got == 400 and "tenant" in body["message"]

    before = log_end(kafka, topic)
    run(scenario())
    assert log_end(kafka, topic) == before, "a refused request reached the log"


def test_directory_redirects_and_stale_epochs(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory, tmp_path: Any
) -> None:
    from agentmem.directory import Directory, ShardEntry

    table = tuple(0 if p % 2 == 0 else 1 for p in range(PARTITIONS))
    shards = (ShardEntry(0, "s0", "s0.ns.svc:7070"), ShardEntry(1, "s1", "s1.ns.svc:7070"))
    path = tmp_path / "directory.json"
    path.write_text(Directory("demo", "ns", topic, 3, table, shards).to_json())
    node = node_factory(topic, redis_factory().url, shard="0", directory_file=str(path))
    mine = next(f"a{i}" for i in range(100) if partition_for("acme", f"a{i}", PARTITIONS) % 2 == 0)
    theirs = next(f"a{i}" for i in range(100) if partition_for("acme", f"a{i}", PARTITIONS) % 2)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            ok = Client(s, node.url, agent=mine)
            assert (await ok.put("k", 1, epoch="3"))[0] == 200
            other = Client(s, node.url, agent=theirs)
            async with s.put(
                f"{other.prefix}/keys/k", data="1", allow_redirects=False,
                headers={"Content-Type": "application/json"},
            ) as r:  # fmt: skip
                body = await r.json()
                assert r.status == 307
                assert r.headers["Location"] == "http://s1.ns.svc:7070"
                assert body["owner"]["shard"] == 1 and body["epoch"] == 3
            status, body = await ok.put("k", 2, epoch="4")
            assert status == 421 and body["error"] == "stale_node"

    before = log_end(kafka, topic)
    run(scenario())
    assert log_end(kafka, topic) == before + 1


# 5.2 compare-and-set races ------------------------------------------------------------


def test_two_nodes_race_compare_and_set(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    redis_a, redis_b = redis_factory(), redis_factory()
    a = node_factory(topic, redis_a.url)
    b = node_factory(topic, redis_b.url)
    rounds = 1000

    async def scenario() -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as s:
            ca, cb = Client(s, a.url), Client(s, b.url)
            _, body = await ca.put("contended", {"round": -1})
            version = body["version"]
            winners = {"a": 0, "b": 0}
            for i in range(rounds):
                ra, rb = await asyncio.gather(
                    ca.put("contended", {"round": i, "by": "a"}, if_match=version),
                    cb.put("contended", {"round": i, "by": "b"}, if_match=version),
                )
                statuses = sorted([ra[0], rb[0]])
                assert statuses == [200, 409], (i, ra, rb)
                winner = ra if ra[0] == 200 else rb
                winners["a" if winner is ra else "b"] += 1
                version = winner[1]["version"]
                # the loser was told where the key is now
                loser = rb if winner is ra else ra
                assert loser[1]["current_version"] == version
            assert winners["a"] + winners["b"] == rounds
            for c in (ca, cb):
                _, got = await c.get("contended", consistency="strong")
                assert got["version"] == version

    run(scenario())
    time.sleep(0.5)
    store_a, store_b = RedisState(redis_a.url), RedisState(redis_b.url)
    assert store_a.snapshot() == store_b.snapshot()
    store_a.close_sync()
    store_b.close_sync()


# 5.3 SIGKILL during writes ------------------------------------------------------------


def test_killed_node_keeps_every_acknowledged_write(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    store = redis_factory()
    node = node_factory(topic, store.url)
    acked: dict[str, tuple[int, str]] = {}
    sent: dict[str, int] = {}

    async def writer(s: aiohttp.ClientSession, worker: int) -> None:
        c = Client(s, node.url, agent=f"w{worker}")
        for i in range(100_000):
            key = f"k{i % 50}"
            sent[f"w{worker}/{key}"] = i
            try:
                status, body = await c.put(key, {"i": i, "pad": "x" * 64})
            except (TimeoutError, aiohttp.ClientError):
                return
            if status == 200:
                acked[f"w{worker}/{key}"] = (i, body["version"])

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(writer(s, w)) for w in range(8)]
            await asyncio.sleep(3)
            node.kill()
            await asyncio.gather(*tasks)

    run(scenario())
    assert len(acked) > 50
    node.start()

    async def check() -> None:
        async with aiohttp.ClientSession() as s:
            for path, (i, version) in acked.items():
                agent, key = path.split("/")
                status, got = await Client(s, node.url, agent=agent).get(key, min_version=version)
                assert status == 200
                # the newest acknowledged write or a later (possibly unacknowledged) one;
                # never an older value, never a torn one
                assert got["value"]["i"] >= i and got["value"]["pad"] == "x" * 64
                assert int(got["version"].split(":")[1]) >= int(version.split(":")[1])

    run(check())


# 5.4 Redis emptied -------------------------------------------------------------------


def test_node_rebuilds_an_emptied_store_and_is_unready_meanwhile(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    store = redis_factory()
    node = node_factory(topic, store.url)

    async def fill() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s:
            out = {}
            for agent in range(20):
                c = Client(s, node.url, agent=f"agent-{agent}")
                writes = [c.put(f"k{k}", {"agent": agent, "k": k}) for k in range(100)]
                await asyncio.gather(*writes)
                out[f"agent-{agent}"] = (await c.get("k99"))[1]
            return out

    before = run(fill())
    reader = RedisState(store.url)
    snapshot = reader.snapshot()
    with redis.Redis(port=store.port) as client:
        client.flushall()
    saw_unready = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = node.ready()
        saw_unready |= not ready
        if saw_unready and ready:
            break
        time.sleep(0.02)
    assert saw_unready, "the node stayed ready with an empty store"
    assert reader.snapshot()["records"] == snapshot["records"]
    reader.close_sync()

    async def check() -> None:
        async with aiohttp.ClientSession() as s:
            for agent, got in before.items():
                assert (await Client(s, node.url, agent=agent).get("k99"))[1] == got

    run(check())


# 5.5 broker restart --------------------------------------------------------------------


def test_broker_restart_during_writes(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    node = node_factory(topic, redis_factory().url)
    acked: dict[str, int] = {}
    failures: list[tuple[int, str]] = []

    async def writer(s: aiohttp.ClientSession, worker: int, stop: asyncio.Event) -> None:
        c = Client(s, node.url, agent=f"w{worker}")
        i = 0
        while not stop.is_set():
            i += 1
            try:
                status, body = await c.put(f"k{i % 20}", i, request_id=f"w{worker}-{i}")
            except aiohttp.ClientError as exc:
                failures.append((0, str(exc)))
                continue
            if status == 200:
                acked[f"w{worker}/k{i % 20}"] = i
            else:
                failures.append((status, body["error"]))
                await asyncio.sleep(0.05)

    async def scenario() -> None:
        stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            tasks = [asyncio.create_task(writer(s, w, stop)) for w in range(4)]
            await asyncio.sleep(1)
            await asyncio.to_thread(kafka.stop)
            await asyncio.sleep(2)
            await asyncio.to_thread(kafka.start)
            await asyncio.sleep(8)
            stop.set()
            await asyncio.gather(*tasks)

    run(scenario())
    assert {status for status, _ in failures} <= {503, 504}, failures[:5]
    # retryable, and saying so: the log refused or lost contact, or the outcome came late
    assert all(e in ("log_unavailable", "unavailable", "apply_timeout") for _, e in failures)

    async def check() -> None:
        async with aiohttp.ClientSession() as s:
            # recovered without a restart: writes and strong reads work again
            c = Client(s, node.url, agent="after")
            assert (await c.put("k", "ok"))[0] == 200
            for path, i in acked.items():
                agent, key = path.split("/")
                status, got = await Client(s, node.url, agent=agent).get(key, consistency="strong")
                assert status == 200 and got["value"] >= i

    run(check())
    assert node.ready()


# 5.6 session and strong reads across replicas ------------------------------------------------


def test_session_and_strong_reads_on_another_replica(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    a = node_factory(topic, redis_factory().url)
    b = node_factory(topic, redis_factory().url)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            ca, cb = Client(s, a.url), Client(s, b.url)
            for i in range(200):
                _, body = await ca.put(f"k{i % 7}", i)
                status, got = await cb.get(
                    f"k{i % 7}", consistency="session", min_version=body["version"]
                )
                assert status == 200 and got["value"] == i
            written = {}
            for i in range(50):
                agent = f"agent-{random.randrange(1000)}"
                _, body = await Client(s, a.url, agent=agent).put("x", i)
                written[agent] = i
            for agent, i in written.items():
                status, got = await Client(s, b.url, agent=agent).get("x", consistency="strong")
                assert status == 200 and got["value"] == i

    run(scenario())


# 5.7 direct topic management -------------------------------------------------------------


def test_direct_topic_management(kafka: Broker) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    from agentmem.model import AgentMemoryCluster
    from agentmem.resources import topic_config

    cluster = AgentMemoryCluster.from_api(
        {
            "apiVersion": "agentmem.io/v1alpha1",
            "kind": "AgentMemoryCluster",
            "metadata": {"name": "direct", "namespace": "test"},
            "spec": {
                "partitions": 12,
                "eventLog": {"kafka": {
                    "bootstrapServers": kafka.bootstrap, "topicManagement": "direct",
                    "replicas": 1, "minInSyncReplicas": 1, "config": {"auditWindowHours": 48},
                }},
            },
        }
    )  # fmt: skip
    spec = TopicSpec(cluster.topic, 12, 1, topic_config(cluster))
    assert ensure_topic(kafka.settings(), spec) == "created"
    assert ensure_topic(kafka.settings(), spec) == "exists"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    assert len(admin.list_topics(cluster.topic, timeout=10).topics[cluster.topic].partitions) == 12
    resource = ConfigResource(ResourceType.TOPIC, cluster.topic)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["cleanup.policy"].value == "delete"
    assert configs["retention.ms"].value == "-1"  # no durable store: the log is the state
    assert configs["message.timestamp.type"].value == "LogAppendTime"

    wrong = TopicSpec(cluster.topic, 16, 1, {})
    with pytest.raises(TopicMismatchError, match="has 12 partitions but the cluster has 16"):
        ensure_topic(kafka.settings(), wrong)
    with pytest.raises(TopicMismatchError, match="does not exist"):
        ensure_topic(kafka.settings(), TopicSpec("agentmem.missing", 4, 1, {}), create=False)


def test_node_refuses_a_topic_with_another_partition_count(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    with pytest.raises(
        RuntimeError, match="the event log has 8 partitions but this cluster has 16"
    ):
        node_factory(topic, redis_factory().url, partitions="16")


def test_restarted_node_drops_partitions_it_no_longer_owns(
    kafka: Broker,
    topic: str,
    redis_factory: RedisFactory,
    node_factory: NodeFactory,
    tmp_path: Any,
) -> None:
    from agentmem.directory import Directory, ShardEntry

    store = redis_factory()
    node = node_factory(topic, store.url)  # no directory: serves every partition

    async def fill() -> None:
        async with aiohttp.ClientSession() as s:
            for i in range(40):
                assert (await Client(s, node.url, agent=f"a{i}").put("k", i))[0] == 200

    run(fill())
    node.kill()
    # While it was down, the directory gave the odd partitions to another shard.
    path = tmp_path / "directory.json"
    table = tuple(p % 2 for p in range(PARTITIONS))
    shards = (ShardEntry(0, "s0", "s0:7070"), ShardEntry(1, "s1", "s1:7070"))
    path.write_text(Directory("demo", "ns", topic, 2, table, shards).to_json())
    node.options.update(shard="0", directory_file=str(path))
    node.start()
    reader = RedisState(store.url)
    kept = {int(k.decode().rsplit(":", 1)[1]) for k in reader._sync.keys("am:applied:*")}
    reader.close_sync()
    assert kept == {p for p in range(PARTITIONS) if p % 2 == 0}

    async def check() -> None:
        async with aiohttp.ClientSession() as s:
            for i in range(40):
                p = partition_for("acme", f"a{i}", PARTITIONS)
                url = f"{Client(s, node.url, agent=f'a{i}').prefix}/keys/k"
                async with s.get(url, allow_redirects=False) as r:
                    assert r.status == (200 if p % 2 == 0 else 307)

    run(check())
