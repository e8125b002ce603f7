#!/usr/bin/env python3
"""Smoke check for the test Kafka broker (testenv/kafka/broker.sh).

    python3 testenv/kafka/smoke.py [--workdir DIR] [--port N] [--roundtrips N] [--keep]

Needs confluent-kafka (pip install confluent-kafka). Starts a broker in a
fresh workdir (temp dir by default), then:
  1. AdminClient: create a topic with 8 partitions, cleanup.policy=compact;
  2. idempotent producer (enable.idempotence=true, acks=all): N keyed records;
  3. consumer with explicit partition assignment (no group.id, no commits):
     reads everything back and checks it;
  4. produce->consume round trip latency, one record at a time: p50/p99;
  5. stop + start on the same workdir: data still there, producing still works.
Stops the broker at the end (unless --keep). Exit code 0 = all checks passed.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from confluent_kafka import Consumer, KafkaException, OFFSET_BEGINNING, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

HERE = os.path.dirname(os.path.abspath(__file__))
BROKER_SH = os.path.join(HERE, "broker.sh")
PARTITIONS = 8


def broker(*args: str) -> str:
    t0 = time.monotonic()
    out = subprocess.run([BROKER_SH, *args], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    print(f"  broker.sh {args[0]}: {time.monotonic() - t0:.2f}s {out}", flush=True)
    return out


def producer(bootstrap: str) -> Producer:
    return Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 0,
    })


def consumer(bootstrap: str) -> Consumer:
    # assign() only, no subscribe(), no offset commits. The Python wrapper
    # refuses a Consumer without group.id, so give it a throwaway one; it is
    # never joined (librdkafka may still look up its coordinator).
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"smoke-unused-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 50,
    })


def produce_all(p: Producer, topic: str, records: dict) -> None:
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    for k, v in records.items():
        while True:
            try:
                p.produce(topic, key=k, value=v, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(30)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not errors, f"delivery errors: {errors[:3]}"


def read_all(bootstrap: str, topic: str) -> dict:
    """Latest value per key, reading every partition from the beginning to its high watermark."""
    c = consumer(bootstrap)
    try:
        ends = {}
        for part in range(PARTITIONS):
            _, hi = c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
            ends[part] = hi
        c.assign([TopicPartition(topic, part, OFFSET_BEGINNING) for part in range(PARTITIONS)])
        latest, done = {}, {p for p, hi in ends.items() if hi == 0}
        deadline = time.monotonic() + 30
        while len(done) < PARTITIONS:
            assert time.monotonic() < deadline, f"timed out reading back; done={sorted(done)}"
            for msg in c.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                latest[msg.key()] = msg.value()
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
        return latest
    finally:
        c.close()


def roundtrips(bootstrap: str, topic: str, n: int) -> list:
    p = producer(bootstrap)
    c = consumer(bootstrap)
    # Start at the current high watermarks, resolved here and not by
    # OFFSET_END (resolved asynchronously after assign(), which can land
    # after the warm-up record and skip it).
    c.assign([TopicPartition(topic, part, c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)[1])
              for part in range(PARTITIONS)])
    # Warm up connections/metadata before timing.
    warm = b"warmup-" + uuid.uuid4().hex.encode()
    p.produce(topic, key=warm, value=b"w")
    p.flush(10)
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "warm-up record never arrived"
        m = c.poll(0.5)
        if m is not None and not m.error() and m.key() == warm:
            break
    lat = []
    for i in range(n):
        key = f"rt-{i}".encode()
        t0 = time.perf_counter()
        p.produce(topic, key=key, value=str(i).encode())
        p.poll(0)
        while True:
            m = c.poll(5)
            p.poll(0)
            assert m is not None, f"round trip {i} timed out"
            if m.error():
                raise KafkaException(m.error())
            if m.key() == key:
                lat.append((time.perf_counter() - t0) * 1000)
                break
    p.flush(10)
    c.close()
    return lat


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir")
    ap.add_argument("--port", default="0", help="broker port (0 = free port)")
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--roundtrips", type=int, default=500)
    ap.add_argument("--keep", action="store_true", help="leave the broker running and the workdir in place")
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)

    workdir = a.workdir or tempfile.mkdtemp(prefix="agentmem-kafka-smoke-")
    topic = "smoke-compact"
    ok = False
    print(f"workdir {workdir}", flush=True)
    try:
        print("start (fresh workdir: format + start):")
        broker("start", workdir, a.port)
        bootstrap = open(os.path.join(workdir, "bootstrap")).read().strip()
        port = bootstrap.rsplit(":", 1)[1]

        admin = AdminClient({"bootstrap.servers": bootstrap})
        t0 = time.monotonic()
        fs = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1,
                                           config={"cleanup.policy": "compact"})], operation_timeout=30)
        fs[topic].result(30)
        md = admin.list_topics(topic, timeout=10).topics[topic]
        assert len(md.partitions) == PARTITIONS, md.partitions
        res = ConfigResource(ResourceType.TOPIC, topic)
        cfg = admin.describe_configs([res])[res].result(10)
        assert cfg["cleanup.policy"].value == "compact", cfg["cleanup.policy"].value
        print(f"create topic {topic} ({PARTITIONS} partitions, cleanup.policy=compact): "
              f"{time.monotonic() - t0:.2f}s")

        records = {f"key-{i:06d}".encode(): f"value-{i}".encode() for i in range(a.records)}
        p = producer(bootstrap)
        t0 = time.monotonic()
        # First send includes InitProducerId, which on a fresh broker waits for
        # __transaction_state to be created and loaded.
        produce_all(p, topic, {b"first": b"1"})
        print(f"idempotent producer first delivery (PID init): {time.monotonic() - t0:.2f}s")
        records[b"first"] = b"1"
        t0 = time.monotonic()
        produce_all(p, topic, records)
        dt = time.monotonic() - t0
        print(f"produce {a.records} (idempotent, acks=all): {dt:.2f}s ({a.records / dt:.0f} msg/s)")
        del p

        t0 = time.monotonic()
        got = read_all(bootstrap, topic)
        assert got == records, f"read back {len(got)} keys, expected {len(records)}"
        print(f"consume all back (assign, no group): {time.monotonic() - t0:.2f}s, {len(got)} keys OK")

        lat = roundtrips(bootstrap, topic, a.roundtrips)
        print(f"round trip produce->consume x{len(lat)}: p50 {pct(lat, 50):.2f} ms, "
              f"p99 {pct(lat, 99):.2f} ms, max {max(lat):.2f} ms, mean {statistics.mean(lat):.2f} ms")

        expected = dict(records)
        expected.update({f"rt-{i}".encode(): str(i).encode() for i in range(a.roundtrips)})
        del admin  # no client connected across the restart
        print("restart (same workdir):")
        broker("stop", workdir)
        broker("start", workdir, port)
        t0 = time.monotonic()
        got = read_all(bootstrap, topic)
        extra = {k for k in got if k.startswith(b"warmup-")}
        for k in extra:
            got.pop(k)
        assert got == expected, f"after restart: {len(got)} keys, expected {len(expected)}"
        print(f"after restart: {len(got)} keys intact ({time.monotonic() - t0:.2f}s)")
        p2 = producer(bootstrap)
        produce_all(p2, topic, {b"after-restart": b"1"})
        assert read_all(bootstrap, topic)[b"after-restart"] == b"1"
        del p2
        print("produce after restart: OK")
        ok = True
    finally:
        if not a.keep:
            try:
                broker("stop", workdir)
            finally:
                if not a.workdir:
                    shutil.rmtree(workdir, ignore_errors=True)
    print("SMOKE OK" if ok else "SMOKE FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
