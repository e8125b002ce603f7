"""Nothing acknowledged is ever lost: memory nodes with a durable store (PostgreSQL)
behind the log, on a real broker whose log is truncated, compacted and retained small."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis

from agentmem.directory import Directory, ShardEntry, partition_for
from agentmem.eventlog.events import Event
from agentmem.eventlog.kafka import TopicSpec, ensure_topic
from agentmem.eventlog.kafka_log import KafkaAdmin, KafkaReader
from agentmem.eventlog.ports import read_range
from agentmem.node.apply import MemoryState
from agentmem.node.state.redis import RedisState
from agentmem.store.ports import Snapshot
from agentmem.store.postgres import PostgresStore
from tests.kafka.conftest import PARTITIONS, Broker, Client, NodeProcess, RedisServer, run
from tests.postgres import PostgresServer

NodeFactory = Callable[..., NodeProcess]
RedisFactory = Callable[..., RedisServer]
UID = "uid-durability"


def new_topic(kafka: Broker, **config: str) -> str:
    """A topic with exactly this configuration (ensure_topic would force agentmem's own)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"agentmem.test.{uuid.uuid4().hex[:10]}.events"
    settings = {"min.insync.replicas": "1", "message.timestamp.type": "LogAppendTime", **config}
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1, config=settings)])[name].result(30)
    ensure_topic(kafka.settings(), TopicSpec(name, PARTITIONS, 1, {}), create=False)
    return name


def watermarks(kafka: Broker, topic: str) -> dict[int, tuple[int, int]]:
    admin = KafkaAdmin(kafka.settings(), topic)
    try:
        return admin.watermarks(range(PARTITIONS))
    finally:
        admin.close()


def stored_offsets(server: PostgresServer, schema: str) -> dict[int, int]:
    rows = server.sql(f'SELECT partition, log_offset FROM "{schema}".log_offsets')
    return {int(p): int(o) for p, o in rows}  # type: ignore[call-overload]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def store_reflects_the_log(kafka: Broker, topic: str, server: PostgresServer, schema: str) -> bool:
    stored = stored_offsets(server, schema)
    return all(stored.get(p, -1) >= high - 1 for p, (_, high) in watermarks(kafka, topic).items())


def durable_node(
    factory: NodeFactory,
    topic: str,
    redis_url: str,
    server: PostgresServer,
    schema: str,
    **more: str,
) -> NodeProcess:
    return factory(topic, redis_url, store=server.url, store_schema=schema, cluster_uid=UID, **more)


async def scenario_writes(c: Client) -> None:
    """The writes that lost 4 of 7 keys to a compacted log, each acknowledged."""
    assert (await c.put("merged", {"a": 1}))[0] == 200
    assert (await c.patch("merged", {"b": 2}))[0] == 200
    _, first = await c.put("cas", 1)
    status, won = await c.put("cas", 2, if_match=first["version"])
    assert status == 200
    assert (await c.put("cas", 3, if_match=first["version"]))[0] == 409  # lost the race
    assert (await c.put("cas-lost", "kept"))[0] == 200
    assert (await c.put("cas-lost", "other", if_match=won["version"]))[0] == 409
    assert (await c.put("fresh", "only-once", if_none_match="*"))[0] == 200
    assert (await c.put("retried", 1, request_id="req-1"))[0] == 200
    again = await c.put("retried", 2, request_id="req-1")
    assert again[0] == 200 and again[1]["duplicate"] is True
    await c.put("gone", "soon")
    assert (await c.delete("gone"))[0] == 200
    assert (await c.put("merged-2", {"x": 1}))[0] == 200
    assert (await c.patch("merged-2", {"y": 2}))[0] == 200


async def read_all(c: Client, keys: list[str]) -> dict[str, Any]:
    out = {}
    for key in keys:
        status, body = await c.get(key, consistency="strong")
        out[key] = (status, body.get("value"), body.get("version"))
    return out


KEYS = ["merged", "cas", "cas-lost", "fresh", "retried", "gone", "merged-2"]


