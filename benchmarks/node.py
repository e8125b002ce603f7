"""Memory-node throughput and latency on a real Kafka broker and Redis, beside baselines
measured in the same run on the same machine:

- hello_rps: a bare aiohttp hello-world (the node's HTTP stack), same load generator;
- redis_get_rps: redis-py GETs on the node's Redis;
- raw_roundtrip_*: a confluent-kafka produce-then-consume round trip on the same broker.

    python benchmarks/node.py [--seconds 10] [--connections 32] [--replay-events 300000] [--store]

With ``--store`` the node writes behind into a PostgreSQL durable store, started
on the same machine (its share of the two cores shows in the write figures).

HTTP load comes from wrk (Debian's package; `make bench` installs it). Prints
a table as it goes, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Consumer, Producer, TopicPartition
from tests.controlplane.conftest import free_port
from tests.kafka.conftest import Broker, NodeProcess, RedisServer

from agentmem.eventlog.events import Event
from agentmem.eventlog.kafka import TopicSpec, ensure_topic
from agentmem.eventlog.kafka_log import KafkaAdmin, KafkaReader
from agentmem.node.state.redis import RedisState

PARTITIONS = 8
AGENTS = 1000


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# wrk ----------------------------------------------------------------------------

WRK_READ = """
math.randomseed(7)
request = function()
  return wrk.format("GET", "/v1/tenants/bench/agents/a" .. math.random(0, {agents} - 1)
    .. "/keys/state?consistency=eventual")
end
{delay}
"""

WRK_WRITE = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/tenants/bench/agents/a" .. (counter % {agents})
    .. "/keys/state", {{["Content-Type"] = "application/json"}},
    '{{"step":' .. counter .. ',"note":"benchmark payload of moderate size"}}')
end
{delay}
"""

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, script: str, seconds: int, connections: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result = {"rps": rps}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            result[f"p{pct}_ms"] = float(m.group(1)) * UNITS[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(non2xx.group(1)) if non2xx else 0.0
    return result


def paced(rate: float, connections: int) -> str:
    """A wrk delay hook that spreads `rate` requests/s over the connections."""
    return f"delay = function() return {connections * 1000.0 / rate:.3f} end"


HELLO = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    async def hello(request):
        return web.json_response({"hello": "world"})
    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
    """
)


def hello_rps(seconds: int, connections: int) -> float:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", HELLO, str(port)])
    try:
        time.sleep(1.5)
        return wrk(f"http://127.0.0.1:{port}/", "", seconds, connections)["rps"]
    finally:
        proc.terminate()
        proc.wait()


# Redis and Kafka baselines ---------------------------------------------------------


async def _redis_gets(url: str, seconds: float, concurrency: int) -> float:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, max_connections=concurrency)
    await client.set("bench:key", "x" * 64)
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await client.get("bench:key")
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.aclose()
    return done / elapsed


def raw_roundtrip(bootstrap: str, topic: str, samples: int) -> list[float]:
    """Produce one event, consume it back: milliseconds per round trip."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 1}
    )
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
         "enable.auto.commit": False, "fetch.wait.max.ms": 5, "fetch.min.bytes": 1}
    )  # fmt: skip
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, high)])
    times = []
    for i in range(samples + 50):
        start = time.perf_counter()
        producer.produce(topic, b'{"bench":%d}' % i, b"bench/raw/k%d" % (i % 100), partition=0)
        producer.poll(0)
        deadline = start + 10
        while time.perf_counter() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        else:
            raise RuntimeError("the raw round trip got no record back within 10 s")
        if i >= 50:  # warm-up
            times.append((time.perf_counter() - start) * 1000)
        producer.poll(0)
    producer.flush(10)
    consumer.close()
    return times


def replay(bootstrap: str, redis_url: str, events: int) -> float:
    """Events per second applied from the log into an empty Redis (the node's applier loop)."""
    topic = f"agentmem.bench.replay.{uuid.uuid4().hex[:8]}"
    settings_ = TopicSpec(topic, PARTITIONS, 1, {"min.insync.replicas": "1"})
    from agentmem.eventlog.kafka import KafkaSettings

    settings = KafkaSettings(bootstrap)
    ensure_topic(settings, settings_)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20})
    for i in range(events):
        agent = f"a{i % 5000}"
        value = f'{{"n":{i}}}'
        event = Event("put", "bench", agent, f"k{i % 7}", value, None, None, "", "", 0)
        producer.produce(topic, event.encode(), event.path.encode(), partition=i % PARTITIONS)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)
    store = RedisState(redis_url)
    store._sync.flushall()
    store.claim()
    reader = KafkaReader(settings, topic, fetch_wait_ms=100)
    admin = KafkaAdmin(settings, topic)
    high = admin.high_watermarks(list(range(PARTITIONS)))
    admin.close()
    reader.assign(dict.fromkeys(range(PARTITIONS), 0))
    applied = 0
    start = time.perf_counter()
    while applied < events:
        batch = reader.poll(2000, 0.5)
        by_partition: dict[int, list[Any]] = {}
        for record in batch:
            by_partition.setdefault(record.partition, []).append(record)
        for p, records in by_partition.items():
            store.apply(p, records)
        applied += len(batch)
    elapsed = time.perf_counter() - start
    assert store.applied_offsets(list(range(PARTITIONS))) == {p: h - 1 for p, h in high.items()}
    reader.close()
    store.close_sync()
    return events / elapsed


