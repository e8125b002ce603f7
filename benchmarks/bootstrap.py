"""Warming a replica from the durable store vs replaying the log, and the store's
write-behind lag under write load; real Kafka, Redis and PostgreSQL, same run.

1. A partition with ``--events`` events (default 1,000,000) over ``--keys`` keys
   (default 10,000) is written to the log, and a node with a store writes its
   facts behind (``store_fill_events_per_s``: the write-behind's throughput
   while a whole log is replayed).
2. A new replica with an empty Redis warms up: from the store (load the rows,
   replay the rest), and, as the baseline, from the log alone (replay every
   event). Each is timed from the node's start to its readiness, in this
   process, alternately ``--rounds`` times (``store_warm_s``,
   ``log_replay_warm_s``: medians).
3. Under the node benchmark's write load (wrk, 32 connections), how long after
   its log time each event is reflected by the store: PostgreSQL's offsets are
   polled every 10 ms and matched with every event's log time afterwards
   (``store_lag_p50_s``, ``store_lag_p99_s``, ``store_lag_max_s``).

    python benchmarks/bootstrap.py [--events 1000000] [--keys 10000] [--rounds 2]

Prints progress as it goes, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.node import WRK_WRITE, wrk
from confluent_kafka import Producer
from tests.kafka.conftest import Broker, NodeProcess, RedisServer
from tests.net import free_port
from tests.postgres import PostgresServer

from agentmem.eventlog.events import Event
from agentmem.eventlog.kafka import TopicSpec, ensure_topic
from agentmem.eventlog.kafka_log import KafkaAdmin, KafkaReader
from agentmem.eventlog.ports import read_range
from agentmem.node.main import build
from agentmem.node.settings import NodeSettings

LAG_PARTITIONS = 8


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fill_log(bootstrap: str, topic: str, events: int, keys: int) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1 << 20,
         "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    for i in range(events):
        key = f"k{i % keys}"
        op = "delete" if i % 97 == 0 else "put"
        value = None if op == "delete" else f'{{"n":{i},"note":"state of moderate size"}}'
        rid = f"r{i}" if i % 10 == 0 else ""
        event = Event(op, "bench", f"a{i % 100}", key, value, None, None, rid, "bench", 0)  # type: ignore[arg-type]
        while True:
            try:
                producer.produce(topic, event.encode(), event.path.encode(), partition=0)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 50_000 == 0:
            producer.poll(0)
            say(f"  {i:>9} events produced")
    producer.flush(120)


def stored_offsets(pg: PostgresServer, schema: str) -> dict[int, int]:
    import psycopg

    try:
        rows = pg.sql(f'SELECT partition, log_offset FROM "{schema}".log_offsets')
    except psycopg.errors.UndefinedTable:
        return {}  # not created yet: the node creates its schema when it starts
    return {int(str(p)): int(str(o)) for p, o in rows}


def highs(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    from agentmem.eventlog.kafka import KafkaSettings

    admin = KafkaAdmin(KafkaSettings(bootstrap), topic)
    try:
        return admin.high_watermarks(range(partitions))
    finally:
        admin.close()


async def warm(settings: NodeSettings) -> float:
    """Seconds from a node's start to its readiness (every partition caught up)."""
    node = build(settings)
    started = time.perf_counter()
    await node.start()
    try:
        while node.readiness() is not None:
            await asyncio.sleep(0.01)
        return time.perf_counter() - started
    finally:
        await node.stop()


def fresh_redis(workdir: Path, name: str) -> RedisServer:
    path = workdir / name
    path.mkdir()
    return RedisServer(free_port(), path).start()


