"""Faults a memory node meets in production, each produced for real: an emptied or
stalled Redis, a Redis out of memory, a broker that is down, a lagging replica,
history paged through a long log, many strong reads at once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import aiohttp
import redis

from agentmem.directory import partition_for
from agentmem.node.state.redis import RedisState
from tests.kafka.conftest import PARTITIONS, Broker, Client, NodeProcess, RedisServer, run

NodeFactory = Callable[..., NodeProcess]
RedisFactory = Callable[..., RedisServer]


def metric(node: NodeProcess, name: str) -> float:
    """The value of one of the node's metrics (summed over its label sets)."""
    import urllib.request

    with urllib.request.urlopen(f"{node.url}/metrics", timeout=5) as r:
        text = r.read().decode()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if re.match(rf"^{re.escape(name)}(\{{| )", line)
    ]
    assert values, f"{name} is not exported"
    return sum(values)


@contextmanager
def stalled(server: RedisServer) -> Iterator[None]:
    """Redis frozen (SIGSTOP): it holds connections and answers nothing."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def test_a_read_right_after_redis_is_flushed_never_misses_an_acknowledged_key(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    server = redis_factory()
    node = node_factory(topic, server.url)
    counts = {"ok": 0, "rebuilding": 0, "missed": 0, "unready": 0}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, node.url)
            written = {}
            for i in range(300):
                _, body = await c.put(f"k{i}", i)
                written[f"k{i}"] = body["version"]
            with redis.Redis(port=server.port) as client:
                client.flushall()
            # At once, before the applier's periodic check: none of these keys is in
            # the node's cache, so every read goes to the emptied Redis.
            for key, version in written.items():
                status, body = await c.get(key, consistency="strong")
                if status == 200:
                    assert body["version"] == version
                    counts["ok"] += 1
                elif status == 503 and body["error"] == "rebuilding":
                    counts["rebuilding"] += 1
                    if not node.ready():
                        counts["unready"] += 1
                else:
                    counts["missed"] += 1
                    raise AssertionError(f"{key}: {status} {body}")

    run(scenario())
    print(f"reads after the flush: {counts}")
    assert counts["missed"] == 0
    assert counts["rebuilding"] > 0 and counts["unready"] > 0
    node.wait_ready()


def test_strong_reads_and_history_answer_json_503_while_the_broker_is_down(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    node = node_factory(topic, redis_factory().url)

    async def scenario() -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            c = Client(s, node.url)
            assert (await c.put("k", 1))[0] == 200
            await asyncio.to_thread(kafka.stop)
            try:
                status, body = await c.get("k", consistency="strong")
                assert (status, body["error"]) == (503, "log_unavailable"), body
                assert "consistency=session" in body["message"]
                status, body = await c.raw("GET", "/v1/tenants/acme/agents/bot-1/history")
                assert (status, body["error"]) == (503, "log_unavailable"), body
                status, body = await c.get("k", consistency="eventual")  # local state: served
                assert status == 200 and body["value"] == 1
            finally:
                await asyncio.to_thread(kafka.start)

    run(scenario())
    node.wait_ready(timeout=120)


def test_lag_is_measured_against_the_high_watermark(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    writer = node_factory(topic, redis_factory().url)
    behind_server = redis_factory()
    behind = node_factory(topic, behind_server.url)

    async def write(n: int) -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, writer.url)
            for i in range(n):
                await c.put(f"k{i}", i)

    run(write(5))
    time.sleep(3)  # idle: nothing is behind, however old the newest event is
    for node in (writer, behind):
        assert metric(node, "memory_node_event_lag_messages") == 0
        assert metric(node, "memory_node_event_lag_seconds") == 0
    with stalled(behind_server):
        run(write(40))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if metric(behind, "memory_node_event_lag_seconds") >= 2:
                break
            time.sleep(0.5)
        assert metric(behind, "memory_node_event_lag_messages") >= 40
        assert metric(behind, "memory_node_event_lag_seconds") >= 2
    deadline = time.monotonic() + 30
    while metric(behind, "memory_node_event_lag_messages") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metric(behind, "memory_node_event_lag_messages") == 0
    assert metric(behind, "memory_node_event_lag_seconds") == 0


def test_patch_with_if_match_is_checked_against_a_caught_up_state(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    a = node_factory(topic, redis_factory().url)
    lagging_server = redis_factory()
    b = node_factory(topic, lagging_server.url)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            ca, cb = Client(s, a.url), Client(s, b.url)
            _, first = await ca.put("doc", {"a": 1})
            await cb.get("doc", min_version=first["version"])
            with stalled(lagging_server):
                _, second = await ca.put("doc", {"a": 2})  # b has not seen this yet
                patch = asyncio.create_task(cb.patch("doc", {"b": 3}, if_match=second["version"]))
                await asyncio.sleep(0.5)
            status, body = await patch
            assert status == 200, body
            _, got = await ca.get("doc", consistency="strong")
            assert got["value"] == {"a": 2, "b": 3}

    run(scenario())


def test_redis_out_of_memory_does_not_wedge_the_applier(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    writer_server = redis_factory()
    writer = node_factory(topic, writer_server.url)
    full_server = redis_factory(maxmemory="4mb")
    full = node_factory(topic, full_server.url)
    value = "x" * 60_000

    async def fill() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, writer.url)
            for i in range(120):  # about 7 MB: more than the full node's Redis holds
                assert (await c.put(f"big{i}", value))[0] == 200

    run(fill())
    deadline = time.monotonic() + 30
    status, body = full.readyz()
    while "full" not in body.get("message", "") and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = full.readyz()
    assert status == 503 and "full" in body["message"], body
    assert full.get_json("/livez")[0] == 200  # alive: it keeps trying, never wedged

    async def refused_and_served() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, full.url)
            status, body = await c.put("one-more", 1)
            assert status in (503, 507), body  # refused before it reaches the log
            assert (await c.get("big0", consistency="eventual"))[0] in (200, 404)

    run(refused_and_served())
    with redis.Redis(port=full_server.port) as client:
        client.config_set("maxmemory", "0")
    full.wait_ready(timeout=60)
    copies = [RedisState(server.url) for server in (writer_server, full_server)]
    try:
        snapshots = [copy.snapshot() for copy in copies]
        assert snapshots[0] == snapshots[1]
    finally:
        for copy in copies:
            copy.close_sync()


def test_history_pages_continue_from_their_cursor(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    node = node_factory(topic, redis_factory().url)
    p = partition_for("acme", "bot-1", PARTITIONS)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            c = Client(s, node.url)
            for i in range(300):
                await c.put(f"k{i % 7}", i)
            scanned = metric(node, "memory_node_history_scanned_events_total")
            seen: list[int] = []
            after: str | None = None
            pages = 0
            while True:
                params = {"limit": "40", **({"after": after} if after else {})}
                status, body = await c.raw(
                    "GET", "/v1/tenants/acme/agents/bot-1/history", params=params
                )
                assert status == 200
                pages += 1
                seen += [e["offset"] for e in body["events"]]
                if not body["events"]:
                    break
                after = body["next_after"]
            assert pages >= 8
            assert seen == sorted(set(seen)) and len(seen) == 300
            read = metric(node, "memory_node_history_scanned_events_total") - scanned
            # one pass over the partition, not one per page
            assert read <= 300 + 40, (read, pages)
            assert after is not None and after.startswith(f"{p}:")

    run(scenario())


def test_concurrent_strong_reads_share_their_log_queries(
    kafka: Broker, topic: str, redis_factory: RedisFactory, node_factory: NodeFactory
) -> None:
    node = node_factory(topic, redis_factory().url)

    async def scenario() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            clients = [Client(s, node.url, agent=f"a{i}") for i in range(20)]
            for i, c in enumerate(clients):
                await c.put("k", i)
            before = metric(node, "memory_node_high_watermark_queries_total")
            answers = await asyncio.gather(
                *[c.get("k", consistency="strong") for c in clients for _ in range(10)]
            )
            assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][
                :3
            ]
            assert [b["value"] for _, b in answers] == [i for i in range(20) for _ in range(10)]
            queries = metric(node, "memory_node_high_watermark_queries_total") - before
            print(f"200 concurrent strong reads took {queries:.0f} log queries")
            assert queries < 100

    run(scenario())