@pytest.mark.parametrize("policy", ["delete", "compact"])
def test_a_fresh_replica_rebuilds_every_acknowledged_key_after_the_log_is_cut(
    kafka: Broker,
    redis_factory: RedisFactory,
    node_factory: NodeFactory,
    postgres: PostgresServer,
    schema: str,
    policy: str,
) -> None:
    """delete: the topic as agentmem configures it, with the broker's retention and
    agentmem's own truncation forced small. compact: a topic left compacted (the
    migration case), with compaction forced: the store makes it harmless."""
    if policy == "delete":
        topic = new_topic(kafka, **{"cleanup.policy": "delete", "segment.ms": "200"})
    else:
        topic = new_topic(
            kafka,
            **{"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "200",
               "min.cleanable.dirty.ratio": "0.01"},
        )  # fmt: skip
    # compact: no truncation by agentmem, so the cleaner's work stays visible
    window = "1" if policy == "delete" else "86400"
    writer = durable_node(
        node_factory, topic, redis_factory().url, postgres, schema,
        audit_window_seconds=window, truncate_interval_seconds="0.5",
    )  # fmt: skip
    p = partition_for("acme", "bot-1", PARTITIONS)

    async def write() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s:
            c = Client(s, writer.url)
            await scenario_writes(c)
            # more events after them, in later segments (a segment is closed by the
            # first append after segment.ms), so the cleaner and truncation have work
            for i in range(12):
                await asyncio.sleep(0.25)
                await c.put("filler", i)
            return await read_all(c, KEYS)

    expected = run(write())
    assert expected["gone"][0] == 404
    assert expected["retried"][1] == 1 and expected["merged"][1] == {"a": 1, "b": 2}
    wait_for("the store to reflect the log", lambda: store_reflects_the_log(
        kafka, topic, postgres, schema))  # fmt: skip
    if policy == "delete":
        # The log really was cut: the scenario's events are gone from it.
        wait_for("truncation", lambda: watermarks(kafka, topic)[p][0] > 10, timeout=30)
    else:
        # The cleaner really ran: some of the scenario's offsets are gone.
        def compacted() -> bool:
            reader = KafkaReader(kafka.settings(), topic)
            try:
                low, high = watermarks(kafka, topic)[p]
                reader.assign({p: low})
                return len(read_range(reader, p, low, high, 10_000)) < high - low
            finally:
                reader.close()

        wait_for("compaction", compacted, timeout=60)
    fresh = durable_node(node_factory, topic, redis_factory().url, postgres, schema)

    async def read_back() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s:
            c = Client(s, fresh.url)
            got = await read_all(c, KEYS)
            # the request id of the dedup window came back with the facts
            status, body = await c.put("retried", 3, request_id="req-1")
            assert status == 200 and body["duplicate"] is True
            return got

    assert run(read_back()) == expected


def test_waiters_are_removed_when_their_requests_time_out(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    node = node_factory(topic, redis_factory().url, wait_timeout_seconds="2")
    p = partition_for("acme", "bot-1", PARTITIONS)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, node.url)
            await c.put("k", 1)
            answers = await asyncio.gather(
                *[c.get("k", min_version=f"{p}:{10**9 + i}") for i in range(40)]
            )
            assert {status for status, _ in answers} == {504}
            assert {body["error"] for _, body in answers} == {"not_caught_up"}
            # clients that give up early (cancelled requests) leave nothing behind either
            timeout = aiohttp.ClientTimeout(total=0.3)
            for i in range(20):
                with pytest.raises(asyncio.TimeoutError):
                    await s.get(
                        f"{c.prefix}/keys/k", params={"min_version": f"{p}:{10**9 + i}"},
                        timeout=timeout,
                    )  # fmt: skip
            await asyncio.sleep(1.5)  # the next sample of the gauge
            _, text = await c.raw("GET", "/metrics")
            line = next(
                x for x in text.splitlines() if x.startswith("memory_node_waiting_requests{")
            )
            assert float(line.rsplit(" ", 1)[1]) == 0

    run(scenario())