def store_lag(
    broker: Broker, pg: PostgresServer, workdir: Path, seconds: int, connections: int
) -> dict[str, Any]:
    topic = "agentmem.bench.lag"
    ensure_topic(broker.settings(), TopicSpec(topic, LAG_PARTITIONS, 1, {}))
    schema = "bench_lag"
    redis_server = fresh_redis(workdir, "redis-lag")
    node = NodeProcess(
        broker, topic, redis_server.url, workdir / "node-lag.log",
        partitions=str(LAG_PARTITIONS), store=pg.url, store_schema=schema,
    ).start()  # fmt: skip
    samples: list[tuple[float, dict[int, int]]] = []
    stop = threading.Event()

    def poll() -> None:
        import psycopg

        query = f'SELECT partition, log_offset FROM "{schema}".log_offsets'.encode()
        with psycopg.connect(pg.url, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(query).fetchall()
                samples.append((time.time(), {int(p): int(o) for p, o in rows}))
                time.sleep(0.01)

    try:
        wrk(f"{node.url}/", WRK_WRITE.format(agents=1000, delay=""), 2, connections)  # warm-up
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        load = wrk(f"{node.url}/", WRK_WRITE.format(agents=1000, delay=""), seconds, connections)
        end = highs(broker.bootstrap, topic, LAG_PARTITIONS)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(samples[-1][1].get(p, -1) >= h - 1 for p, h in end.items()):
                break
            time.sleep(0.1)
        stop.set()
        poller.join()
    finally:
        node.kill()
        redis_server.stop()
    lags = []
    reader = KafkaReader(broker.settings(), topic)
    for p, high in end.items():
        reader.assign({p: 0})
        records = read_range(reader, p, 0, high, high + 1)
        i = 0
        for record in records:
            if record.timestamp / 1000 < samples[0][0]:
                continue  # written before the polling started: its lag is not known
            while i < len(samples) and samples[i][1].get(p, -1) < record.offset:
                i += 1
            if i == len(samples):
                raise RuntimeError(f"partition {p} offset {record.offset} never reached the store")
            lags.append(max(0.0, samples[i][0] - record.timestamp / 1000))
    reader.close()
    lags.sort()
    return {
        "store_lag_p50_s": round(statistics.median(lags), 4),
        "store_lag_p99_s": round(lags[int(len(lags) * 0.99)], 4),
        "store_lag_max_s": round(lags[-1], 4),
        "lag_events": len(lags),
        "lag_write_rps": round(load["rps"]),
        "lag_write_errors": int(load["errors"]),
    }


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the servers started are stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does)")
    workdir = Path(tempfile.mkdtemp(prefix="agentmem-bench-"))
    (workdir / "kafka").mkdir()
    broker = Broker(workdir / "kafka", free_port(), free_port())
    say("starting Kafka and PostgreSQL ...")
    broker.start()
    pg = PostgresServer().init()
    os.environ["AGENTMEM_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
    filler = None
    try:
        topic = "agentmem.bench.bootstrap"
        ensure_topic(broker.settings(), TopicSpec(topic, 1, 1, {}))
        say(f"writing {args.events} events over {args.keys} keys to the log ...")
        fill_log(broker.bootstrap, topic, args.events, args.keys)
        schema = "bench_bootstrap"
        redis_fill = fresh_redis(workdir, "redis-fill")
        say("a node with a store replays the log and writes its facts behind ...")
        started = time.perf_counter()
        filler = NodeProcess(
            broker, topic, redis_fill.url, workdir / "node-fill.log",
            partitions="1", store=pg.url, store_schema=schema, cluster_uid="bench",
        ).start(wait_ready=False)  # fmt: skip
        high = highs(broker.bootstrap, topic, 1)[0]
        while stored_offsets(pg, schema).get(0, -1) < high - 1:
            time.sleep(0.5)
        fill_s = time.perf_counter() - started
        say(f"  the store reflects all {high} events after {fill_s:.1f} s")
        filler.kill()
        filler = None
        redis_fill.stop()
        rows = int(str(pg.sql(f'SELECT count(*) FROM "{schema}".records')[0][0]))
        base = {"partitions": 1, "log": "kafka", "topic": topic, "cluster_uid": "bench"}
        store_times, log_times = [], []
        for round_ in range(args.rounds):
            for kind in ("store", "log"):
                server = fresh_redis(workdir, f"redis-{kind}-{round_}")
                try:
                    settings = NodeSettings(
                        state=server.url,
                        store=pg.url if kind == "store" else "",
                        store_schema=schema,
                        **base,  # type: ignore[arg-type]
                    )
                    seconds = asyncio.run(warm(settings))
                finally:
                    server.stop()
                (store_times if kind == "store" else log_times).append(seconds)
                say(f"  warm-up from the {kind:5}: {seconds:7.2f} s")
        say("store lag under the node benchmark's write load ...")
        lag = store_lag(broker, pg, workdir, args.seconds, args.connections)
        say(f"  p50 {lag['store_lag_p50_s']} s, p99 {lag['store_lag_p99_s']} s")
        store_s, log_s = statistics.median(store_times), statistics.median(log_times)
        summary = {
            "events": high,
            "keys": args.keys,
            "store_rows": rows,
            "store_warm_s": round(store_s, 3),
            "log_replay_warm_s": round(log_s, 3),
            "store_speedup": round(log_s / store_s, 1),
            "store_warm_runs_s": [round(t, 3) for t in store_times],
            "log_replay_warm_runs_s": [round(t, 3) for t in log_times],
            "store_fill_events_per_s": round(high / fill_s),
            **lag,
        }
        print(json.dumps(summary))
        return 0
    finally:
        if filler is not None:
            filler.kill()
        pg.destroy()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