# Main ----------------------------------------------------------------------------


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the servers started are stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--replay-events", type=int, default=300_000)
    parser.add_argument("--store", action="store_true", help="with a PostgreSQL durable store")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does)")
    workdir = Path(tempfile.mkdtemp(prefix="agentmem-bench-"))
    broker = Broker(workdir / "kafka", free_port(), free_port())
    (workdir / "kafka").mkdir()
    (workdir / "redis").mkdir()
    say("starting Kafka and Redis ...")
    broker.start()
    redis_server = RedisServer(free_port(), workdir / "redis").start()
    node = None
    pg = None
    try:
        topic = "agentmem.bench.events"
        spec = TopicSpec(topic, PARTITIONS, 1, {"min.insync.replicas": "1"})
        ensure_topic(broker.settings(), spec)
        store: dict[str, str] = {}
        if args.store:
            from tests.postgres import PostgresServer

            pg = PostgresServer().init()
            store = {"store": pg.url, "store_schema": "bench"}
        node = NodeProcess(broker, topic, redis_server.url, workdir / "node.log", **store).start()
        say(f"node ready at {node.url}; preloading {AGENTS} agents")
        base = f"{node.url}/"
        s, c = args.seconds, args.connections
        wrk(base, WRK_WRITE.format(agents=AGENTS, delay=""), 3, c)  # preload every agent

        hello = hello_rps(s, c)
        say(f"hello-world (aiohttp):        {hello:9.0f} req/s")
        read_max = wrk(base, WRK_READ.format(agents=AGENTS, delay=""), s, c)
        say(
            f"node reads, max load:         {read_max['rps']:9.0f} req/s  "
            f"p99 {read_max['p99_ms']:.2f} ms"
        )
        half = read_max["rps"] / 2
        read_half = wrk(base, WRK_READ.format(agents=AGENTS, delay=paced(half, c)), s, c)
        say(
            f"node reads at {half:.0f}/s:       {read_half['rps']:9.0f} req/s  "
            f"p50 {read_half['p50_ms']:.2f} ms  p99 {read_half['p99_ms']:.2f} ms"
        )
        redis_rps = asyncio.run(_redis_gets(redis_server.url, s / 2, c))
        say(f"redis-py GET:                 {redis_rps:9.0f} req/s")
        write_max = wrk(base, WRK_WRITE.format(agents=AGENTS, delay=""), s, c)
        say(
            f"node writes, max load:        {write_max['rps']:9.0f} req/s  "
            f"p99 {write_max['p99_ms']:.2f} ms"
        )
        write_one = wrk(base, WRK_WRITE.format(agents=AGENTS, delay=""), s, 1)
        say(
            f"node writes, one at a time:   {write_one['rps']:9.0f} req/s  "
            f"p50 {write_one['p50_ms']:.2f} ms  p99 {write_one['p99_ms']:.2f} ms"
        )
        node.kill(signal.SIGTERM)
        node = None
        raw = raw_roundtrip(broker.bootstrap, topic, 2000)
        raw_p50, raw_p99 = statistics.median(raw), statistics.quantiles(raw, n=100)[98]
        say(f"raw Kafka round trip:         p50 {raw_p50:.2f} ms  p99 {raw_p99:.2f} ms")
        replay_rate = replay(broker.bootstrap, redis_server.url, args.replay_events)
        say(f"replay into an empty Redis:   {replay_rate:9.0f} events/s")
        errors = sum(r["errors"] for r in (read_max, read_half, write_max, write_one))
        summary = {
            "store": bool(args.store),
            "read_rps": round(read_max["rps"]),
            "read_p50_ms": round(read_half["p50_ms"], 3),
            "read_p99_ms": round(read_half["p99_ms"], 3),
            "read_half_load_rps": round(read_half["rps"]),
            "read_p99_ms_max_load": round(read_max["p99_ms"], 3),
            "hello_rps": round(hello),
            "read_over_hello": round(read_max["rps"] / hello, 3),
            "redis_get_rps": round(redis_rps),
            "write_rps": round(write_max["rps"]),
            "write_p50_ms": round(write_one["p50_ms"], 3),
            "write_p99_ms": round(write_one["p99_ms"], 3),
            "write_p99_ms_max_load": round(write_max["p99_ms"], 3),
            "raw_roundtrip_p50_ms": round(raw_p50, 3),
            "raw_roundtrip_p99_ms": round(raw_p99, 3),
            "write_p99_over_raw": round(write_one["p99_ms"] / raw_p99, 3),
            "replay_events_per_s": round(replay_rate),
            "http_errors": int(errors),
        }
        print(json.dumps(summary))
        return 0
    finally:
        if node is not None:
            node.kill(signal.SIGTERM)
        if pg is not None:
            pg.destroy()
        redis_server.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