def log_reference(
    kafka: Broker, topic: str, window_ms: int = 600_000
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The apply function over every event of the topic (what every copy must hold),
    and each event's path by version."""
    state = MemoryState(window_ms)
    paths: dict[str, bytes] = {}
    reader = KafkaReader(kafka.settings(), topic)
    try:
        for p, (low, high) in watermarks(kafka, topic).items():
            assert low == 0, "the reference needs the whole log"
            reader.assign({p: 0})
            records = read_range(reader, p, 0, high, high + 1)
            assert len(records) == high
            state.apply_batch(p, [(r.offset, r.timestamp, r.payload) for r in records])
            paths.update({f"{p}:{r.offset}": r.key for r in records})
    finally:
        reader.close()
    return state.snapshot(), paths


def store_facts(kafka: Broker, topic: str, server: PostgresServer, schema: str) -> dict[str, Any]:
    """The store's facts of every partition, in the shape of MemoryState.snapshot()."""
    admin = KafkaAdmin(kafka.settings(), topic)
    store = PostgresStore(server.url, schema)
    state = MemoryState()
    try:
        store.open(UID, admin.topic_id())
        for p in range(PARTITIONS):
            snapshot: Snapshot = store.snapshot(p)
            if snapshot.stored.offset >= 0:
                state.load(snapshot)
    finally:
        store.close()
        admin.close()
    return state.snapshot()


def test_copies_agree_with_the_reference_after_kills_and_flushes(
    kafka: Broker,
    redis_factory: RedisFactory,
    node_factory: NodeFactory,
    postgres: PostgresServer,
    schema: str,
) -> None:
    """A random workload on two replicas while one is SIGKILLed and restarted and the
    other's Redis is flushed: the store, both Redis and the reference apply function
    agree key by key (records, versions, expiries, request ids, offsets)."""
    topic = new_topic(kafka)
    redis_a, redis_b = redis_factory(), redis_factory()
    a = durable_node(node_factory, topic, redis_a.url, postgres, schema)
    b = durable_node(node_factory, topic, redis_b.url, postgres, schema)
    counts = {"tried": 0, "acknowledged": 0, "refused": 0, "faults": 0}
    acknowledged: list[tuple[str, str]] = []  # (version, path) of every applied write

    async def worker(s: aiohttp.ClientSession, stop: asyncio.Event, seed: int) -> None:
        wr = random.Random(seed)
        versions: dict[tuple[str, str], str] = {}
        while not stop.is_set():
            node = wr.choice([a, b])
            agent, key = f"agent-{wr.randrange(6)}", f"k{wr.randrange(5)}"
            c = Client(s, node.url, agent=agent)
            op = wr.choice(["put", "put", "patch", "delete", "cas", "create", "retry", "ttl"])
            counts["tried"] += 1
            try:
                if op == "put":
                    status, body = await c.put(key, {"n": wr.randrange(100)})
                elif op == "patch":
                    status, body = await c.patch(key, {f"f{wr.randrange(3)}": wr.randrange(9)})
                elif op == "delete":
                    status, body = await c.delete(key)
                elif op == "cas":
                    version = versions.get((agent, key), "0:0")
                    status, body = await c.put(key, "cas", if_match=version)
                elif op == "create":
                    status, body = await c.put(key, "new", if_none_match="*")
                elif op == "retry":
                    rid = f"r-{seed}-{agent}-{key}-{wr.randrange(5)}"
                    status, body = await c.put(key, {"rid": rid}, request_id=rid)
                else:
                    status, body = await c.put(key, "short-lived", ttl="1")
            except (aiohttp.ClientError, TimeoutError):
                counts["refused"] += 1
                await asyncio.sleep(0.05)
                continue
            if status == 200:
                counts["acknowledged"] += 1
                versions[(agent, key)] = body["version"]
                acknowledged.append((body["version"], f"acme/{agent}/{key}"))
            elif status != 409:
                counts["refused"] += 1
                await asyncio.sleep(0.05)

    async def scenario() -> None:
        stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            tasks = [asyncio.create_task(worker(s, stop, i)) for i in range(6)]
            for _ in range(2):
                await asyncio.sleep(1.5)
                await asyncio.to_thread(a.kill)  # SIGKILL, mid-write
                counts["faults"] += 1
                await asyncio.sleep(0.5)
                await asyncio.to_thread(a.start, False)
                await asyncio.sleep(1.5)
                with redis.Redis(port=redis_b.port) as client:
                    client.flushall()
                counts["faults"] += 1
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*tasks)

    run(scenario())
    a.wait_ready()
    b.wait_ready()

    def quiet() -> bool:
        before = watermarks(kafka, topic)
        time.sleep(2.5)  # ticks stop once nothing is left to expire
        return watermarks(kafka, topic) == before and store_reflects_the_log(
            kafka, topic, postgres, schema
        )

    wait_for("a quiet log reflected by the store", quiet, timeout=90)
    expected, paths = log_reference(kafka, topic)
    counts["lost"] = sum(1 for v, path in acknowledged if paths.get(v) != path.encode())
    print(f"differential: {counts}, events {len(paths)}")
    assert counts["acknowledged"] > 100 and counts["faults"] == 4
    assert counts["lost"] == 0
    wait_for("both replicas caught up", lambda: a.ready() and b.ready())
    for server in (redis_a, redis_b):
        copy = RedisState(server.url)
        try:
            assert copy.snapshot() == expected
        finally:
            copy.close_sync()
    assert store_facts(kafka, topic, postgres, schema) == expected


def test_writes_go_on_while_postgres_is_down_and_the_store_catches_up(
    kafka: Broker,
    redis_factory: RedisFactory,
    node_factory: NodeFactory,
    postgres_factory: Callable[[], PostgresServer],
    schema: str,
) -> None:
    pg = postgres_factory()
    topic = new_topic(kafka)
    node = durable_node(node_factory, topic, redis_factory().url, pg, schema)
    acked: dict[str, int] = {}
    failures: list[Any] = []
    during_outage = [0]
    outage = asyncio.Event()

    async def writer(s: aiohttp.ClientSession, w: int, stop: asyncio.Event) -> None:
        c = Client(s, node.url, agent=f"w{w}")
        i = 0
        while not stop.is_set():
            i += 1
            status, body = await c.put(f"k{i % 10}", i, request_id=f"w{w}-{i}")
            if status == 200:
                acked[f"w{w}/k{i % 10}"] = i
                during_outage[0] += outage.is_set()
            else:
                failures.append((status, body))
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(writer(s, w, stop)) for w in range(4)]
            await asyncio.sleep(1)
            await asyncio.to_thread(pg.stop)
            outage.set()
            await asyncio.sleep(3)
            _, body = node.get_json("/v1/status")
            assert "unreachable" in (body.get("store_error") or ""), body
            assert node.ready(), "a store outage must not make the node unready"
            outage.clear()
            await asyncio.to_thread(pg.start)
            await asyncio.sleep(1)
            stop.set()
            await asyncio.gather(*tasks)

    run(scenario())
    assert not failures, failures[:3]
    assert during_outage[0] > 50, "writes must go on being acknowledged while the store is down"
    wait_for("the store to catch up", lambda: store_reflects_the_log(kafka, topic, pg, schema))
    # A new replica must load from the store: while it is down, it waits and says why.
    pg.stop()
    fresh = durable_node(node_factory, topic, redis_factory().url, pg, schema, wait_ready=False)

    def waiting() -> bool:
        status, body = fresh.readyz()
        return status == 503 and "waiting for the durable store" in body.get("message", "")

    wait_for("the fresh replica to say it waits for the store", waiting, timeout=30)

    async def refused() -> None:
        async with aiohttp.ClientSession() as s:
            status, body = await Client(s, fresh.url, agent="w0").get("k1")
            assert (status, body["error"]) == (503, "rebuilding")

    run(refused())
    pg.start()
    fresh.wait_ready()

    async def check() -> None:
        async with aiohttp.ClientSession() as s:
            for path, i in acked.items():
                agent, key = path.split("/")
                status, got = await Client(s, fresh.url, agent=agent).get(key)
                assert status == 200 and got["value"] >= i

    run(check())


def test_a_partition_moved_away_and_back_comes_back_identical(
    kafka: Broker,
    redis_factory: RedisFactory,
    node_factory: NodeFactory,
    postgres: PostgresServer,
    schema: str,
    tmp_path: Any,
) -> None:
    topic = new_topic(kafka)
    shards = (ShardEntry(0, "s0", "s0:7070"), ShardEntry(1, "s1", "s1:7070"))
    table = [p % 2 for p in range(PARTITIONS)]
    path = tmp_path / "directory.json"

    def publish(epoch: int) -> None:
        staged = tmp_path / "directory.json.new"
        staged.write_text(Directory("demo", "ns", topic, epoch, tuple(table), shards).to_json())
        staged.replace(path)

    publish(1)
    server = redis_factory()
    node = durable_node(
        node_factory,
        topic,
        server.url,
        postgres,
        schema,
        shard="0",
        directory_file=str(path),
        handoff_seconds="0",
    )
    agent = next(f"a{i}" for i in range(100) if partition_for("acme", f"a{i}", PARTITIONS) % 2 == 0)
    p = partition_for("acme", agent, PARTITIONS)

    async def write() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, node.url, agent=agent)
            for i in range(20):
                assert (await c.put(f"k{i % 6}", {"i": i}, request_id=f"r{i}"))[0] == 200
            assert (await c.patch("k1", {"merged": True}))[0] == 200
            assert (await c.put("long-lived", "x", ttl="3600"))[0] == 200
            assert (await c.delete("k5"))[0] == 200

    run(write())
    wait_for("the store", lambda: store_reflects_the_log(kafka, topic, postgres, schema))
    reader = RedisState(server.url)
    before = reader.snapshot()
    assert before["records"]
    table[p] = 1  # away to shard 1
    publish(2)
    wait_for("the partition to leave", lambda: p not in reader.snapshot()["applied"])
    assert not any(k.startswith(f"acme/{agent}/") for k in reader.snapshot()["records"])
    table[p] = 0  # and back
    publish(3)
    wait_for("the partition to come back", lambda: reader.snapshot() == before)
    node.wait_ready()

    async def retry() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, node.url, agent=agent)
            status, body = await c.put("k0", "again", request_id="r0", epoch="3")
            assert status == 200 and body["duplicate"] is True
            assert (await c.get("k0"))[1]["value"] == {"i": 18}

    run(retry())
    reader.close_sync()


def test_expired_keys_leave_an_idle_partition_by_log_time(
    kafka: Broker,
    redis_factory: RedisFactory,
    node_factory: NodeFactory,
    postgres: PostgresServer,
    schema: str,
) -> None:
    """Log time stands still on a partition nobody writes; a tick event moves it on, so
    an expired key is removed from Redis and from the store, not only hidden."""
    topic = new_topic(kafka)
    server = redis_factory()
    node = durable_node(
        node_factory, topic, server.url, postgres, schema, tick_interval_seconds="0.5"
    )
    p = partition_for("acme", "bot-1", PARTITIONS)

    async def write() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, node.url)
            assert (await c.put("short", "lived", ttl="1"))[0] == 200
            assert (await c.put("kept", "forever"))[0] == 200
            await asyncio.sleep(1.2)
            assert (await c.get("short"))[0] == 404  # hidden at once by the read path

    run(write())
    rows = f'SELECT path FROM "{schema}".records WHERE partition = {p}'

    def removed() -> bool:
        with redis.Redis(port=server.port) as client:
            in_redis = client.exists("am:r:acme/bot-1/short")
        return not in_redis and [r[0] for r in postgres.sql(rows)] == ["acme/bot-1/kept"]

    wait_for("the expired key to be removed by log time", removed, timeout=30)
    reader = KafkaReader(kafka.settings(), topic)
    try:
        high = watermarks(kafka, topic)[p][1]
        reader.assign({p: 0})
        ops = [Event.decode(r.payload).op for r in read_range(reader, p, 0, high, 1000)]
    finally:
        reader.close()
    assert ops[:2] == ["put", "put"] and "tick" in ops[2:]
